"""Clinical columns kept in the store beside the slides, set without re-encoding.

``slidebank slides set TABLE --store S`` puts ``patient_id`` on the slides rows and every
other column of TABLE (grade, stage, MSI, survival...) into the store's derived table
``slide_features/clinical``: one row per (slide, column), as text, so a later table may
add columns or replace values of some slides without a schema change. Each write is a
new store version (the derived table's write rule: a slide's newest write wins), and a
second `slides set` that names other columns keeps the first one's.

Probe, cohort build and train read it as a labels table by naming ``store:clinical``
instead of a file (:func:`clinical_labels`): slide_id, the store's patient_id, and one
column per clinical field (numeric where every value parses as a number).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["KIND", "PREFIX", "clinical_labels", "is_store_labels", "write_clinical"]

KIND = "slide_features"
#: a labels argument naming the store's clinical table, e.g. ``store:clinical``
PREFIX = "store:"
DEFAULT_NAME = "clinical"


def is_store_labels(labels: Any) -> bool:
    return isinstance(labels, str) and labels.startswith(PREFIX)


def _long_rows(store: FeatureStore, name: str, slide_ids: list[str]) -> pd.DataFrame:
    from features.store import StoreNotFoundError

    try:
        table = store.derived(KIND, name, slide_ids=slide_ids)
    except StoreNotFoundError:
        return pd.DataFrame(columns=["slide_id", "column", "value"])
    return table.to_pandas()[["slide_id", "column", "value"]]


def write_clinical(
    store: FeatureStore, values: Mapping[str, Mapping[str, str]], *, name: str = DEFAULT_NAME
) -> int:
    """Merge ``values`` (slide_id -> {column: text}) into ``slide_features/<name>``:
    the given cells replace the stored ones, other stored columns stay. Returns the
    number of slides written."""
    import pyarrow as pa

    if not values:
        return 0
    old = _long_rows(store, name, sorted(values))
    merged: dict[str, dict[str, str]] = {}
    for sid, column, value in old.itertuples(index=False):
        merged.setdefault(str(sid), {})[str(column)] = str(value)
    for sid, cells in values.items():
        merged.setdefault(sid, {}).update(cells)
    rows = {
        sid: pa.table(
            {
                "column": pa.array(list(cells), pa.string()),
                "value": pa.array(list(cells.values()), pa.string()),
            }
        )
        for sid, cells in merged.items()
        if sid in values
    }
    store.write_derived(KIND, name, rows)
    return len(rows)


def clinical_labels(store: FeatureStore, labels: str) -> pd.DataFrame:
    """The labels table named ``store:<name>``: slide_id, the store's patient_id and one
    column per clinical field of ``slide_features/<name>``."""
    from features.store import StoreNotFoundError

    name = labels.removeprefix(PREFIX) or DEFAULT_NAME
    try:
        long = store.derived(KIND, name).to_pandas()
    except StoreNotFoundError as exc:
        raise ConfigError(
            f"{labels}: the store has no table {KIND}/{name}; slidebank slides set TABLE "
            "--store STORE writes the columns of TABLE into it"
        ) from exc
    if long.empty or "column" not in long.columns:
        raise ConfigError(f"{labels}: table {KIND}/{name} holds no clinical columns")
    wide = long.pivot(index="slide_id", columns="column", values="value")
    wide.columns.name = None
    for column in wide.columns:
        numbers = pd.to_numeric(wide[column], errors="coerce")
        if numbers.notna().sum() == wide[column].notna().sum():
            wide[column] = numbers
    wide = wide.reset_index()
    wide.insert(0, "slide_id", wide.pop("slide_id").astype("string"))
    return wide
