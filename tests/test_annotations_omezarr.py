"""OME-Zarr label images: imported as masks at the MPP their metadata states, and
prediction maps exported as labels that import back."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from features.annotations import (
    AnnotationFormatError,
    ImportOptions,
    MaskMPPError,
    coverage_table,
    import_annotations,
)
from features.annotations.omezarr import read_label_image
from features.annotations.omezarr_export import export_prediction_labels
from infra.errors import OutputExistsError
from slidebank.cli import app
from tests._support.annotations import MPP, SIDE, STEP, annotated_store

LABEL_UM = 4.0  # label pixel: 16 level-0 px of the 0.25 µm/px slide
N = int(SIDE * MPP / LABEL_UM)  # 128


def _labels() -> np.ndarray:
    yy, xx = np.mgrid[0:N, 0:N]
    out = np.zeros((N, N), np.uint8)
    out[(yy - 50) ** 2 + (xx - 60) ** 2 < 30**2] = 1
    out[90:120, 5:70] = 2
    return out


def _write_ngff04(
    path, labels, *, scale=LABEL_UM, unit="micrometer", names=("seg",), planes=1
) -> str:
    """A NGFF 0.4 image (Zarr v2) with labels/<name> label images, as other tools write."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    group = root.require_group("labels")
    group.attrs.put({"labels": list(names)})
    axis = {"type": "space", **({"unit": unit} if unit else {})}
    for name in names:
        image = group.require_group(name)
        data = np.repeat(labels[None], planes, axis=0)
        image.create_array("0", shape=data.shape, dtype=data.dtype, chunks=data.shape)[...] = data
        image.attrs.put(
            {
                "multiscales": [
                    {
                        "version": "0.4",
                        "axes": [
                            {"name": "z", "type": "space", **({"unit": unit} if unit else {})},
                            {"name": "y", **axis},
                            {"name": "x", **axis},
                        ],
                        "datasets": [
                            {
                                "path": "0",
                                "coordinateTransformations": [
                                    {"type": "scale", "scale": [1.0, scale, scale]}
                                ],
                            }
                        ],
                    }
                ],
                "image-label": {
                    "version": "0.4",
                    "colors": [{"label-value": 1, "rgba": [255, 0, 0, 255]}],
                    "properties": [
                        {"label-value": 1, "class": "tumour"},
                        {"label-value": 2, "class": "stroma"},
                    ],
                },
            }
        )
    return str(path)


@pytest.fixture
def store(tmp_path):
    return annotated_store(str(tmp_path / "store"))


def test_ngff04_label_image_imports_at_its_stated_mpp(store, tmp_path):
    labels = _labels()
    path = _write_ngff04(tmp_path / "img.zarr", labels)
    report = import_annotations(store, "s1", path)
    assert report.classes == ["stroma", "tumour"] and not report.repairs
    rows = coverage_table(store).to_pandas()
    per = STEP // int(LABEL_UM / MPP)  # label pixels per tile side: 8
    for klass, value in (("tumour", 1), ("stroma", 2)):
        got = rows[rows["class"] == klass].set_index(["x", "y"])["coverage"]
        for (x, y), cov in got.items():
            block = labels[
                y // STEP * per : (y // STEP + 1) * per, x // STEP * per : (x // STEP + 1) * per
            ]
            assert cov == pytest.approx((block == value).mean(), abs=1e-9)
    colors = store.derived("annotations", "default", columns=["class", "color"]).to_pylist()
    assert {(r["class"], r["color"]) for r in colors} == {("tumour", "#ff0000"), ("stroma", None)}


def test_units_are_converted_and_an_agreeing_mask_mpp_is_accepted(tmp_path):
    path = _write_ngff04(tmp_path / "nm.zarr", _labels(), scale=LABEL_UM * 1000, unit="nanometer")
    array, mpp, names, _ = read_label_image(path, mask_mpp=LABEL_UM)
    assert mpp == pytest.approx(LABEL_UM) and array.shape == (N, N)
    assert names == {1: "tumour", 2: "stroma"}


