"""Bags from the feature store joined with cohort labels.

A :class:`BagDataset` holds only slide ids and targets. Without a cache each bag is read
from the store when it is needed (one slide at a time), so memory is bounded by the
largest bag. With ``cache=True`` the first access reads *every* bag of the dataset in
one scan of the tiles table and keeps them in memory: one query per slide costs a
gate lookup and a filtered scan (~8 ms each on a laptop, more on object storage),
which made per-epoch store reads the bottleneck of training on small embeddings
(``benchmarks/train.py``). ``max_patches`` bounds a bag by random subsampling (fresh
per epoch in training, fixed for evaluation so validation metrics are comparable
across epochs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["BagDataset", "BagItem", "class_weights", "targets_from_cohort"]

HIGH = "High"


@dataclass(frozen=True)
class BagItem:
    slide_id: str
    target: tuple[float, ...]
    patient_id: str = ""


def _high(values: pd.Series, label: str) -> np.ndarray:
    """1 for the positive class. Numbers and booleans are taken as coded (1/True is
    positive; ``slidebank train`` codes the labels so, see :mod:`training.mil.labels`).
    Text is resolved by probe's rule: the class named High/1/True/yes/positive in any
    case; two classes neither (or both) named so are an error asking which is positive."""
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        from training.probe.classes import POSITIVE_NAMES, positive_class

        text = values.astype(str)
        classes = sorted(set(text))
        if len(classes) == 1:  # a split with one class: positive only if named so
            return np.full(len(text), float(classes[0].strip().casefold() in POSITIVE_NAMES))
        positive = positive_class(classes, None, label=label)
        return (text == positive).to_numpy(dtype=float)
    return values.astype(float).to_numpy()


def targets_from_cohort(
    table: pd.DataFrame, task: str, columns: Sequence[str], *, classes: Sequence[str] | None = None
) -> tuple[list[BagItem], list[str]]:
    """Items (slide, target) for ``task`` from cohort ``columns``, and the class names.

    Rows with a missing target are dropped (a slide whose patient has no omics value).
    """
    columns = list(columns)
    missing = [c for c in [*columns, "slide_id"] if c not in table.columns]
    if missing:
        raise ConfigError(f"cohort has no column(s) {missing}; it has {list(table.columns)}")
    if task in ("binary", "multiclass") and len(columns) != 1:
        raise ConfigError(f"task {task!r} takes one label column, got {columns}")
    table = table.dropna(subset=columns)
    names: list[str] = list(columns)
    if task == "binary":
        values = _high(table[columns[0]], columns[0])[:, None]
        names = ["not " + HIGH, HIGH]
    elif task == "multiclass":
        names = list(classes) if classes else sorted(table[columns[0]].astype(str).unique())
        lookup = {name: i for i, name in enumerate(names)}
        unknown = set(table[columns[0]].astype(str)) - set(lookup)
        if unknown:
            raise ConfigError(f"labels {sorted(unknown)} are not among classes {names}")
        values = table[columns[0]].astype(str).map(lookup).to_numpy(dtype=float)[:, None]
    elif task == "multisignature":
        values = np.stack([_high(table[c], c) for c in columns], axis=1)
    else:
        values = table[columns].to_numpy(dtype=float)
    patients = table["patient_id"].astype(str) if "patient_id" in table else table["slide_id"]
    items = [
        BagItem(str(s), tuple(float(v) for v in row), str(p))
        for s, row, p in zip(table["slide_id"], values, patients, strict=True)
    ]
    return items, names


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights with mean 1 (0 for an absent class)."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


class BagDataset:
    """Indexable bags: ``dataset[i]`` is (embeddings (N, D) float32 tensor, coords (N, 2),
    target tensor, slide id). Picklable: it carries the store URI, not an open store."""

    def __init__(
        self,
        store_uri: str,
        items: Sequence[BagItem],
        *,
        encoder: str | None = None,
        max_patches: int | None = None,
        seed: int = 0,
        train: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        cache: bool = False,
    ) -> None:
        if max_patches is not None and max_patches < 1:
            raise ConfigError(f"max_patches must be >= 1, got {max_patches}")
        self.store_uri = store_uri
        self.items = list(items)
        self.encoder = encoder
        self.max_patches = max_patches
        self.seed = seed
        self.train = train
        self.storage_options = dict(storage_options or {})
        self.cache = cache
        self.epoch = 0
        self._store: FeatureStore | None = None  # opened lazily, in the worker
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None  # reopened in the worker process
        state["_cache"] = {}
        return state

    def __len__(self) -> int:
        return len(self.items)

    def share_cache(self, cache: dict[str, tuple[np.ndarray, np.ndarray]]) -> BagDataset:
        """Use ``cache`` (slide -> (embeddings, coords)) as this dataset's bag cache, so
        several datasets over one cohort (folds, splits) read each bag once."""
        self.cache = True
        self._cache = cache
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def store(self) -> Any:
        if self._store is None:
            from features.store import FeatureStore

            self._store = FeatureStore.open(self.store_uri, self.storage_options, create=False)
        return self._store

    def preload(self) -> None:
        """Read all bags not yet cached with one scan of the tiles table (visible rows only)
        into the cache; a slide with no tiles is an error, as in :meth:`read`."""
        wanted = sorted({item.slide_id for item in self.items} - set(self._cache))
        if not wanted:
            return
        from features.store.schema import embeddings_to_numpy

        table = self.store().tiles(
            encoder=self.encoder, slide_ids=wanted, columns=["slide_id", "x", "y", "embedding"]
        )
        ids = np.asarray(table.column("slide_id").to_numpy(zero_copy_only=False)).astype(str)
        emb = embeddings_to_numpy(table.column("embedding")).astype(np.float32, copy=False)
        coords = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], 1).astype(
            np.int64
        )
        # Stable sort keeps each slide's tiles in scan order, the order a per-slide read gives.
        order = np.argsort(ids, kind="stable")
        names, starts = np.unique(ids[order], return_index=True)
        bounds = [*starts[1:], len(order)]
        for name, start, end in zip(names, starts, bounds, strict=True):
            rows = order[start:end]
            self._cache[str(name)] = (np.ascontiguousarray(emb[rows]), coords[rows])
        missing = [s for s in wanted if s not in self._cache]
        if missing:
            raise ConfigError(
                f"slide {missing[0]!r} has no tiles for encoder {self.encoder!r}"
                f" ({len(missing)} slides without tiles)"
            )

    def read(self, slide_id: str) -> tuple[np.ndarray, np.ndarray]:
        if slide_id not in self._cache and self.cache:
            self.preload()
        if slide_id in self._cache:
            return self._cache[slide_id]
        bag = self.store().bag(slide_id, encoder=self.encoder)
        if len(bag) == 0:
            raise ConfigError(f"slide {slide_id!r} has no tiles for encoder {self.encoder!r}")
        out = (np.asarray(bag.embeddings, dtype=np.float32), np.asarray(bag.coords))
        if self.cache:
            self._cache[slide_id] = out
        return out

    def __getitem__(self, index: int) -> tuple[Any, Any, Any, str]:
        import torch

        item = self.items[index]
        emb, coords = self.read(item.slide_id)
        if self.max_patches is not None and len(emb) > self.max_patches:
            # Per (seed, epoch, slide) so every worker draws the same subset for a slide.
            epoch = self.epoch if self.train else 0
            rng = np.random.default_rng([self.seed, epoch, index])
            keep = np.sort(rng.choice(len(emb), self.max_patches, replace=False))
            emb, coords = emb[keep], coords[keep]
        target = torch.tensor(item.target, dtype=torch.float32)
        return (
            torch.from_numpy(np.ascontiguousarray(emb)),
            torch.from_numpy(coords),
            target,
            item.slide_id,
        )
