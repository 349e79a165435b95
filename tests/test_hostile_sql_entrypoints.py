"""Issue 24: every place user text reaches SQL, attacked with the same list.

Entry points: ``query sql`` (``FeatureStore.sql`` and the CLI), ``query slides --where``
(``FeatureStore.slides(where=)`` and the CLI), ``query similar --where``
(``FeatureStore.search``/``search_by_tile`` and the CLI) and ``FeatureStore.tiles``/
``scan_tiles(where=)``. Each attack must end in a refusal or in rows the caller could
already see: no file read (the secret never appears), no file written, no row outside
the gate (a cohort of ``s0`` never returns ``s1`` or the never-committed ``s9``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from features.store import FeatureStore, SlideKey
from features.store.sandbox import (
    QueryLimitError,
    QueryNotAllowedError,
    QueryTimeoutError,
    SqlLimits,
    check_predicate,
    truncated_at,
)
from infra.errors import ConfigError, SlidebankError
from slidebank import _cli_query
from tests._support.store import CONFIG, DIM, ENCODER, slide_info, tile_payload

SECRET = "TOPSECRET-7f3a"


@pytest.fixture
def setting(tmp_path: Path) -> tuple[FeatureStore, Path, Path]:
    """Two committed slides, one written but never committed, a secret file, a target."""
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    fs.commit(
        [
            fs.write_slide(
                SlideKey(f"s{i}", ENCODER, CONFIG),
                slide_info(f"s{i}"),
                [tile_payload(4 + i, seed=i)],
            )
            for i in range(2)
        ]
    )
    # s0 rewritten: its first write's rows stay in the Lance table, replaced and hidden.
    fs.commit(
        [
            fs.write_slide(
                SlideKey("s0", ENCODER, CONFIG), slide_info("s0"), [tile_payload(6, seed=5)]
            )
        ]
    )
    fs.write_slide(SlideKey("s9", ENCODER, CONFIG), slide_info("s9"), [tile_payload(7, seed=9)])
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    return fs, secret, tmp_path / "written.csv"


def attacks(secret: Path, target: Path) -> list[str]:
    """Predicates that read or write files, escape the gate or smuggle a statement."""
    return [
        f"false UNION ALL BY NAME SELECT content AS slide_id FROM read_text('{secret}')",
        f"true; COPY (SELECT 'x') TO '{target}'; SELECT * FROM slides WHERE true",
        "1=1) OR (1=1",
        "x >= 0) OR (true",
        "true)) OR ((true",
        f"(SELECT count(*) FROM read_text('{secret}')) > 0",
        f"slide_id IN (SELECT content FROM read_text('{secret}'))",
        f"EXISTS (FROM read_text('{secret}'))",
        f"slide_id IN (FROM glob('{secret.parent}/*'))",
        "true -- ) OR (true",
        "true /* */ OR true",
        "slide_id = 'a\\' ) OR (1=1 '",
        "slide_id = 's0' OR slide_id = 's9'",
        "true ORDER BY 1",
        f"true UNION SELECT * FROM read_csv('{secret}')",
        f"slide_id = (SELECT content FROM read_text('{secret}'))",
        "slide_id = 'unterminated",
    ]


def _rows_of(result: object) -> list[dict]:
    if isinstance(result, pa.Table):
        return result.to_pylist()
    return [row for batch in result for row in batch.to_pylist()]  # type: ignore[attr-defined]


def _check(run: Callable[[], object], secret: Path, target: Path, allowed: set[str]) -> None:
    """Refused with a typed error, or only rows of ``allowed`` slides; no secret, no file."""
    message = ""
    try:
        rows = _rows_of(run())
    except (SlidebankError, ValueError, OSError, duckdb.Error) as exc:
        message, rows = str(exc), []
    assert SECRET not in message
    assert SECRET not in json.dumps(rows, default=str)
    assert {row["slide_id"] for row in rows} <= allowed
    assert not target.exists()


def _tile_entry_points(fs: FeatureStore) -> dict[str, Callable[[str], object]]:
    return {
        "tiles": lambda w: fs.tiles(slide_ids=["s0"], where=w),
        "scan_tiles": lambda w: list(
            fs.scan_tiles(slide_ids=["s0"], where=w, columns=["slide_id", "x"])
        ),
        "search": lambda w: fs.search(np.zeros(DIM), k=50, slide_ids=["s0"], where=w),
        "search_by_tile": lambda w: fs.search_by_tile("s1", 0, 0, k=50, where=w),
    }


@pytest.mark.parametrize("entry", ["tiles", "scan_tiles", "search", "search_by_tile"])
def test_tile_predicates_never_leave_the_gate(setting, entry: str) -> None:
    fs, secret, target = setting
    run = _tile_entry_points(fs)[entry]
    assert _rows_of(run("x >= 0")), "the honest predicate must still return rows"
    for attack in attacks(secret, target):
        _check(lambda a=attack: run(a), secret, target, {"s0"})


def test_slides_predicate_runs_in_the_sandbox(setting) -> None:
    fs, secret, target = setting
    assert {
        r["slide_id"] for r in fs.slides(where="mpp < 0.3 AND vendor = 'aperio'").to_pylist()
    } == {"s0", "s1"}
    for attack in attacks(secret, target):
        _check(lambda a=attack: fs.slides(where=a), secret, target, {"s0", "s1"})
    # The exact exploits from the report are refused, not merely harmless.
    with pytest.raises(QueryNotAllowedError):
        fs.slides(
            where=f"false UNION ALL BY NAME SELECT content AS slide_id FROM read_text('{secret}')"
        )
    with pytest.raises(QueryNotAllowedError):
        fs.slides(where=f"true; COPY (SELECT 'x') TO '{target}'; SELECT * FROM slides WHERE true")


def test_sql_queries_cannot_read_write_or_see_raw_tables(setting) -> None:
    fs, secret, target = setting
    queries = [
        f"SELECT content AS slide_id FROM read_text('{secret}')",
        f"COPY (SELECT 'x') TO '{target}'",
        "SELECT * FROM _lance_tiles",
        "SELECT * FROM _lance_tiles_enc_test",
        "SELECT slide_id FROM python_arrow_scan()",
        "SELECT content AS slide_id FROM read_text('.tmp/*')",
        f"SELECT 1 AS slide_id; COPY slides TO '{target}'",
    ]
    for query in queries:
        _check(lambda q=query: fs.sql(q), secret, target, {"s0", "s1"})
    # The raw Lance tables (with the replaced rows of s0) have no name a query can use;
    # the views hold only the current, committed tiles.
    for raw in ("_lance_tiles", "_lance_tiles_enc_test"):
        with pytest.raises(duckdb.CatalogException):
            fs.sql(f"SELECT * FROM {raw}")
    counts = fs.sql("SELECT slide_id, count(*) AS n FROM tiles GROUP BY 1 ORDER BY 1")
    assert counts.to_pylist() == [{"slide_id": "s0", "n": 6}, {"slide_id": "s1", "n": 5}]


@pytest.mark.parametrize("name", ["_lance_tiles", "tiles_enc_test", "TILES", "Slides", "_x"])
def test_named_tables_cannot_shadow_store_views(setting, name: str) -> None:
    fs, _, _ = setting
    fake = pd.DataFrame({"slide_id": ["forged"], "x": [0]})
    with pytest.raises(ConfigError, match="extra table name"):
        fs.sql("SELECT * FROM tiles", tables={name: fake})


def test_sandbox_bounds_time_memory_rows_and_hides_the_working_directory(setting) -> None:
    fs, _, _ = setting
    with pytest.raises(QueryTimeoutError, match="--timeout"):
        fs.sql(
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
            "SELECT count(*) FROM r",
            limits=SqlLimits(timeout_s=0.5),
        )
    with pytest.raises(QueryLimitError):
        fs.sql(
            "SELECT length(string_agg(repeat('x', 1000), '')) AS n FROM range(3000000)",
            limits=SqlLimits(timeout_s=30, memory_limit="128MB"),
        )
    capped = fs.sql("SELECT * FROM range(1000)", limits=SqlLimits(max_rows=10))
    assert capped.num_rows == 10 and truncated_at(capped) == 10
    settings = fs.sql(
        "SELECT current_setting('temp_directory') AS t, current_setting('memory_limit') AS m"
    ).to_pylist()[0]
    assert str(Path.cwd()) not in settings["t"] and "slidebank-sql-" in settings["t"]
    # DuckDB allow-lists its spill directory: it is private to this query and empty.
    spill = fs.sql("SELECT * FROM glob(current_setting('temp_directory') || '/*')")
    assert spill.num_rows == 0


@pytest.mark.parametrize(
    "text",
    [
        "a = 1) OR (1 = 1",
        "(a = 1",
        "a = 1; b",
        "a = 1 --",
        "a IN (SELECT 1)",
        "a = 'x\\'",
        'a = "open',
    ],
)
def test_check_predicate_refuses_non_expressions(text: str) -> None:
    with pytest.raises(QueryNotAllowedError):
        check_predicate(text)


@pytest.mark.parametrize(
    "text",
    [
        "x > 0 AND (y < 5 OR qc_flags = 0)",
        "slide_id = 'it''s (x'",
        '"order" = 1',
        "slide_id IN ('a', 'b')",
    ],
)
def test_check_predicate_keeps_ordinary_expressions(text: str) -> None:
    assert check_predicate(text) == text


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    _cli_query.register(app)
    return app


def test_cli_entry_points_refuse_the_report_exploits(setting) -> None:
    fs, secret, target = setting
    runner = CliRunner()
    app = _app()
    calls = [
        [
            "query",
            "slides",
            "--store",
            fs.uri,
            "--where",
            f"false UNION ALL BY NAME SELECT content AS slide_id FROM read_text('{secret}')",
        ],
        [
            "query",
            "slides",
            "--store",
            fs.uri,
            "--where",
            f"true; COPY (SELECT 'x') TO '{target}'; SELECT * FROM slides WHERE true",
        ],
        [
            "query",
            "similar",
            "--store",
            fs.uri,
            "--slide",
            "s1",
            "--x",
            "0",
            "--y",
            "0",
            "--where",
            "1=1) OR (1=1",
            "--json",
        ],
        ["query", "sql", f"SELECT content FROM read_text('{secret}')", "--store", fs.uri],
    ]
    for args in calls:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert SECRET not in result.output and "Traceback" not in result.output
    assert not target.exists()
    cut = runner.invoke(
        app,
        ["query", "sql", "SELECT * FROM range(50)", "--store", fs.uri, "--limit", "5", "--json"],
    )
    assert cut.exit_code == 0, cut.output
    assert "cut at --limit 5" in cut.output