def test_bad_label_images_fail_with_one_clear_line(store, tmp_path):
    cases = [
        (
            _write_ngff04(tmp_path / "nounit.zarr", _labels(), unit=None),
            {},
            MaskMPPError,
            "no unit",
        ),
        (
            _write_ngff04(tmp_path / "mpp.zarr", _labels()),
            {"mask_mpp": 1.0},
            MaskMPPError,
            "metadata says 4",
        ),
        (
            _write_ngff04(tmp_path / "two.zarr", _labels(), names=("a", "b")),
            {},
            AnnotationFormatError,
            "labels a, b",
        ),
        (
            _write_ngff04(tmp_path / "z.zarr", _labels(), planes=3),
            {},
            AnnotationFormatError,
            "more than one plane",
        ),
        # the wrong scale: the mask no longer spans the slide
        (
            _write_ngff04(tmp_path / "scale.zarr", _labels(), scale=2.0),
            {},
            MaskMPPError,
            "wrong mask MPP",
        ),
    ]
    for path, kw, error, words in cases:
        with pytest.raises(error, match=words):
            import_annotations(store, "s1", path, ImportOptions(**kw))
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w", zarr_format=3)
    with pytest.raises(AnnotationFormatError, match="not an OME-Zarr label image"):
        import_annotations(store, "s1", plain)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "annotations",
            "import",
            str(tmp_path / "two.zarr"),
            "--slide",
            "s1",
            "--store",
            store.uri,
        ],
    )
    assert res.exit_code == 2 and "labels a, b" in res.output and "Traceback" not in res.output


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    from synthetic.tiles import make_tile_cohort
    from training.tiles import (
        TileClassifierConfig,
        TileTask,
        run_tile_classifier,
        write_predictions,
    )

    cohort = make_tile_cohort(
        str(tmp_path_factory.mktemp("oz") / "store"), n_slides=4, side=12, seed=3
    )
    result = run_tile_classifier(
        cohort.store, TileClassifierConfig(TileTask("tumour"), folds=2, n_boot=10), write=False
    )
    write_predictions(cohort.store, result)
    return cohort, result


def test_prediction_labels_round_trip_through_import(mapped, tmp_path):
    cohort, result = mapped
    sid = cohort.slide_ids[0]
    where = export_prediction_labels(cohort.store, sid, result.name, tmp_path / "map.zarr")
    assert where.endswith(f"map.zarr/labels/{result.name}")
    ome = dict(zarr.open_group(where, mode="r").attrs)["ome"]
    assert ome["image-label"]["properties"] == [{"label-value": 1, "class": "tumour"}]
    assert ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        256 * 0.5,
        256 * 0.5,
    ]  # one label pixel per 256-px tile at 0.5 µm/px
    report = import_annotations(
        cohort.store, sid, tmp_path / "map.zarr", ImportOptions(name="labels-back")
    )
    assert report.classes == ["tumour"]
    cov = coverage_table(cohort.store, "labels-back", slide_ids=[sid]).to_pandas()
    mine = result.data.slide_id == sid
    predicted = {tuple(xy) for xy in result.data.coords[mine][result.probs[mine] >= 0.5].tolist()}
    inside = {
        (x, y)
        for x, y, c in zip(cov["x"], cov["y"], cov["coverage"], strict=True)
        if c == pytest.approx(1.0)
    }
    assert inside == predicted and set(cov["coverage"].round(9)) <= {0.0, 1.0}


def test_prediction_labels_go_into_the_slides_zarr_group(mapped):
    cohort, result = mapped
    sid = cohort.slide_ids[1]
    export_prediction_labels(cohort.store, sid, result.name, name="tumour-map")
    group = cohort.store.arrays(sid).group("r")
    assert dict(group["labels"].attrs)["ome"]["labels"] == ["tumour-map"]
    grid = np.asarray(group["labels/tumour-map/0"][...])
    mine = result.data.slide_id == sid
    assert grid.shape == (12, 12) and int(grid.sum()) == int((result.probs[mine] >= 0.5).sum())
    with pytest.raises(OutputExistsError, match="exists"):
        export_prediction_labels(cohort.store, sid, result.name, cohort.store.arrays(sid).url)


def test_cli_exports_ome_zarr_labels(mapped, tmp_path):
    cohort, result = mapped
    out = tmp_path / "cli.zarr"
    args = [
        "annotations",
        "export",
        str(out),
        "--store",
        cohort.store.uri,
        "--slide",
        cohort.slide_ids[2],
        "--predictions",
        result.name,
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert read_label_image(out)[0].sum() > 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
