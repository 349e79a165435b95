"""Bad annotation files: each gives a typed error naming the feature, and the CLI one
line with exit code 2 (no traceback); a bowtie is repaired and the repair reported."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from features.annotations import (
    AnnotationBoundsError,
    AnnotationFileNotFoundError,
    AnnotationFormatError,
    EmptyAnnotationError,
    ImportOptions,
    MaskMPPError,
    UnknownClassError,
    import_annotations,
    load_annotations,
)
from slidebank.cli import app
from tests._support.annotations import annotated_store

BOWTIE = [[[0, 0], [512, 512], [512, 0], [0, 512], [0, 0]]]


def _poly(coords, klass="tumour", name=None):
    props = {"classification": {"name": klass}, **({"name": name} if name else {})}
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": props,
    }


def _square(x0, y0, side, **kw):
    return _poly(
        [[[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]], **kw
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return annotated_store(str(tmp_path_factory.mktemp("ann") / "store"))


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def _png(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


MASK = np.zeros((128, 128), np.uint8)
MASK[10:40, 10:40] = 1

CASES = [
    (
        "outside.geojson",
        [_square(0, 0, 64), _square(2000, 100, 200, name="spill")],
        {},
        AnnotationBoundsError,
        "feature 1 ('spill')",
    ),
    (
        "classes.geojson",
        [_square(0, 0, 64), _square(0, 0, 64, klass="necrosis")],
        {"classes": ("tumour",)},
        UnknownClassError,
        "feature 1 has class 'necrosis'",
    ),
    (
        "point.geojson",
        [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [1, 2]},
                "properties": {"name": "dot"},
            }
        ],
        {},
        AnnotationFormatError,
        "feature 0 ('dot') has geometry Point",
    ),
    ("empty.geojson", b"", {}, EmptyAnnotationError, "empty"),
    (
        "nofeatures.geojson",
        {"type": "FeatureCollection", "features": []},
        {},
        EmptyAnnotationError,
        "no features",
    ),
    ("broken.geojson", b"{not json", {}, AnnotationFormatError, "not JSON"),
    (
        "line.geojson",
        [_poly([[[0, 0], [10, 10], [0, 0]]], name="flat")],
        {},
        AnnotationFormatError,
        "feature 0 ('flat')",
    ),
    ("nompp.png", _png(MASK), {}, MaskMPPError, "needs its microns per pixel"),
    ("wrongmpp.png", _png(MASK), {"mask_mpp": 2.0}, MaskMPPError, "it fits at 4 µm/px"),
    (
        "blank.png",
        _png(np.zeros((128, 128), np.uint8)),
        {"mask_mpp": 4.0},
        EmptyAnnotationError,
        "no nonzero pixels",
    ),
    (
        "labels.png",
        _png(MASK * 3),
        {"mask_mpp": 4.0, "labels": {1: "tumour"}},
        UnknownClassError,
        "mask value(s) [3]",
    ),
    (
        "dtd.xml",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><ASAP_Annotations/>',
        {},
        AnnotationFormatError,
        "DTD",
    ),
    (
        "dots.xml",
        b'<ASAP_Annotations><Annotations><Annotation Name="d" Type="Dot">'
        b'<Coordinates><Coordinate Order="0" X="1" Y="2"/></Coordinates></Annotation>'
        b"</Annotations></ASAP_Annotations>",
        {},
        AnnotationFormatError,
        "feature 0 ('d') has Type",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "error", "says"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_file_raises_a_typed_error_naming_it(
    tmp_path, store, name, content, options, error, says
):
    path = _write(tmp_path, name, content)
    with pytest.raises(error) as info:
        import_annotations(store, "s1", path, ImportOptions(**options))
    assert str(path) in str(info.value) and says in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path, store):
    with pytest.raises(AnnotationFileNotFoundError, match="no such annotation file"):
        import_annotations(store, "s1", tmp_path / "nope.geojson")


def test_bowtie_is_repaired_and_reported(tmp_path, store):
    path = _write(tmp_path, "bowtie.geojson", [_poly(BOWTIE, name="bow")])
    report = import_annotations(store, "s1", path, ImportOptions(name="bowtie"))
    (repair,) = report.repairs
    assert "feature 0 ('bow')" in repair and "make_valid" in repair
    (ann,) = load_annotations(store, "s1", "bowtie").annotations
    assert ann.geometry.is_valid and ann.geometry.area == pytest.approx(2 * 512 * 256 / 2)


def test_clip_cuts_features_to_the_slide(tmp_path, store):
    path = _write(tmp_path, "spill.geojson", [_square(1900, 0, 400)])
    report = import_annotations(store, "s1", path, ImportOptions(name="clipped", clip=True))
    assert "clipped to the slide" in report.repairs[0]
    (ann,) = load_annotations(store, "s1", "clipped").annotations
    assert ann.geometry.bounds == (1900, 0, 2048, 400)


def test_cli_prints_one_line_and_exits_2(tmp_path, store):
    path = _write(tmp_path, "outside.geojson", CASES[0][1])
    result = CliRunner().invoke(
        app, ["annotations", "import", str(path), "--slide", "s1", "--store", store.uri]
    )
    assert result.exit_code == 2, result.output
    assert "AnnotationBoundsError" in result.output and "feature 1 ('spill')" in result.output
    assert "Traceback" not in result.output


def test_cli_imports_and_reports_repairs(tmp_path, store):
    path = _write(tmp_path, "bowtie.geojson", [_poly(BOWTIE, name="bow"), _square(0, 0, 128)])
    result = CliRunner().invoke(
        app,
        [
            "annotations",
            "import",
            str(path),
            "--slide",
            "s1",
            "--store",
            store.uri,
            "--name",
            "cli",
            "--class",
            "tumour",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "repaired: " in result.output and "2 annotations (tumour)" in result.output
    summary = CliRunner().invoke(
        app, ["annotations", "coverage", "--store", store.uri, "--name", "cli", "--json"]
    )
    assert summary.exit_code == 0, summary.output
    (row,) = json.loads(summary.output)
    assert row["slide_id"] == "s1" and row["kept"] >= 8
