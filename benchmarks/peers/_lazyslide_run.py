"""Runs inside LazySlide's own venv: embed the given slides with the shared random ViT-S.

Usage (by python -m benchmarks.peers.run):
    python _lazyslide_run.py OUT_JSON TILE MPP KEEP WEIGHTS SLIDE...
Writes {"tiles": N, "seconds": S} (model build included, like slidebank's run; interpreter
start excluded). Torch keeps its default thread count (all cores); the tile loader runs in
the main process (LazySlide's default ``num_workers=0``).

How it matches slidebank's job, and where it cannot:
- tissue: LazySlide's own ``find_tissues`` (Otsu on a low level, contours), not
  slidebank's detector, so tissue borders differ a little.
- tiles: TILE px at MPP µm/px, kept when ≥ KEEP of the tile is tissue
  (``background_fraction = 1 - KEEP``). LazySlide lays a grid per tissue contour, anchored
  at the contour's bounding box rather than at the slide origin, and measures coverage
  against that one contour; ``edge=True`` adds the trailing tile of each box so tissue at
  the far edge is not dropped. Counts therefore differ slightly from a slide-wide grid.
- encoder: ``vit_small_patch16_224`` built by LazySlide's own ``TimmModel``
  (``pretrained=False``) with the weights of WEIGHTS (safetensors, the same file every
  side loads); output is timm's default pooling (the class token). The transform resizes
  the whole TILE px tile to 224 px (bicubic, antialiased), mean = std = 0.5 like
  slidebank, instead of timm's eval recipe (resize to 248, centre-crop 224), so every side
  sees the same field of view.
- output: features written into each slide's zarr store (``wsi.write()``), as a user keeps
  them.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ARCH = "vit_small_patch16_224"


def main() -> None:
    out, tile, mpp, keep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    weights, slides = sys.argv[5], sys.argv[6:]
    start = time.perf_counter()
    import lazyslide as zs
    from lazyslide_models import TimmModel
    from lazyslide_models.base import get_default_transform
    from safetensors.torch import load_file

    model = TimmModel(ARCH, pretrained=False)  # num_classes=0 is LazySlide's default
    model.model.load_state_dict(load_file(weights), strict=True)
    transform = get_default_transform(
        (224, 224), interpolation="bicubic", crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    tiles = 0
    with tempfile.TemporaryDirectory() as tmp:
        for slide in slides:
            wsi = zs.open_wsi(slide, store=tmp)
            zs.pp.find_tissues(wsi)
            zs.pp.tile_tissues(wsi, tile, mpp=mpp, edge=True, background_fraction=1 - keep)
            features = zs.tl.feature_extraction(
                wsi,
                model,
                transform=transform,
                batch_size=32,
                device="cpu",
                pbar=False,
                return_features=True,
            )
            wsi.write()
            tiles += len(features)
    Path(out).write_text(json.dumps({"tiles": tiles, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
