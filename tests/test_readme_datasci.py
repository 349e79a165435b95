"""The README's "For data scientists" section runs as written (Python and CLI).

The default suite runs it against a demo-like store written without Ray (the demo's
slide ids, patients and tile grid, embeddings shifted for the demo's immune-High
patients) with the ``labels.csv`` the demo itself writes; the slow suite against a
fresh ``slidebank demo`` (issue 30 item 3).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from synthetic.demo import demo_plan, write_demo_labels
from tests._support.datasci import N_SLIDES, build_store, is_high

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(marker: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1)


def _demo_like(root: Path) -> Path:
    plan = demo_plan(N_SLIDES)  # what `slidebank demo` plants and writes to labels.csv
    assert [s.immune == "High" for s in plan] == [is_high(i) for i in range(N_SLIDES)]
    build_store(root / "slidebank-demo" / "store")
    write_demo_labels(root / "slidebank-demo" / "labels.csv", plan)
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    # One folder per block: the blocks are two ways to the same outputs, and an output
    # is never replaced silently (the second block's cohort.parquet would be refused).
    return {block: _demo_like(tmp_path_factory.mktemp(block)) for block in ("python", "cli")}


@pytest.fixture
def demo(roots, monkeypatch):
    monkeypatch.chdir(roots["cli"])
    return roots["cli"]


@pytest.fixture
def py_demo(roots, monkeypatch):
    monkeypatch.chdir(roots["python"])
    return roots["python"]


def test_python_example_is_short_and_runs(py_demo):
    demo = py_demo
    code = _block("datasci-python")
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) < 10
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].metrics["auroc"]["value"] > 0.8
    assert namespace["hits"].num_rows == 5
    assert (demo / "probe-immune" / "probe.png").exists() and (demo / "cohort.parquet").exists()
    assert (demo / "probe-immune" / "report.html").exists()  # the README's one page per run


def _cli_lines() -> list[list[str]]:
    return [
        shlex.split(line)[1:]
        for line in _block("datasci-cli").splitlines()
        if line.startswith("slidebank ")
    ]


@pytest.mark.parametrize("args", [a for a in _cli_lines() if a[0] != "umap"], ids=lambda a: a[0])
def test_cli_example_runs(demo, args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.slow  # umap-learn compiles with numba on first use (~50 s on 2 cores)
@pytest.mark.parametrize("args", [a for a in _cli_lines() if a[0] == "umap"], ids=lambda a: a[0])
def test_cli_umap_example_runs(demo, args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (demo / "umap.png").exists()


def test_dir_lists_the_facade():
    import slidebank as sb

    names = dir(sb)
    for name in (
        "open_store",
        "probe",
        "FeatureStore",
        "cohort_from_labels",
        "heatmap",
        "export_anndata",
        "open_slide",
    ):
        assert name in names


def test_a_missing_tile_names_the_nearest_ones(demo):
    import slidebank as sb
    from features.store import TileNotFoundError

    store = sb.open_store("slidebank-demo/store")
    with pytest.raises(
        TileNotFoundError,
        match=r"no tile at \(x=1000, y=530\); the nearest of "
        r"its 40 tiles: \(1024, 512\), \(512, 512\), \(1024, 1024\)",
    ):
        store.search_by_tile("synthetic-00", 1000, 530, k=5)
    result = CliRunner().invoke(
        app,
        [
            "query",
            "similar",
            "--store",
            "slidebank-demo/store",
            "--slide",
            "synthetic-00",
            "--x",
            "1000",
            "--y",
            "530",
        ],
    )
    assert result.exit_code == 2
    assert "the nearest of its 40 tiles: (1024, 512)" in result.output
    assert "Traceback" not in result.output


def _run_readme_blocks(root: Path, monkeypatch) -> None:
    """Both blocks, literally: the Python one in ``root`` (which holds slidebank-demo/),
    the CLI one in a copy of it (they write the same outputs, never replaced silently)."""
    import shutil

    monkeypatch.chdir(root)
    namespace: dict = {}
    exec(compile(_block("datasci-python"), "README.md", "exec"), namespace)
    assert namespace["hits"].num_rows == 5
    assert (root / "probe-immune" / "probe.png").exists()
    cli = root / "cli"
    shutil.copytree(root / "slidebank-demo", cli / "slidebank-demo")
    monkeypatch.chdir(cli)
    for args in _cli_lines():
        if args[0] == "umap":
            continue  # numba's first compile; test_cli_umap_example_runs covers it
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)


# Slow: writes and ingests the real demo (12 synthetic slides, Ray), minutes on 2 cores.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_blocks_run_literally_against_a_fresh_demo(tmp_path, monkeypatch, ray_local):
    import pandas as pd

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "slidebank-demo")])
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(tmp_path / "slidebank-demo" / "labels.csv")
    assert {"slide_id", "patient_id", "immune", "infiltrate"} <= set(labels.columns)
    assert labels["immune"].value_counts().to_dict() == {"High": 6, "Low": 6}
    _run_readme_blocks(tmp_path, monkeypatch)
    auroc = pd.read_json(tmp_path / "probe-immune" / "metrics.json", typ="series")["metrics"][
        "auroc"
    ]
    assert auroc["value"] > 0.8, auroc  # the infiltrate is in the pixels, and the probe finds it
