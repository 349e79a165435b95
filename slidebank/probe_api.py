"""The facade's data-science operations: open a store, probe a label on slide embeddings.

>>> import slidebank as sb
>>> store = sb.open_store("slidebank-demo/store")
>>> result = sb.probe(store, "labels.csv", label="immune", model="logistic")
>>> result.metrics["auroc"]
>>> panel = sb.probe(store, "genes.tsv", label=["CD8A", "gene_*"], model="linear")
>>> panel.table                      # one row per label, sorted by BH q-value
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["open_store", "probe"]


def open_store(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    create: bool = False,
    version: int | str | None = None,
) -> Any:
    """A :class:`~features.store.FeatureStore`; a missing one is an error unless ``create``."""
    from features.store import FeatureStore

    return FeatureStore.open(uri, storage_options, create=create, version=version)


def probe(
    store: FeatureStore | str,
    labels: Any,
    *,
    label: str | Sequence[str] | None = None,
    model: str = "logistic",
    task: str = "auto",
    pooling: str = "mean",
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    k: int = 15,
    encoder: str | None = None,
    out_dir: str | Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
    positive: str | None = None,
    aggregate: str = "slide",
    labels_all: bool = False,
    slide_table: Any = None,
) -> Any:
    """Linear / logistic / kNN probe of ``label`` (a column of the ``labels`` table,
    keyed by slide_id or patient_id) on pooled slide embeddings, patient-level CV.

    ``label`` a list, a glob (``"gene_*"``) or ``labels_all=True``: every label on one
    set of patient folds; returns a :class:`training.probe.ProbeTable` whose ``table``
    has one row per label (headline metric, 95% CI, n, patient-bootstrap p-value,
    Benjamini-Hochberg q-value), sorted by q; ``out_dir`` gets summary.tsv, folds.tsv
    and one folder per label. ``aggregate="patient"``: metrics on each patient's mean
    of its slides' predictions.

    ``store`` is a FeatureStore or its URI; ``labels`` a path (csv/tsv/parquet) or a
    DataFrame. ``positive``: the class a two-class label's curves and scores are about
    (default: the one named High/1/True/yes/positive, as ``slidebank train`` encodes it;
    else an error). Returns a :class:`training.probe.ProbeResult` (metrics with 95% CIs,
    out-of-fold predictions; with ``out_dir``, also predictions.parquet, metrics.json
    and probe.png).

    ``slide_table`` (a path or DataFrame with slide_id and patient_id) maps a ``labels``
    table keyed by patient_id to the slides, for a clinical table and a slide table kept
    apart (STAMP's habit); nothing is written to the store.
    """
    from infra.errors import ConfigError
    from training.probe import ProbeConfig, run_probe, run_probe_labels
    from training.probe.multi import is_pattern

    if label is None and not labels_all:
        raise ConfigError("probe needs label= (a name, a list or a glob) or labels_all=True")
    if isinstance(store, str | Path):
        store = open_store(str(store), storage_options)
    if slide_table is not None:
        labels = _with_slide_table(labels, slide_table, storage_options)
    single = isinstance(label, str) and not is_pattern(label) and not labels_all
    config = ProbeConfig(
        label=label if isinstance(label, str) and single else "",
        model=model,
        task=task,
        pooling=pooling,
        folds=folds,
        seed=seed,
        n_boot=n_boot,
        k=k,
        encoder=encoder,
        positive=positive,
        aggregate=aggregate,
    )
    if single:
        return run_probe(store, labels, config, out_dir=out_dir, storage_options=storage_options)
    patterns = [label] if isinstance(label, str) else list(label or [])
    return run_probe_labels(
        store,
        labels,
        config,
        patterns,
        all_labels=labels_all,
        out_dir=out_dir,
        storage_options=storage_options,
    )


def _with_slide_table(
    labels: Any, slide_table: Any, storage_options: Mapping[str, Any] | None
) -> Any:
    import pandas as pd

    from training.cohorts.labels import read_labels, with_slide_table

    source = "the labels table" if isinstance(labels, pd.DataFrame) else str(labels)
    table = labels if isinstance(labels, pd.DataFrame) else read_labels(source, storage_options)
    slides = slide_table if isinstance(slide_table, pd.DataFrame) else str(slide_table)
    return with_slide_table(table, slides, storage_options, source=source)
