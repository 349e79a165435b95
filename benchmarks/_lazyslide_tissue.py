"""LazySlide's tissue mask of one slide, run inside LazySlide's own venv by benchmarks/tissue.py.

``zs.open_wsi`` then ``zs.pp.find_tissues`` with LazySlide's defaults (level ``auto``,
Otsu, artifact filter), as its documentation shows. Writes JSON: the tissue polygons in
level-0 pixels (exterior and holes), the level LazySlide chose, its µm/px and seconds.

Usage (peer venv): python _lazyslide_tissue.py SLIDE OUT.json
"""

from __future__ import annotations

import json
import sys
import time


def main(slide: str, out: str) -> None:
    import lazyslide as zs

    start = time.perf_counter()
    wsi = zs.open_wsi(slide)
    zs.pp.find_tissues(wsi)
    seconds = time.perf_counter() - start
    tissues = wsi.shapes["tissues"]
    polygons = []
    for geometry in tissues.geometry:
        parts = getattr(geometry, "geoms", [geometry])
        for poly in parts:
            polygons.append(
                {
                    "exterior": [list(p) for p in poly.exterior.coords],
                    "holes": [[list(p) for p in ring.coords] for ring in poly.interiors],
                }
            )
    props = wsi.properties
    with open(out, "w") as handle:
        json.dump(
            {
                "polygons": polygons,
                "seconds": seconds,
                "lazyslide": zs.__version__,
                "mpp": props.mpp,
                "level_shapes": [list(s) for s in props.level_shape],
                "n_tissues": len(tissues),
            },
            handle,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
