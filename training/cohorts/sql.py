"""Cohort tables in DuckDB, beside the feature store's ``slides``, ``tiles`` and ``runs``.

>>> con = connect("s3://lab/store", tables=cohort_tables(build))
>>> con.sql('''SELECT c.ayers_ifng6_label, count(*) AS tiles
...            FROM tiles t JOIN cohort c USING (slide_id) GROUP BY 1''')

Registered names: ``cohort`` (one row per slide), ``patients`` (one row per patient),
``scores`` (patient, signature, score, label), ``signatures`` (signature, gene,
source), ``expression`` (patient, gene, log2 expression; only when asked, it is
large) and ``external`` when an external cohort is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from infra.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

    from features.store import FeatureStore
    from training.cohorts.model import Cohort
    from training.cohorts.pipeline import CohortBuild

__all__ = ["cohort_tables", "connect"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_STORE_TABLES = {"slides", "runs", "tiles"}


def cohort_tables(
    build: CohortBuild,
    *,
    external: Cohort | CohortBuild | None = None,
    expression: bool = False,
) -> dict[str, pa.Table]:
    """The tables of a cohort build, as Arrow, keyed by their SQL names."""
    cohort = build.cohort
    tables: dict[str, pa.Table] = {
        "cohort": cohort.to_arrow(),
        "patients": pa.Table.from_pandas(cohort.patients(), preserve_index=False),
        "scores": _scores_table(build),
        "signatures": pa.Table.from_pylist(
            [
                {"signature": s.name, "gene": g, "source": s.source, "doi": s.doi}
                for s in build.signatures
                for g in s.genes
            ]
        ),
    }
    if expression:
        data = build.patients.data
        stacked = data.stack()
        tables["expression"] = pa.table(
            {
                "patient_id": stacked.index.get_level_values(0).astype(str),
                "gene": stacked.index.get_level_values(1).astype(str),
                "log2_expression": stacked.to_numpy(),
            }
        )
    if external is not None:
        ext = external.cohort if hasattr(external, "cohort") else external
        tables["external"] = ext.to_arrow()
    return tables


def _scores_table(build: CohortBuild) -> pa.Table:
    rows = []
    for score, label in zip(build.scores, build.labels, strict=True):
        labels = label.table["label"]
        for patient, value in score.scores.items():
            rows.append(
                {
                    "patient_id": str(patient),
                    "signature": score.signature,
                    "method": score.method,
                    "score": float(value),
                    "label": str(labels.get(patient)),
                }
            )
    return pa.Table.from_pylist(rows)


def connect(
    store: FeatureStore | str | None = None,
    *,
    tables: Mapping[str, Any] | None = None,
    encoder: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with ``tables`` registered, beside the store's views when a
    store (a ``FeatureStore`` or its URI) is given."""
    tables = dict(tables or {})
    for name in tables:
        if not _IDENTIFIER.fullmatch(name) or name in _STORE_TABLES:
            raise ConfigError(
                f"table name {name!r} must be a plain identifier other than {sorted(_STORE_TABLES)}"
            )
    if store is None:
        import duckdb

        con = duckdb.connect()
        for name, table in tables.items():
            con.register(name, table)
        return con
    if isinstance(store, str):
        from features.store import FeatureStore

        store = FeatureStore.open(store, storage_options, create=False)
    return store.duckdb(encoder=encoder, tables=tables)
