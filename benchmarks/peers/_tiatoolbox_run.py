"""Runs inside TIAToolbox's own venv: embed the given slides with the shared random ViT-S.

Usage (by python -m benchmarks.peers.run):
    python _tiatoolbox_run.py OUT_JSON TILE MPP KEEP WEIGHTS SLIDE...
Writes {"tiles": N, "seconds": S} (model build included, like slidebank's run; interpreter
start excluded). Torch keeps its default thread count (all cores); the patch loader runs
in the main process (TIAToolbox's default ``num_workers=0``); batches of 32 like the
other peers (TIAToolbox's default is 8).

How it matches slidebank's job, and where it cannot:
- tissue: the engine's own mask (``WSIReader.tissue_mask`` at 1.25x, Otsu plus
  morphology), not slidebank's detector.
- tiles: a slide-wide grid of TILE px at MPP µm/px (stride = TILE), like slidebank. The
  keep rule cannot be set through ``DeepFeatureExtractor.run``: its WSI dataset keeps
  every patch whose mask area is above ``min_mask_ratio = 0`` (any tissue at all), so
  tiles with less than KEEP tissue are kept too. KEEP is recorded, not applied.
- encoder: TIAToolbox's ``TimmBackbone`` drops the ViT's pooling and returns the whole
  flattened token sequence, so :class:`ViTCls` wraps the same timm ``vit_small_patch16_224``
  (weights from WEIGHTS, the safetensors file every side loads) and returns timm's default
  pooling, the class token. It resizes the TILE px patch to 224 px (bicubic, antialiased)
  and normalizes with mean = std = 0.5, as slidebank does.
- output: the engine's zarr output per slide (``features`` and ``coordinates``), in a temp dir.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARCH = "vit_small_patch16_224"


def vit_cls(weights: str) -> Any:  # a ModelABC; torch and tiatoolbox exist only in the venv
    import numpy as np
    import timm
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from tiatoolbox.models.models_abc import ModelABC

    class ViTCls(ModelABC):
        """timm ViT-S returning the class-token embedding of uint8 NHWC patches."""

        def __init__(self) -> None:
            super().__init__()
            self.vit = timm.create_model(ARCH, pretrained=False, num_classes=0)
            self.vit.load_state_dict(load_file(weights), strict=True)
            self.vit.eval()

        def forward(self, imgs: torch.Tensor) -> torch.Tensor:  # NCHW float in 0..255
            x = F.interpolate(
                imgs / 255.0, size=(224, 224), mode="bicubic", antialias=True, align_corners=False
            )
            return self.vit((x - 0.5) / 0.5)

        @staticmethod
        def infer_batch(
            model: torch.nn.Module, batch_data: torch.Tensor, *, device: str
        ) -> list[np.ndarray]:
            x = batch_data.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
            model.eval()
            with torch.inference_mode():
                return [model(x).cpu().numpy()]

    return ViTCls()


def main() -> None:
    out, tile, mpp = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    weights, slides = sys.argv[5], sys.argv[6:]  # argv[4] (KEEP) cannot be applied, see above
    start = time.perf_counter()
    import zarr
    from tiatoolbox.models.engine.deep_feature_extractor import DeepFeatureExtractor
    from tiatoolbox.models.engine.io_config import IOPatchPredictorConfig

    extractor = DeepFeatureExtractor(
        model=vit_cls(weights), batch_size=32, device="cpu", verbose=False
    )
    ioconfig = IOPatchPredictorConfig(
        input_resolutions=[{"units": "mpp", "resolution": mpp}],
        patch_input_shape=(tile, tile),
        stride_shape=(tile, tile),
    )
    with tempfile.TemporaryDirectory() as tmp:
        outputs = extractor.run(
            slides,
            patch_mode=False,
            ioconfig=ioconfig,
            save_dir=Path(tmp) / "out",
            output_type="zarr",
            auto_get_mask=True,
        )
        tiles = 0
        for path in outputs.values():
            features = zarr.open(str(path), mode="r")["features"]
            if features.shape[1:] != (384,):
                raise RuntimeError(f"{path}: features of shape {features.shape}, expected (N, 384)")
            tiles += features.shape[0]
    Path(out).write_text(json.dumps({"tiles": tiles, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
