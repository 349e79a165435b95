"""Ingest restricted to an annotated region: annotation files are found by the manifest's
slide ids (not the file names), from Python and from ``slidebank ingest --region``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shapely.geometry import Polygon, mapping
from typer.testing import CliRunner

from features.store import FeatureStore
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from ingest.tiling import RegionConfig, TilingConfig

OPTS = RunOptions(progress=False, engine="inprocess", tiles_per_batch=64)
# Over the left third of the 2304 x 1792 synthetic slide (level-0 px): 4 of its 6 tissue
# tiles (x 256-767 of 256-1023).
REGION = Polygon([(0, 0), (768, 0), (768, 1792), (0, 1792)])


def _annotations(folder: Path, slide_id: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": mapping(REGION),
                "properties": {"objectType": "annotation", "classification": {"name": "tumour"}},
            }
        ],
    }
    (folder / f"{slide_id}.geojson").write_text(json.dumps(doc))
    return folder


def test_region_annotations_are_found_by_the_manifest_slide_id(synthetic_svs, tmp_path) -> None:
    """The slide file is synthetic.svs, the manifest calls it S-07, and so does its
    annotation file: planning must look for S-07.geojson."""
    folder = _annotations(tmp_path / "ann", "S-07")
    source = SlideSource(str(synthetic_svs.path), "S-07")
    whole = run_ingest(
        [source],
        FeatureStore.open(str(tmp_path / "whole"), create=True),
        IngestConfig(stain="none"),
        OPTS,
    )
    config = IngestConfig(
        stain="none",
        tiling=TilingConfig(region=RegionConfig.from_folder("tumour", str(folder), 0.5)),
    )
    part = run_ingest(
        [source], FeatureStore.open(str(tmp_path / "part"), create=True), config, OPTS
    )
    assert [o.status for o in part.outcomes] == ["done"], part.outcomes[0].error_message
    assert 0 < part.tiles < whole.tiles


def test_cli_ingest_region_options(synthetic_svs, tmp_path) -> None:
    from slidebank.cli import app

    folder = _annotations(tmp_path / "ann", "S-07")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri,slide_id\n{synthetic_svs.path},S-07\n")
    store = str(tmp_path / "store")
    args = [
        "ingest",
        str(manifest),
        "--store",
        store,
        "--engine",
        "inprocess",
        "--stain",
        "none",
        "--json",
    ]
    result = CliRunner().invoke(
        app, [*args, "--region", "tumour", "--annotations", str(folder), "--min-coverage", "0.9"]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    stored = FeatureStore.open(store).latest().tiles(columns=["x"])
    assert stored.num_rows > 0 and max(stored.column("x").to_pylist()) < 768
    alone = CliRunner().invoke(app, [*args, "--region", "tumour"])
    assert alone.exit_code == 2 and "--region and --annotations go together" in alone.output


@pytest.mark.parametrize("coverage", ["0", "1.5"])
def test_cli_ingest_refuses_a_bad_min_coverage(synthetic_svs, tmp_path, coverage) -> None:
    from slidebank.cli import app

    folder = _annotations(tmp_path / "ann", "synthetic")
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(synthetic_svs.path),
            "--store",
            str(tmp_path / "s"),
            "--region",
            "tumour",
            "--annotations",
            str(folder),
            "--min-coverage",
            coverage,
        ],
    )
    assert result.exit_code == 2 and "min_coverage must be in (0, 1]" in result.output
