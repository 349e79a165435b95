"""The README's "Tile-level truth" worked example runs as written: annotate (GeoJSON, a
mask, OME-Zarr labels), restrict, train tiles, map, export, burden, probe; then the
Python block, restricting an ingest of real slide files to the annotated tumour."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slidebank.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = "tiles-tumour-mlp-1a2b3c4d5e"
SECTION = "## Tile-level truth: annotate, restrict, train tiles, map, export"


def _blocks() -> tuple[str, str, str]:
    text = README.read_text()
    assert SECTION in text, "README lost its tile-level worked example"
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    bash = re.search(r"```bash\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    config = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert bash and python and config
    return bash.group(1), python.group(1), config.group(1)


def _commands(block: str) -> list[list[str]]:
    out = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line:
            words = shlex.split(line)
            assert words[0] == "slidebank", line
            out.append(words[1:])
    return out


def _rasterise(geometry, extent_px: int, mpp: float, label_um: float) -> np.ndarray:
    import shapely

    step = label_um / mpp  # level-0 px per label pixel
    n = int(round(extent_px / step))
    centres = (np.arange(n) + 0.5) * step
    gx, gy = np.meshgrid(centres, centres)
    return shapely.contains_xy(geometry, gx, gy).astype(np.uint8)


def _write_inputs(root: Path) -> None:
    """What a pathologist and a scanner would hand over: a store already ingested
    (24 slides, most annotated earlier), S01's QuPath GeoJSON, S02's mask, S03's
    OME-Zarr labels; and, for the Python block, two slide files with their GeoJSONs."""
    import shapely
    import zarr
    from PIL import Image
    from shapely.geometry import mapping

    from features.annotations.omezarr_export import _write_labels
    from synthetic.slides.writer import SyntheticSlideSpec, write_synthetic_slide
    from synthetic.tiles import MPP, TILE, make_burden_cohort

    ids = [f"S{i:02d}" for i in range(1, 25)]
    cohort = make_burden_cohort(str(root / "store"), n_slides=24, side=10, seed=5, slide_ids=ids)
    extent = 10 * TILE

    def feature(geometry, name):
        return {
            "type": "Feature",
            "geometry": mapping(geometry),
            "properties": {"classification": {"name": name, "color": [200, 30, 30]}},
        }

    stroma = shapely.box(0, 0, extent, extent).difference(cohort.truth["S01"])
    (root / "S01-tumour.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [feature(cohort.truth["S01"], "tumour"), feature(stroma, "stroma")],
            }
        )
    )
    Image.fromarray(_rasterise(cohort.truth["S02"], extent, MPP, 8.0)).save(root / "S02-mask.png")
    group = zarr.open_group(str(root / "S03-labels.zarr"), mode="w", zarr_format=3)
    grid = _rasterise(cohort.truth["S03"], extent, MPP, 8.0)
    _write_labels(group, "tumour", grid, 8.0, "tumour", (200, 30, 30), 0.5)

    (root / "slides").mkdir()
    (root / "annotations").mkdir()
    for i, sid in enumerate(("N01", "N02")):
        spec = SyntheticSlideSpec(width=2048, height=2048, style="svs", seed=40 + i, n_blobs=1)
        write_synthetic_slide(root / "slides" / f"{sid}.svs", spec)
        nest = shapely.Point(1024, 1024).buffer(420)
        collection = {"type": "FeatureCollection", "features": [feature(nest, "tumour")]}
        (root / "annotations" / f"{sid}.geojson").write_text(json.dumps(collection))


@pytest.mark.slow
def test_readme_tile_example_runs_as_written(tmp_path, monkeypatch):
    from features.store import FeatureStore

    bash, python, config = _blocks()
    _write_inputs(tmp_path)
    (tmp_path / "tiles.yaml").write_text(config)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    name = None
    for args in _commands(bash):
        if name is not None:
            args = [name if a == PLACEHOLDER else a for a in args]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, f"slidebank {shlex.join(args)}\n{res.output}"
        if args[:2] == ["annotations", "classify"]:
            found = re.search(r"tiles-tumour-mlp-[0-9a-f]{10}", res.output)
            assert found, res.output
            name = found.group(0)
    assert name is not None
    geo = json.loads((tmp_path / "S01-map.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and geo["features"]
    assert (tmp_path / "S01-map.zarr").is_dir() and (tmp_path / "burden.csv").exists()
    (run,) = (tmp_path / "runs" / "tiles").iterdir()  # slidebank train tiles.yaml
    assert json.loads((run / "summary.json").read_text())["kind"] == "tiles"

    namespace = {"store": FeatureStore.open(str(tmp_path / "store"))}
    exec(compile(python, "README.md (tile-level truth)", "exec"), namespace)
    result = namespace["result"]
    assert result.metrics["auroc"]["value"] > 0.5
    tumour_only = FeatureStore.open(str(tmp_path / "store-tumour"))
    everything = tumour_only.tiles(columns=["slide_id", "x", "y"]).to_pandas()
    assert set(everything["slide_id"]) == {"N01", "N02"}
    # restricted: only tiles under the annotated nest (a disc of 840 px: at most 16 tiles)
    assert 0 < everything.groupby("slide_id").size().max() <= 16
