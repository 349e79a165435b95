"""Runs inside slide2vec's own venv: embed the given slides with a random-init ViT-S.

Usage (by python -m benchmarks.peers.run):
    python _slide2vec_run.py OUT_JSON TILE MPP KEEP WEIGHTS SLIDE...
Prints nothing on success; writes {"tiles": N, "seconds": S} (model build included, like
slidebank's run; interpreter start excluded). WEIGHTS is the safetensors file of random
ViT-S weights every side of the comparison loads. KEEP must equal hs2p's default tissue
keep rule (tissue coverage ≥ 1%), which this script uses as is.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    out, tile, mpp, keep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    weights, slides = sys.argv[5], sys.argv[6:]
    # slidebank reads TILE px at MPP and resizes to the ViT's 224 px; slide2vec encodes
    # what it reads, so it reads the same field of view (TILE x MPP µm) as 224 px.
    mpp, tile = mpp * tile / 224, 224
    start = time.perf_counter()
    from hs2p import DEFAULT_MASK_SAMPLING, PreviewConfig, TilingConfig
    from safetensors.torch import load_file
    from slide2vec import (
        ExecutionOptions,
        Model,
        PreprocessingConfig,
        TimmTileEncoder,
        register_encoder,
    )

    if keep != DEFAULT_MASK_SAMPLING.min_coverage["tissue"]:
        raise ValueError(
            f"keep rule {keep} differs from hs2p's default tissue coverage "
            f"{DEFAULT_MASK_SAMPLING.min_coverage['tissue']} this script uses"
        )

    @register_encoder(
        "bench-vit-s-random",
        encode_dim=384,
        input_size=224,
        patch_size=16,
        supports_variable_input_size=False,
        supported_spacing_um=mpp,
        precision="fp32",
        source="random init (benchmark)",
    )
    class BenchViTS(TimmTileEncoder):
        def __init__(self, *, output_variant: str | None = None) -> None:
            super().__init__(
                "vit_small_patch16_224", output_variant=output_variant, pretrained=False
            )
            self._model.load_state_dict(load_file(weights), strict=True)

    model = Model(name="bench-vit-s-random", device="cpu", allow_non_recommended_settings=True)
    prep = PreprocessingConfig(
        tiling=TilingConfig(
            requested_spacing_um=mpp, requested_tile_size_px=tile, tolerance=0.05, overlap=0.0
        ),
        preview=PreviewConfig(save_mask_preview=False, save_tiling_preview=False),
    )
    with tempfile.TemporaryDirectory() as tmp:
        execution = ExecutionOptions(output_dir=Path(tmp), batch_size=32, precision="fp32")
        result = model.embed_slides(slides, preprocessing=prep, execution=execution)
    tiles = sum(int(len(s.x)) for by_class in result.values() for s in by_class.values())
    Path(out).write_text(json.dumps({"tiles": tiles, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
