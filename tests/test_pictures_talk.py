"""Pictures fit for a talk: attention over the tissue with mm axes, a colour bar that states
the range, a scale bar and a title; near-uniform values are not stretched; titled ROCs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests._support.datasci import build_picture_store
from training.figures import colour_limits


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_picture_store(tmp_path_factory.mktemp("talk"))


def _rgb(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _texts(monkeypatch):
    """Every string matplotlib draws while the figure is saved (titles, labels, bars)."""
    from matplotlib.text import Text

    seen: list[str] = []
    draw = Text.draw

    def record(self, renderer):
        if self.get_visible() and self.get_text():
            seen.append(self.get_text())
        return draw(self, renderer)

    monkeypatch.setattr(Text, "draw", record)
    return seen


def test_near_uniform_values_are_not_stretched():
    vmin, vmax, note = colour_limits(np.array([0.0364, 0.0370, 0.0376, np.nan]))
    assert "near-uniform" in note and "0.0364–0.0376" in note
    # The 3% spread covers well under a third of the colour range, not all of it.
    assert (0.0376 - 0.0364) / (vmax - vmin) < 0.1
    vmin, vmax, note = colour_limits(np.array([0.01, 0.05, 0.2]))
    assert (vmin, vmax) == (0.01, 0.2) and "near-uniform" not in note


def test_run_folder_attention_png_is_fit_for_a_talk(store, tmp_path, monkeypatch):
    from training.mil.attention import render_overlay, write_attention

    bag = store.bag("slide-1")
    attention = np.full(len(bag), 1.0 / len(bag)) * np.linspace(0.985, 1.015, len(bag))
    info = write_attention(store, "slide-1", bag.coords, attention, name="talk-run", tile_size=256)
    seen = _texts(monkeypatch)
    png = render_overlay(
        store,
        "slide-1",
        "talk-run",
        tmp_path / "attn.png",
        origin=info["origin"],
        stride=info["stride"],
        model="abmil",
    )
    rgb = _rgb(png)
    assert rgb.shape[1] >= 800
    text = "\n".join(seen)
    assert "slide-1" in text and "abmil" in text  # title: model and slide
    assert "x (mm)" in text and "y (mm)" in text
    assert "near-uniform" in text  # max/min 1.03: said, not stretched
    assert any(t.endswith(("mm", "µm")) and t[0].isdigit() for t in seen)  # the scale bar
    # H&E under the heatmap: pink/purple tissue pixels are visible.
    assert ((rgb[..., 0].astype(int) - rgb[..., 1]) > 40).mean() > 0.01


def test_store_heatmap_has_scale_bar_and_range(store, tmp_path, monkeypatch):
    from slidebank.pictures_api import heatmap

    seen = _texts(monkeypatch)
    heatmap(store, "slide-0", tmp_path / "heat.png", attention="demo-attn")
    text = "\n".join(seen)
    assert "values " in text and "near-uniform" not in text
    assert any(t.endswith(("mm", "µm")) and t[0].isdigit() for t in seen)
    assert _rgb(tmp_path / "heat.png").shape[1] >= 800


def test_mil_roc_has_a_title(tmp_path, monkeypatch):
    from training.mil.evaluate import write_roc_png

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(20), np.ones(20)]
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
    seen = _texts(monkeypatch)
    write_roc_png({"test": (y, p)}, tmp_path / "roc.png", n_boot=20, title="abmil: immune (test)")
    assert "abmil: immune (test)" in seen


@pytest.mark.slow  # evaluate_predictions bootstraps its metrics: ~10 s on 2 cores
def test_mil_run_roc_is_titled_with_model_and_label(tmp_path, monkeypatch):
    import pandas as pd

    from training.mil.runner import evaluate_predictions

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(20), np.ones(20)]
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
    seen = _texts(monkeypatch)
    frame = pd.DataFrame(
        {
            "fold": 0,
            "set": "test",
            "slide_id": [f"s{i}" for i in range(40)],
            "target:immune": y,
            "pred:immune": p,
        }
    )
    evaluate_predictions(frame, "binary", ["immune"], tmp_path, model="transmil")
    assert "transmil: immune (test)" in seen  # the run folder's test_roc.png


def test_group_colours_do_not_repeat_beyond_ten():
    from matplotlib.colors import to_hex

    from slidebank.pictures_api import group_colours

    for n, legend in ((6, True), (16, True), (30, False)):
        colours, has_legend = group_colours(n)
        assert len({to_hex(c) for c in colours}) == n and has_legend is legend


def test_umap_method_pca_for_sixteen_slides(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from slidebank.cli import app
    from tests._support.datasci import build_store, write_labels

    root = tmp_path / "store"
    build_store(root, n_slides=16, tiles=8)
    labels = write_labels(tmp_path / "labels.csv", n_slides=16)
    seen = _texts(monkeypatch)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "umap",
            "--store",
            str(root),
            "--labels",
            str(labels),
            "--color",
            "immune",
            "--method",
            "pca",
            "--out",
            str(tmp_path / "m.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert any(t.startswith("PCA of 16 slide embeddings") for t in seen)
    assert any(t.startswith("PC 1 (") for t in seen)
    seen.clear()
    # Tiles coloured by 16 distinct slides.
    result = runner.invoke(
        app,
        [
            "umap",
            "--store",
            str(root),
            "--level",
            "tile",
            "--method",
            "pca",
            "--out",
            str(tmp_path / "t.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert any(t.startswith("PCA of 128 tile embeddings") for t in seen)
    assert "synthetic-15" in seen  # a legend entry: 16 slides fit tab20's 20 colours
    result = runner.invoke(
        app, ["umap", "--store", str(root), "--method", "tsne", "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2 and "method must be auto, pca or umap" in result.output


def test_auto_method_is_pca_for_few_points():
    from slidebank.pictures_api import UMAP_MIN_POINTS, _pick_method

    assert _pick_method("auto", 16) == "pca"
    assert _pick_method("pca", 10_000) == "pca"
    assert UMAP_MIN_POINTS == 50


def test_module_map_is_drawn_over_the_tissue(store, tmp_path):
    from training.spatial.plots import render_module_map
    from training.spatial.store_io import write_module_assignments

    bag = store.bag("slide-2")
    coords = np.asarray(bag.coords)
    modules = (coords[:, 0] >= 1024).astype(np.int32)
    write_module_assignments(store, "talkbook", "slide-2", coords, modules)
    rgb = _rgb(render_module_map(store, "slide-2", "talkbook", tmp_path / "modules.png"))
    assert rgb.shape[1] >= 800
    block = rgb[10:500, 10:800].reshape(-1, 3)  # the map, left of the legend
    # H&E texture under the modules' colours: many shades, not two flat swatches.
    assert len({tuple(c) for c in block}) > 200
