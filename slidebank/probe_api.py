"""The facade's data-science operations: open a store, probe a label on slide embeddings.

>>> import slidebank as sb
>>> store = sb.open_store("slidebank-demo/store")
>>> result = sb.probe(store, "labels.csv", label="immune", model="logistic")
>>> result.metrics["auroc"]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["open_store", "probe"]


def open_store(uri: str, storage_options: Mapping[str, Any] | None = None, *,
               create: bool = False, version: int | str | None = None) -> Any:
    """A :class:`~features.store.FeatureStore`; a missing one is an error unless ``create``."""
    from features.store import FeatureStore

    return FeatureStore.open(uri, storage_options, create=create, version=version)


def probe(store: FeatureStore | str, labels: Any, *, label: str, model: str = "logistic", task: str = "auto",
          pooling: str = "mean", folds: int = 5, seed: int = 0, n_boot: int = 1000,
          k: int = 15, encoder: str | None = None, out_dir: str | Path | None = None,
          storage_options: Mapping[str, Any] | None = None, positive: str | None = None) -> Any:
    """Linear / logistic / kNN probe of ``label`` (a column of the ``labels`` table,
    keyed by slide_id or patient_id) on pooled slide embeddings, patient-level CV.

    ``store`` is a FeatureStore or its URI; ``labels`` a path (csv/tsv/parquet) or a
    DataFrame. ``positive``: the class a two-class label's curves and scores are about
    (default: the one named High/1/True/yes/positive, as ``slidebank train`` encodes it;
    else an error). Returns a :class:`training.probe.ProbeResult` (metrics with 95% CIs,
    out-of-fold predictions; with ``out_dir``, also predictions.parquet, metrics.json
    and probe.png).
    """
    from training.probe import ProbeConfig, run_probe

    if isinstance(store, str | Path):
        store = open_store(str(store), storage_options)
    config = ProbeConfig(label=label, model=model, task=task, pooling=pooling,
                         folds=folds, seed=seed, n_boot=n_boot, k=k, encoder=encoder,
                         positive=positive)
    return run_probe(store, labels, config, out_dir=out_dir, storage_options=storage_options)
