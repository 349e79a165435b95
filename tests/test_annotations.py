"""Annotations in: coverage equals shapely's exact intersection; GeoJSON, ASAP XML and
masks round-trip through the importer into the store; a region filter keeps tiles."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon, box

from features.annotations import (
    Annotation,
    ImportOptions,
    RegionFilter,
    coverage_table,
    import_annotations,
    load_annotations,
)
from features.annotations.asap import read_asap, to_asap_xml
from features.annotations.coverage import class_coverage, tile_boxes
from features.annotations.geojson import read_geojson, to_geojson
from features.annotations.masks import mask_geometries
from tests._support.annotations import SIDE, STEP, annotated_store

HOLED = Polygon(
    [(100, 100), (900, 100), (900, 700), (100, 700)],
    [[(300, 300), (500, 300), (500, 500), (300, 500)]],
)
# Two parts, one with a hole, one running along the slide's right and bottom edges.
MULTI = MultiPolygon(
    [
        Polygon(
            [(1000.5, 200.25), (1700, 260), (1650, 900), (1100, 800)],
            [[(1200, 400), (1400, 420), (1300, 600)]],
        ),
        Polygon([(1800, 1700), (SIDE, 1650), (SIDE, SIDE), (1750, SIDE)]),
    ]
)


def _feature(geometry, klass, color=None, name=None):
    props = {"classification": {"name": klass, **({"color": color} if color else {})}}
    if name:
        props["name"] = name
    return {"type": "Feature", "geometry": shapely.geometry.mapping(geometry), "properties": props}


@pytest.fixture
def store(tmp_path):
    return annotated_store(str(tmp_path / "store"))


def _grid_boxes():
    n = SIDE // STEP
    gx, gy = np.meshgrid(np.arange(n) * STEP, np.arange(n) * STEP)
    return gx.ravel(), gy.ravel()


@pytest.mark.parametrize("geometry", [HOLED, MULTI], ids=["holes", "multipolygon-edge"])
def test_coverage_equals_exact_intersection(geometry):
    x, y = _grid_boxes()
    got = class_coverage(tile_boxes(x, y, STEP), geometry)
    want = [
        box(a, b, a + STEP, b + STEP).intersection(geometry).area / STEP**2
        for a, b in zip(x, y, strict=True)
    ]
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert 0 < got.max() <= 1 and (got == 1).any() and ((got > 0) & (got < 1)).any()


def test_overlapping_features_of_one_class_count_once(tmp_path, store):
    a, b = box(0, 0, 256, 128), box(128, 0, 384, 128)  # overlap in tile (128, 0)
    path = tmp_path / "overlap.geojson"
    path.write_text(json.dumps([_feature(a, "tumour"), _feature(b, "tumour")]))
    import_annotations(store, "s1", path)
    rows = coverage_table(store, where="y = 0 AND x < 512").to_pandas().set_index("x")
    assert rows.loc[[0, 128, 256, 384], "coverage"].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_geojson_import_stores_rows_and_exact_coverage(tmp_path, store):
    path = tmp_path / "a.geojson"
    doc = {
        "type": "FeatureCollection",
        "features": [
            _feature(HOLED, "tumour", [200, 0, 0], "T1"),
            _feature(MULTI, "stroma", [0, 150, 0]),
        ],
    }
    path.write_text(json.dumps(doc))
    report = import_annotations(store, "s1", path, ImportOptions(classes=("tumour", "stroma")))
    assert report.classes == ["stroma", "tumour"] and report.n_tiles == (SIDE // STEP) ** 2
    rows = coverage_table(store).to_pandas()
    tumour = rows[rows["class"] == "tumour"]
    assert len(rows) == 2 * report.n_tiles and set(tumour["extent"]) == {float(STEP)}
    total = float((tumour["coverage"] * STEP**2).sum())
    assert total == pytest.approx(HOLED.area, abs=1e-6)  # the tiles tile the slide
    back = load_annotations(store, "s1")
    assert [a.class_name for a in back.annotations] == ["tumour", "stroma"]
    assert back.annotations[0].name == "T1" and back.annotations[0].color == (200, 0, 0)
    assert back.annotations[1].geometry.equals(MULTI)
    # SQL over the coverage rows, joined with the store's own views
    got = store.sql(
        "SELECT count(*) AS n FROM coverage WHERE class = 'tumour' AND coverage >= 0.5",
        tables={"coverage": rows},
    )
    assert int(got.column("n")[0].as_py()) == int((tumour["coverage"] >= 0.5).sum())


def test_reimport_replaces_the_slides_rows(tmp_path, store):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps([_feature(HOLED, "tumour")]))
    import_annotations(store, "s1", path)
    path.write_text(json.dumps([_feature(box(0, 0, 128, 128), "stroma")]))
    import_annotations(store, "s1", path)
    rows = coverage_table(store).to_pandas()
    assert set(rows["class"]) == {"stroma"} and len(rows) == (SIDE // STEP) ** 2
    assert len(load_annotations(store, "s1").annotations) == 1


def test_geojson_writer_round_trips_through_the_reader():
    anns = [
        Annotation(0, "tumour", HOLED, name="T1", color=(200, 0, 0)),
        Annotation(1, "stroma", MULTI, color=(0, 150, 0)),
    ]
    doc = to_geojson(anns, measurements=[{"probability": 0.9}, {"probability": 0.2}])
    back = read_geojson("x.geojson", json.dumps(doc).encode())
    assert [(a.class_name, a.color, a.name) for a in back.annotations] == [
        ("tumour", (200, 0, 0), "T1"),
        ("stroma", (0, 150, 0), None),
    ]
    assert all(a.geometry.equals(b.geometry) for a, b in zip(anns, back.annotations, strict=True))
    assert doc["features"][0]["properties"]["measurements"] == {"probability": 0.9}


def test_qupath_02_packed_colour_and_bare_list():
    feature = {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(box(0, 0, 10, 10)),
        "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016}},
    }
    (ann,) = read_geojson("q.json", json.dumps([feature]).encode()).annotations
    assert ann.class_name == "Tumor" and ann.color == (200, 0, 0)


def test_asap_xml_round_trips_holes_as_exclusions():
    anns = [Annotation(0, "Tumor", HOLED, color=(255, 0, 0)), Annotation(1, "Tumor", MULTI)]
    back = read_asap("a.xml", to_asap_xml(anns).encode())
    got = shapely.union_all([a.geometry for a in back.annotations])
    assert got.symmetric_difference(shapely.union_all([HOLED, MULTI])).area < 1e-6
    assert {a.class_name for a in back.annotations} == {"Tumor"}


def test_camelyon_groups(tmp_path, store):
    xml = (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        '<Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">'
        '<Coordinates><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="512" Y="0"/>'
        '<Coordinate Order="2" X="512" Y="512"/><Coordinate Order="3" X="0" Y="512"/>'
        "</Coordinates></Annotation>"
        '<Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E">'
        '<Coordinates><Coordinate Order="0" X="128" Y="128"/><Coordinate Order="1" X="256" '
        'Y="128"/><Coordinate Order="2" X="256" Y="256"/><Coordinate Order="3" X="128" '
        'Y="256"/></Coordinates></Annotation></Annotations>'
        '<AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#FF0000"/>'
        "</AnnotationGroups></ASAP_Annotations>"
    )
    path = tmp_path / "camelyon.xml"
    path.write_text(xml)
    report = import_annotations(store, "s1", path)
    assert report.classes == ["Tumor"] and report.tiles_half == {"Tumor": 15}
    (ann,) = load_annotations(store, "s1").annotations
    assert ann.geometry.area == 512 * 512 - 128 * 128


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _label_mask(side: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    mask = np.zeros((side, side), np.uint8)
    mask[(xx - 40) ** 2 + (yy - 50) ** 2 < 30**2] = 1
    mask[(xx - 40) ** 2 + (yy - 50) ** 2 < 10**2] = 0  # a hole
    mask[90:120, 70:125] = 2
    return mask


def test_mask_polygons_follow_pixel_edges_exactly():
    mask = _label_mask(128)
    geoms = mask_geometries(mask)
    for value, geometry in geoms.items():
        assert geometry.is_valid and geometry.area == (mask == value).sum()
        yy, xx = np.mgrid[:128, :128] + 0.5
        inside = shapely.contains_xy(geometry, xx, yy)
        assert np.array_equal(inside, mask == value)


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_mask_import_coverage_is_pixel_fraction(tmp_path, store, suffix):
    mask = _label_mask(128)  # 128 px at 4 µm/px = 512 µm = 2048 px at 0.25
    path = tmp_path / f"mask.{suffix}"
    if suffix == "png":
        path.write_bytes(_png(mask))
    else:
        import tifffile

        tifffile.imwrite(path, mask)
    options = ImportOptions(mask_mpp=4.0, labels={1: "tumour", 2: "stroma"})
    import_annotations(store, "s1", path, options)
    rows = coverage_table(store, classes=["tumour"]).to_pandas()
    # 128-px tiles are 8×8 mask pixels: coverage is the pixel fraction in the block.
    blocks = (mask == 1).reshape(16, 8, 16, 8).mean(axis=(1, 3))
    want = blocks[rows["y"] // STEP, rows["x"] // STEP]
    np.testing.assert_allclose(rows["coverage"], want, atol=1e-9)


def test_region_filter_keeps_covered_tiles(tmp_path, store):
    path = tmp_path / "a.geojson"
    path.write_text(
        json.dumps(
            [_feature(box(0, 0, 512, 256), "tumour"), _feature(box(512, 0, 576, 128), "tumour")]
        )
    )
    import_annotations(store, "s1", path)
    region = RegionFilter("tumour", 0.5)
    kept = region.tiles(store, columns=["slide_id", "x", "y", "embedding"])
    assert sorted(
        zip(kept.column("x").to_pylist(), kept.column("y").to_pylist(), strict=True)
    ) == sorted([(x, y) for x in (0, 128, 256, 384) for y in (0, 128)] + [(512, 0)])
    strict = RegionFilter("tumour", 1.0).keep(store, "s1", [[512, 0], [0, 0], [640, 0]])
    assert strict.tolist() == [False, True, False]
    assert RegionFilter("stroma").tiles(store).num_rows == 0
    assert RegionFilter("tumour", 0.5).config() != RegionFilter("tumour", 0.6).config()
