"""``slidebank query``: the thin CLI over the store, driven through typer's runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from features.store import RunRecord
from slidebank import _cli_query
from tests._support.store import ENCODER


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    _cli_query.register(app)
    return app


@pytest.fixture
def filled(local_store, write):
    local_store.commit([write(local_store, f"s{i}", 10 + i, seed=i) for i in range(3)])
    local_store.record_run(
        RunRecord(run_id="r1", config={"a": 1}, encoder=ENCODER, code_version="t")
    )
    return local_store


def _run(cli, *args: str):
    result = CliRunner().invoke(cli, ["query", *args])
    return result


def test_slides_and_versions(cli, filled):
    result = _run(cli, "slides", "--store", filled.uri, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["slide_id"], r["tile_count"]) for r in rows] == [("s0", 10), ("s1", 11), ("s2", 12)]
    result = _run(cli, "slides", "--store", filled.uri, "--where", "tile_count > 10")
    assert result.exit_code == 0 and "s2" in result.output and "s0" not in result.output
    versions = json.loads(_run(cli, "versions", "--store", filled.uri, "--json").output)
    assert any("run-r1" in v["tags"] for v in versions)
    runs = json.loads(_run(cli, "versions", "--store", filled.uri, "--runs", "--json").output)
    assert runs[0]["run_id"] == "r1"


def test_sql_with_an_extra_table(cli, filled, tmp_path):
    omics = tmp_path / "omics.tsv"
    omics.write_text("slide_id\tscore\ns1\t2.5\ns2\t0.5\n")
    query = "SELECT o.slide_id, count(*) AS n FROM tiles t JOIN omics o USING (slide_id) GROUP BY 1 ORDER BY 1"
    result = _run(cli, "sql", query, "--store", filled.uri, "--table", f"omics={omics}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"slide_id": "s1", "n": 11}, {"slide_id": "s2", "n": 12}]


def test_similar_by_tile_and_by_vector(cli, filled, tmp_path):
    result = _run(
        cli,
        "similar",
        "--store",
        filled.uri,
        "--slide",
        "s1",
        "--x",
        "0",
        "--y",
        "0",
        "-k",
        "4",
        "--json",
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 4 and all(h["slide_id"] != "s1" for h in hits)
    vector = tmp_path / "q.npy"
    np.save(vector, filled.bag("s2").embeddings[0])
    result = _run(
        cli, "similar", "--store", filled.uri, "--vector-file", str(vector), "-k", "1", "--json"
    )
    assert json.loads(result.output)[0]["distance"] == pytest.approx(0, abs=1e-4)
    table = _run(cli, "similar", "--store", filled.uri, "--slide", "s1", "--x", "0", "--y", "0")
    assert table.exit_code == 0 and "distance" in table.output


def test_errors_are_one_line_and_exit_2(cli, filled, tmp_path):
    missing = _run(cli, "slides", "--store", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "StoreNotFoundError" in missing.output
    assert not (tmp_path / "nowhere").exists()  # reading never creates a store
    bad = _run(cli, "similar", "--store", filled.uri, "--slide", "../x", "--x", "0", "--y", "0")
    assert bad.exit_code == 2 and "InvalidSlideIdError" in bad.output
    neither = _run(cli, "similar", "--store", filled.uri)
    assert neither.exit_code != 0
