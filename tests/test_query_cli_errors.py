"""``slidebank query``/``tag``: user mistakes are one error line (no traceback), and
tables fit an 80-column terminal while --json stays complete."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import build_store

runner = CliRunner(env={"COLUMNS": "80"})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("query") / "store"
    build_store(root)
    return str(root)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["sql", "SELECT slide_idd FROM slides"],
            'error: SQL: Binder Error: Referenced column "slide_idd" not found',
        ),
        (
            ["slides", "--where", "mppp < 1"],
            'error: --where: Binder Error: Referenced column "mppp"',
        ),
        (
            ["sql", "--at", "1", "SELECT count(*) FROM tiles"],
            "no tiles table at version 1 (no tiles were committed yet then)",
        ),
        (
            ["similar", "--slide", "synthetic-00", "--x", "0", "--y", "0", "--cohort", "nope"],
            "SlideNotInStoreError: slide id(s) 'nope' not in the store",
        ),
        (
            [
                "similar",
                "--slide",
                "synthetic-00",
                "--x",
                "0",
                "--y",
                "0",
                "--where",
                "tissue_fractio > 0.5",
            ],
            "No field named tissue_fractio. Did you mean 'tissue_fraction'?",
        ),
        (
            ["similar", "--slide", "synthetic-00", "--x", "0", "--y", "0", "--metric", "manhattan"],
            "metric must be one of 'L2', 'cosine', 'dot', got 'manhattan'",
        ),
        (["slides", "--columns", "slide_id,nope"], "no column(s) nope; the result has"),
    ],
)
def test_query_mistakes_are_one_line_errors(store, args, message):
    result = runner.invoke(app, ["query", *args, "--store", store])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    if "columns: " in result.output:  # what exists is named, so the fix is obvious
        assert "slide_id" in result.output.split("columns: ", 1)[1]


def test_slides_table_fits_80_columns_and_json_is_complete(store):
    table = runner.invoke(app, ["query", "slides", "--store", store])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    body = [line for line in lines if line.startswith("│")]
    assert max(len(line) for line in body) <= 80
    assert any("synthetic-11" in line for line in body)  # ids whole, not "syn…"
    assert "not shown to fit 80 characters" in table.output
    full = json.loads(runner.invoke(app, ["query", "slides", "--store", store, "--json"]).output)
    assert len(full) == 12 and {"source_uri", "level_dimensions", "timings_json"} <= set(full[0])


def test_similar_states_metric_filters_before_ranking_and_tag(store):
    result = runner.invoke(
        app,
        [
            "query",
            "similar",
            "--store",
            store,
            "--slide",
            "synthetic-00",
            "--x",
            "0",
            "--y",
            "0",
            "-k",
            "5",
            "--metric",
            "cosine",
            "--where",
            "slide_id = 'synthetic-07'",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 5 and {h["slide_id"] for h in hits} == {"synthetic-07"}
    assert all(0 <= h["distance"] <= 2 for h in hits)
    titled = runner.invoke(
        app,
        [
            "query",
            "similar",
            "--store",
            store,
            "--slide",
            "synthetic-00",
            "--x",
            "0",
            "--y",
            "0",
            "-k",
            "2",
        ],
    )
    assert "distance = squared L2 distance" in titled.output
    tagged = runner.invoke(app, ["tag", "paper-v1", "--store", store])
    assert tagged.exit_code == 0 and "as 'paper-v1'" in tagged.output
    at_tag = runner.invoke(app, ["query", "slides", "--store", store, "--at", "paper-v1", "--json"])
    assert len(json.loads(at_tag.output)) == 12
