"""Issue 17: ``slidebank query sql`` sees the store's tables and the tables the user named,
nothing else. One test per escape that worked before the sandbox."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.store import FeatureStore, SlideKey
from features.store.sql import QueryNotAllowedError, read_table_file
from infra.errors import TableReadError
from slidebank import _cli_query
from tests._support.store import CONFIG, ENCODER, slide_info, tile_payload


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
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
    return fs


def test_store_tables_and_named_tables_still_join(store: FeatureStore) -> None:
    omics = pd.DataFrame({"slide_id": ["s0", "s1"], "tp53": [0.1, 2.5]})
    rows = store.sql(
        "SELECT o.slide_id, count(*) AS n FROM tiles t JOIN omics o USING (slide_id) "
        "GROUP BY ALL ORDER BY 1",
        tables={"omics": omics},
    ).to_pylist()
    assert rows == [{"slide_id": "s0", "n": 4}, {"slide_id": "s1", "n": 5}]
    with_cte = store.sql("WITH x AS (SELECT * FROM slides) SELECT count(*) AS n FROM x")
    assert with_cte.to_pylist() == [{"n": 2}]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('s3://bucket/other.parquet')",
        "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    ],
)
def test_reading_files_or_urls_is_refused(store: FeatureStore, query: str) -> None:
    with pytest.raises(QueryNotAllowedError, match="outside the store's tables"):
        store.sql(query)


def test_copy_to_a_file_is_refused_and_writes_nothing(store: FeatureStore, tmp_path: Path) -> None:
    target = tmp_path / "leak.csv"
    with pytest.raises(QueryNotAllowedError, match="only SELECT"):
        store.sql(f"COPY slides TO '{target}'")
    assert not target.exists()


def test_attach_and_create_table_are_refused(store: FeatureStore, tmp_path: Path) -> None:
    db = tmp_path / "other.duckdb"
    with pytest.raises(QueryNotAllowedError, match="only SELECT"):
        store.sql(f"ATTACH '{db}' AS other")
    with pytest.raises(QueryNotAllowedError, match="only SELECT"):
        store.sql("CREATE TABLE other AS SELECT * FROM slides")
    assert not db.exists()


@pytest.mark.parametrize(
    "query",
    [
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "PRAGMA database_list",
        "SET lock_configuration = false",
    ],
)
def test_extensions_and_settings_are_refused(store: FeatureStore, query: str) -> None:
    with pytest.raises(QueryNotAllowedError, match="only SELECT"):
        store.sql(query)


def test_several_statements_are_refused(store: FeatureStore, tmp_path: Path) -> None:
    target = tmp_path / "leak.csv"
    with pytest.raises(QueryNotAllowedError, match="one SQL statement per query, got 2"):
        store.sql(f"SELECT 1; COPY slides TO '{target}'")
    assert not target.exists()


def test_settings_are_locked_and_external_access_off(store: FeatureStore) -> None:
    rows = store.sql(
        "SELECT current_setting('enable_external_access') AS ext, "
        "current_setting('lock_configuration') AS locked"
    ).to_pylist()
    assert rows == [{"ext": False, "locked": True}]


def test_python_variables_of_the_caller_are_invisible(store: FeatureStore) -> None:
    secret_frame = pd.DataFrame({"password": ["hunter2"]})  # noqa: F841 (DuckDB would scan it)
    with pytest.raises(Exception, match="secret_frame"):
        store.sql("SELECT * FROM secret_frame")


# ---- side tables come through infra.tables (issue 13: .csv.gz raised UnicodeDecodeError)
def test_gzipped_csv_side_table_reads_with_ids_as_text(tmp_path: Path) -> None:
    path = tmp_path / "omics.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("slide_id,tp53\n007,1.5\ns1,2.0\n")
    table = read_table_file(str(path))
    assert table.column("slide_id").to_pylist() == ["007", "s1"]


def test_unreadable_side_table_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "omics.csv.gz"
    path.write_text("slide_id,tp53\ns1,2.0\n")  # named .gz but not compressed
    with pytest.raises(TableReadError, match=r"omics\.csv\.gz"):
        read_table_file(str(path))


def test_cli_sql_escape_exits_with_a_message(store: FeatureStore) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    _cli_query.register(app)
    runner = CliRunner()
    bad = runner.invoke(
        app, ["query", "sql", "SELECT * FROM read_text('/etc/passwd')", "--store", store.uri]
    )
    assert bad.exit_code != 0 and "root:" not in bad.output
    assert "outside the store's tables" in bad.output
    good = runner.invoke(
        app, ["query", "sql", "SELECT count(*) AS n FROM slides", "--store", store.uri, "--json"]
    )
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)[0]["n"] == 2
