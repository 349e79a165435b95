"""Several labels (six genes, a signature panel) probed on one set of patient folds.

The folds are drawn once, over every patient any label reaches, so labels differ only in
what is predicted, never in how the cohort was cut. Each label gets the probe's usual
files in ``<out>/<label>/``; ``<out>/summary.tsv`` has one row per label: the headline
metric with its 95% CI, a patient-bootstrap p-value against chance, and the
Benjamini-Hochberg q-value across the labels. A label that cannot be probed (one class,
empty) gets a row saying why instead of stopping the others.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError, SlidebankError
from training.cohorts.errors import SplitError

if TYPE_CHECKING:
    from features.store import FeatureStore
    from training.probe.run import ProbeConfig, ProbeResult

__all__ = ["ProbeTable", "expand_labels", "is_pattern", "patient_folds", "run_probe_labels"]

log = logging.getLogger(__name__)

_GLOB = re.compile(r"[*?\[]")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
COLUMNS = [
    "label",
    "task",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_slides",
    "n_patients",
    "p_value",
    "q_value",
    "error",
]


@dataclass
class ProbeTable:
    """One row per label in ``table`` (sorted by q-value), each label's full result."""

    table: pd.DataFrame
    results: dict[str, ProbeResult]
    #: patient_id → fold, shared by every label
    patient_folds: dict[str, int]
    files: dict[str, str] = field(default_factory=dict)


def is_pattern(label: str) -> bool:
    """Whether ``label`` is a glob (``gene_*``) rather than one column name."""
    return bool(_GLOB.search(label))


def expand_labels(
    columns: Sequence[str], patterns: Sequence[str], *, all_labels: bool = False
) -> list[str]:
    """Label names from ``patterns`` (names or globs such as ``gene_*``), in order, once
    each; ``all_labels``: every column but slide_id and patient_id."""
    from training.cohorts.labels import KEYS

    available = [str(c) for c in columns if c not in KEYS]
    wanted = list(available) if all_labels else []
    for pattern in patterns:
        if not is_pattern(pattern):
            wanted.append(pattern)
            continue
        hits = fnmatch.filter(available, pattern)
        if not hits:
            raise ConfigError(
                f"--label {pattern!r} matches no column of the labels table "
                f"(it has {', '.join(available[:12])})"
            )
        wanted.extend(hits)
    if not wanted:
        raise ConfigError(
            "no label to probe: pass --label (repeatable, globs allowed) or --labels-all"
        )
    return list(dict.fromkeys(wanted))


def patient_folds(patients: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each patient's fold: a seeded shuffle dealt round-robin, so fold sizes differ by one."""
    unique = np.unique(np.asarray(patients, dtype=str))
    n = min(folds, len(unique))
    if n < 2:
        raise SplitError(f"cross-validation needs at least 2 patients, found {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    return {str(unique[i]): rank % n for rank, i in enumerate(order)}


def _folder_names(names: Sequence[str]) -> dict[str, str]:
    """A folder name per label: the label with anything but letters, digits, ._- as _."""
    folders = {name: _SAFE.sub("_", name).lstrip(".") or "_" for name in names}
    seen: dict[str, str] = {}
    for name, folder in folders.items():
        if folder in seen:
            raise ConfigError(
                f"labels {seen[folder]!r} and {name!r} would share the folder "
                f"{folder!r}; rename one"
            )
        seen[folder] = name
    return folders


def run_probe_labels(
    store: FeatureStore,
    labels: Any,
    config: ProbeConfig,
    patterns: Sequence[str],
    *,
    all_labels: bool = False,
    out_dir: str | Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ProbeTable:
    """Probe every label named by ``patterns`` (see :func:`expand_labels`) with ``config``
    on shared patient folds; with ``out_dir``, write each label's files and summary.tsv."""
    from training.probe.run import load_labels, probe_rows

    table, source = load_labels(labels, storage_options, store)
    names = expand_labels(list(table.columns), patterns, all_labels=all_labels)
    folders = _folder_names(names)
    emb = store.slide_embeddings(encoder=config.encoder, config_hash=config.config_hash)
    rows: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            rows[name] = probe_rows(emb, table, replace(config, label=name), source)
        except SlidebankError as error:
            errors[name] = str(error)
    if not rows:
        raise ConfigError(
            f"no label could be probed: {'; '.join(f'{k}: {v}' for k, v in errors.items())}"
        )
    patients = np.concatenate(
        [frame["patient_id"].astype(str).to_numpy() for frame, _, _ in rows.values()]
    )
    folds = patient_folds(list(patients), config.folds, config.seed)
    results = _fit_all(rows, config, folds, errors, out_dir, folders)
    summary = summary_table(names, results, errors)
    out = ProbeTable(table=summary, results=results, patient_folds=folds)
    if out_dir is not None:
        out.files = _write_summary(Path(out_dir), summary, folds)
    return out


def _fit_all(
    rows: Mapping[str, Any],
    config: ProbeConfig,
    folds: Mapping[str, int],
    errors: dict[str, str],
    out_dir: str | Path | None,
    folders: Mapping[str, str],
) -> dict[str, ProbeResult]:
    from training.probe.run import fit_probe

    results = {}
    for name, (frame, x, dropped) in rows.items():
        target = None if out_dir is None else Path(out_dir) / folders[name]
        try:
            results[name] = fit_probe(
                frame, x, dropped, replace(config, label=name), out_dir=target, patient_folds=folds
            )
        except SlidebankError as error:
            log.warning("probe of %r not run: %s", name, error)
            errors[name] = str(error)
    return results


def summary_table(
    names: Sequence[str], results: Mapping[str, ProbeResult], errors: Mapping[str, str]
) -> pd.DataFrame:
    """One row per label, q-values over the labels that ran, sorted by q then p."""
    from training.probe.metrics import bh_qvalues

    records: list[dict[str, Any]] = []
    for name in names:
        if name not in results:
            records.append({"label": name, "error": errors.get(name, "not run")})
            continue
        result = results[name]
        metric = result.test["metric"]
        records.append(
            {
                "label": name,
                "task": result.task,
                "metric": metric,
                **result.metrics[metric],
                "n_slides": result.n_slides,
                "n_patients": result.n_patients,
                "p_value": result.test["p_value"],
                "error": "",
            }
        )
    table = pd.DataFrame.from_records(records).reindex(columns=COLUMNS)
    table["q_value"] = bh_qvalues(table["p_value"].to_numpy(dtype=float))
    table["error"] = table["error"].fillna("")
    table[["n_slides", "n_patients"]] = table[["n_slides", "n_patients"]].astype("Int64")
    return table.sort_values(
        ["q_value", "p_value", "label"], na_position="last", kind="mergesort"
    ).reset_index(drop=True)


def _write_summary(out: Path, summary: pd.DataFrame, folds: Mapping[str, int]) -> dict[str, str]:
    from infra.files import atomic_write_text
    from training.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "summary.tsv", summary.to_csv(sep="\t", index=False, float_format="%.6g")
    )
    fold_table = pd.DataFrame({"patient_id": list(folds), "fold": list(folds.values())})
    atomic_write_text(out / "folds.tsv", fold_table.to_csv(sep="\t", index=False))
    report = write_report(out)
    return {
        "summary": str(out / "summary.tsv"),
        "folds": str(out / "folds.tsv"),
        "report": str(report),
    }
