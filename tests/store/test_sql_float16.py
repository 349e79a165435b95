"""SQL over a store of float16 embeddings (what real cohorts write: 768-d float16 ViT
features). DuckDB has no half-float type, and every query failed at registering the
tiles table ("Unsupported Internal Arrow Type e"), even ``SELECT * FROM slides``."""

from __future__ import annotations

import json
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

import features.store.writer as writer_module
from features.store import FeatureStore, SlideKey
from features.store._duckdb_types import WidenedDataset, for_duckdb
from features.store.sql import QueryNotAllowedError
from slidebank import _cli_query
from tests._support.store import CONFIG, DIM, ENCODER, slide_info, tile_payload


def _write(fs: FeatureStore, slide_id: str, n: int, seed: int, dtype: str = "float16"):
    return fs.write_slide(
        SlideKey(slide_id, ENCODER, CONFIG),
        slide_info(slide_id),
        [tile_payload(n, seed=seed, dtype=dtype)],
    )


@pytest.fixture
def half_store(tmp_path: Path) -> FeatureStore:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    fs.commit([_write(fs, f"s{i}", 4 + i, seed=i) for i in range(2)])
    return fs


def test_queries_that_do_not_touch_the_embedding(half_store: FeatureStore) -> None:
    slides = half_store.sql("SELECT slide_id, status FROM slides ORDER BY 1").to_pylist()
    assert slides == [{"slide_id": "s0", "status": "done"}, {"slide_id": "s1", "status": "done"}]
    counts = half_store.sql(
        "SELECT slide_id, count(*) AS n, min(x) AS x0 FROM tiles GROUP BY 1 ORDER BY 1"
    ).to_pylist()
    assert counts == [{"slide_id": "s0", "n": 4, "x0": 0}, {"slide_id": "s1", "n": 5, "x0": 0}]
    per_encoder = half_store.sql("SELECT count(*) AS n FROM tiles_enc_test").to_pylist()
    assert per_encoder == [{"n": 9}]


def test_the_embedding_comes_back_as_float32_with_the_stored_values(
    half_store: FeatureStore,
) -> None:
    result = half_store.sql("SELECT x, y, embedding FROM tiles WHERE slide_id = 's1' ORDER BY y, x")
    column = result.column("embedding")
    assert column.type == pa.list_(pa.float32(), DIM)
    got = np.asarray(column.to_pylist(), dtype=np.float32)
    bag = half_store.bag("s1")
    assert bag.embeddings.dtype == np.float16  # the store keeps half precision
    order = np.lexsort((bag.coords[:, 0], bag.coords[:, 1]))
    np.testing.assert_array_equal(got, bag.embeddings[order].astype(np.float32))
    # The float32 path's array type: DuckDB's array functions need no cast.
    sims = half_store.sql(
        "SELECT array_cosine_similarity(embedding, embedding) AS c FROM tiles"
    ).column("c")
    np.testing.assert_allclose(sims.to_numpy(), 1.0, rtol=1e-5)


def test_replaced_rows_stay_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    fs.commit([_write(fs, "s1", 8, seed=1)])
    # Keep the replaced copy in the table: the gate predicate alone must hide it.
    monkeypatch.setattr(writer_module, "_tidy_tiles", lambda *a, **k: None)
    fs.commit([_write(fs, "s1", 6, seed=2)])
    assert lance.dataset(fs.tiles_uri()).count_rows() == 14
    assert fs.sql("SELECT count(*) AS n FROM tiles").to_pylist() == [{"n": 6}]
    embeddings = fs.sql("SELECT embedding FROM tiles").column("embedding")
    assert len(embeddings) == 6


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('s3://bucket/other.parquet')",
    ],
)
def test_the_sandbox_still_refuses_escapes(half_store: FeatureStore, query: str) -> None:
    with pytest.raises(QueryNotAllowedError):
        half_store.sql(query)


def test_python_objects_stay_invisible(half_store: FeatureStore) -> None:
    raw = lance.dataset(half_store.tiles_uri())  # DuckDB would scan these by name
    widened = for_duckdb(raw)  # noqa: F841
    for name in ("raw", "widened"):
        with pytest.raises(Exception, match=name):
            half_store.sql(f"SELECT count(*) FROM {name}")


def test_named_arrow_tables_with_half_floats_join(half_store: FeatureStore) -> None:
    omics = pa.table(
        {"slide_id": ["s0", "s1"], "score": pa.array(np.array([0.5, 2.0], np.float16))}
    )
    rows = half_store.sql(
        "SELECT o.slide_id, o.score, count(*) AS n FROM tiles JOIN omics o USING (slide_id) "
        "GROUP BY ALL ORDER BY 1",
        tables={"omics": omics},
    ).to_pylist()
    assert rows == [
        {"slide_id": "s0", "score": 0.5, "n": 4},
        {"slide_id": "s1", "score": 2.0, "n": 5},
    ]


def test_interactive_connection_sees_the_same_array_type(tmp_path: Path) -> None:
    types = {}
    for dtype in ("float16", "float32"):
        fs = FeatureStore.open(str(tmp_path / dtype), create=True)
        fs.commit([_write(fs, "s1", 3, seed=0, dtype=dtype)])
        con = fs.duckdb()
        types[dtype] = con.execute("SELECT typeof(embedding) FROM tiles LIMIT 1").fetchone()
    assert types["float16"] == types["float32"] == (f"FLOAT[{DIM}]",)


def test_cli_query_sql_on_a_float16_store(half_store: FeatureStore) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    _cli_query.register(app)
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "query",
            "sql",
            "SELECT slide_id, embedding FROM tiles WHERE slide_id = 's0' LIMIT 1",
            "--store",
            half_store.uri,
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.stdout)
    assert row["slide_id"] == "s0" and len(row["embedding"]) == DIM
    table = runner.invoke(
        app, ["query", "sql", "SELECT count(*) AS n FROM tiles", "--store", half_store.uri]
    )
    assert table.exit_code == 0 and "9" in table.output, table.output


def test_widened_dataset_scans_and_refuses_the_rest(half_store: FeatureStore) -> None:
    raw = lance.dataset(half_store.tiles_uri())
    widened = for_duckdb(raw)
    assert isinstance(widened, WidenedDataset)
    assert widened.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert widened.count_rows() == raw.count_rows()
    picked = widened.to_table(columns=["x", "embedding"], filter="x = 0")
    assert picked.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert picked.num_rows == raw.count_rows(filter="x = 0")
    with pytest.raises(NotImplementedError):
        widened.take([0])
    float32_table = pa.table({"v": pa.array([1.0], pa.float32())})
    assert for_duckdb(float32_table) is float32_table
