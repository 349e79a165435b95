"""The README's "For data scientists" section runs as written (Python and CLI)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import build_store, write_labels

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(marker: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    build_store(root / "slidebank-demo" / "store")
    write_labels(root / "labels.csv")
    return root


@pytest.fixture
def demo(demo_root, monkeypatch):
    monkeypatch.chdir(demo_root)
    return demo_root


def test_python_example_is_short_and_runs(demo):
    code = _block("datasci-python")
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) < 10
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].metrics["auroc"]["value"] > 0.8
    assert namespace["hits"].num_rows == 5
    assert (demo / "probe-immune" / "probe.png").exists() and (demo / "cohort.parquet").exists()


def _cli_lines() -> list[list[str]]:
    return [shlex.split(line)[1:] for line in _block("datasci-cli").splitlines()
            if line.startswith("slidebank ")]


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
    for name in ("open_store", "probe", "FeatureStore", "cohort_from_labels", "heatmap",
                 "export_anndata", "open_slide"):
        assert name in names
