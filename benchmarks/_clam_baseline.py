"""The peer slidebank replaces: a sequential CLAM-style feature-extraction script.

One process, one slide at a time, as CLAM's create_patches + extract_features do it:
open the slide with OpenSlide, segment tissue on a thumbnail (saturation, median
filter, Otsu: the classic recipe, here ``ingest.tissue.saturation_otsu_mask``), keep
grid tiles at the target resolution that are at least half tissue, read each tile with
``read_region`` (brought to the target resolution with the same area downsampling as
slidebank's default), encode in batches, save one h5 file (features, coords) per slide.
Its tissue detection, reads and writes are all inside the timing, like slidebank's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["run_clam_style"]

_THUMB_MPP = 8.0  # µm/px of the segmentation thumbnail (CLAM segments at a level of about this)


def _grid(slide, mpp: float, target_mpp: float, tile: int):
    from ingest.tissue import saturation_otsu_mask

    width, height = slide.dimensions
    scale = _THUMB_MPP / mpp
    thumb = np.asarray(
        slide.get_thumbnail((max(1, int(width / scale)), max(1, int(height / scale)))).convert(
            "RGB"
        )
    )
    mask = np.asarray(saturation_otsu_mask(thumb, _THUMB_MPP))
    step = tile * target_mpp / mpp  # tile footprint in level-0 pixels
    fy, fx = mask.shape[0] / height, mask.shape[1] / width
    coords = []
    for y in np.arange(0, height - step + 1, step):
        for x in np.arange(0, width - step + 1, step):
            cell = mask[
                int(y * fy) : max(int((y + step) * fy), int(y * fy) + 1),
                int(x * fx) : max(int((x + step) * fx), int(x * fx) + 1),
            ]
            if cell.size and cell.mean() >= 0.5:
                coords.append((int(round(x)), int(round(y))))
    return coords, step


def run_clam_style(
    paths: Sequence[str | Path],
    encoder: str,
    weights: str | None,
    out: Path,
    *,
    target_mpp: float = 0.5,
    tile: int = 256,
    batch: int = 32,
) -> tuple[float, int]:
    """Seconds and tiles for the whole cohort; the model is built inside the timing."""
    import h5py
    import openslide

    from features.encoders import Encoder
    from ingest.slides.slide import downsample

    out.mkdir(parents=True, exist_ok=True)
    start, total = time.perf_counter(), 0
    model = Encoder(encoder, weights=weights, device="cpu", num_threads=1)
    for path in paths:
        with openslide.OpenSlide(str(path)) as handle:
            mpp = float(handle.properties[openslide.PROPERTY_NAME_MPP_X])
            coords, step = _grid(handle, mpp, target_mpp, tile)
            level = handle.get_best_level_for_downsample(target_mpp / mpp + 1e-6)
            read = math.ceil(step / handle.level_downsamples[level])
            feats = []
            for b in range(0, len(coords), batch):
                tiles = []
                for x, y in coords[b : b + batch]:
                    img = np.asarray(handle.read_region((x, y), level, (read, read)).convert("RGB"))
                    # the same area downsampling as slidebank's default: same pixels, same work
                    tiles.append(downsample(img, tile, "area") if read != tile else img)
                feats.append(model(np.stack(tiles)))
        with h5py.File(out / f"{Path(path).stem}.h5", "w") as h5:
            h5["features"] = np.concatenate(feats) if feats else np.zeros((0, model.spec.embed_dim))
            h5["coords"] = np.asarray(coords, np.int64).reshape(-1, 2)
        total += len(coords)
    return time.perf_counter() - start, total
