"""Tiles restricted to an annotated region at planning time (ingest ``--region``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box, mapping

from features.annotations import AnnotationFileNotFoundError
from infra.errors import ConfigError
from ingest.pipeline.config import IngestConfig
from ingest.slides import open_slide
from ingest.tiling import RegionConfig, TilingConfig, plan_slide

# A region with a hole over the 2304 x 1792 synthetic slide (level-0 px).
REGION = Polygon(
    [(100, 80), (1500, 80), (1700, 1300), (100, 1500)],
    holes=[[(600, 500), (900, 500), (900, 800), (600, 800)]],
)


def _write(folder: Path, name: str, *features: tuple[object, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": mapping(g),
                "properties": {"objectType": "annotation", "classification": {"name": c}},
            }
            for g, c in features
        ],
    }
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def _plan(path: Path, tiling: TilingConfig, slide_id: str | None = None):
    with open_slide(str(path)) as slide:
        return plan_slide(slide, tiling_config=tiling, device="cpu", slide_id=slide_id)[1]


def _xy(plan) -> set[tuple[int, int]]:
    t = plan.table
    return set(zip(t.column("x").to_pylist(), t.column("y").to_pylist(), strict=True))


def test_region_plan_keeps_exactly_the_covered_tissue_tiles(synthetic_svs, tmp_path):
    folder = tmp_path / "ann"
    _write(folder, "synthetic.geojson", (REGION, "tumour"), (box(1800, 0, 2300, 400), "stroma"))
    full = _plan(synthetic_svs.path, TilingConfig())
    region = RegionConfig.from_folder("tumour", str(folder), 0.5)
    restricted = _plan(synthetic_svs.path, TilingConfig(region=region))
    # exact shapely coverage of each tissue tile's 256-px box by the tumour polygon
    want = {
        (x, y)
        for x, y in _xy(full)
        if shapely.box(x, y, x + 256, y + 256).intersection(REGION).area / 256**2 >= 0.5
    }
    assert _xy(restricted) == want and 0 < len(want) < full.tile_count
    assert restricted.status == "ok"
    stroma = _plan(
        synthetic_svs.path,
        TilingConfig(region=RegionConfig.from_folder("stroma", str(folder), 0.01)),
    )
    assert all(x + 256 > 1800 and y < 400 for x, y in _xy(stroma))


def test_explicit_slide_id_names_the_file_and_missing_ones_fail_clearly(synthetic_svs, tmp_path):
    folder = tmp_path / "ann"
    _write(folder, "S-07.geojson", (REGION, "tumour"))
    region = RegionConfig.from_folder("tumour", str(folder))
    assert _plan(synthetic_svs.path, TilingConfig(region=region), "S-07").tile_count > 0
    with pytest.raises(
        AnnotationFileNotFoundError,
        match=r"slide 'synthetic': no annotation file synthetic\{\.geojson",
    ):
        _plan(synthetic_svs.path, TilingConfig(region=region))  # derived id: synthetic


def test_a_file_without_the_class_plans_no_tiles(synthetic_svs, tmp_path):
    folder = tmp_path / "ann"
    _write(folder, "synthetic.geojson", (REGION, "stroma"))
    plan = _plan(
        synthetic_svs.path, TilingConfig(region=RegionConfig.from_folder("tumour", str(folder)))
    )
    assert plan.tile_count == 0 and plan.status == "no_tiles_in_region"


def test_region_is_part_of_the_config_hash(tmp_path):
    folder = tmp_path / "ann"
    _write(folder, "a.geojson", (REGION, "tumour"))
    plain = TilingConfig()
    assert "region" not in plain.to_dict()  # hashes made before regions existed still hold
    region = RegionConfig.from_folder("tumour", str(folder), 0.5)
    hashes = {
        IngestConfig().config_hash(),
        IngestConfig(tiling=TilingConfig(region=region)).config_hash(),
        IngestConfig(
            tiling=TilingConfig(region=RegionConfig.from_folder("tumour", str(folder), 0.9))
        ).config_hash(),
        IngestConfig(
            tiling=TilingConfig(region=RegionConfig.from_folder("stroma", str(folder), 0.5))
        ).config_hash(),
    }
    assert len(hashes) == 4
    # the annotations' contents count, not where the folder lies
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    same = TilingConfig(region=RegionConfig.from_folder("tumour", str(moved), 0.5))
    assert same.config_hash() == TilingConfig(region=region).config_hash()
    _write(moved, "a.geojson", (box(0, 0, 10, 10), "tumour"))
    edited = TilingConfig(region=RegionConfig.from_folder("tumour", str(moved), 0.5))
    assert edited.config_hash() != same.config_hash()


def test_region_config_refuses_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="min_coverage"):
        RegionConfig("tumour", str(tmp_path), 0)
    with pytest.raises(ConfigError, match="class name"):
        RegionConfig("", str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        RegionConfig.from_folder("tumour", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        RegionConfig.from_folder("tumour", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="RegionConfig"):
        TilingConfig(region="tumour")  # type: ignore[arg-type]


@pytest.mark.slow
def test_ingest_with_a_region_stores_only_region_tiles(synthetic_svs, tmp_path, ray_local):
    from features.store import FeatureStore
    from ingest.pipeline.config import RunOptions
    from slidebank.ingest_api import ingest

    folder = tmp_path / "ann"
    _write(folder, "synthetic.geojson", (REGION, "tumour"))
    tiling = TilingConfig(region=RegionConfig.from_folder("tumour", str(folder), 0.5))
    want = _xy(_plan(synthetic_svs.path, tiling))
    result = ingest(
        str(synthetic_svs.path),
        str(tmp_path / "store"),
        config=IngestConfig(tiling=tiling, stain="none"),
        options=RunOptions(device="cpu", progress=False),
        dashboard=False,
    )
    assert not result.failed
    tiles = FeatureStore.open(str(tmp_path / "store")).tiles(columns=["x", "y"])
    got = set(zip(tiles.column("x").to_pylist(), tiles.column("y").to_pylist(), strict=True))
    assert got == want and len(got) > 0
    assert np.all(np.asarray([x for x, _ in got]) < 1800)
