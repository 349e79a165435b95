"""One probe: slide embeddings ⋈ labels → patient-level CV → metrics, predictions, PNG."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from infra.errors import ConfigError
from infra.validate import at_least, choice
from training.cohorts.errors import SplitError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["ProbeConfig", "ProbeResult", "probe_frame", "run_probe"]

log = logging.getLogger(__name__)

Model = Literal["logistic", "linear", "knn"]
Task = Literal["auto", "classification", "regression"]
Pooling = Literal["mean", "max"]
Aggregate = Literal["slide", "patient", "patient-max"]
MAX_CLASSES = 20


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe. ``model``: ``logistic`` (classification), ``linear`` (ridge:
    regression, or a ridge classifier), ``knn`` (cosine kNN, ``k`` neighbours)."""

    label: str
    model: Model = "logistic"
    task: Task = "auto"
    pooling: Pooling = "mean"
    folds: int = 5
    seed: int = 0
    n_boot: int = 1000
    k: int = 15
    c: float = 1.0
    encoder: str | None = None
    config_hash: str | None = None
    #: the positive class of a two-class label (None: High/1/True/yes, see classes.py)
    positive: str | None = None
    #: the unit metrics are computed on: each slide, or each patient (the mean of its
    #: slides' scores, or with "patient-max" the highest, for a two-class label)
    aggregate: Aggregate = "slide"

    def __post_init__(self) -> None:
        choice("ProbeConfig.model", self.model, Model)
        choice("ProbeConfig.aggregate", self.aggregate, Aggregate)
        choice("ProbeConfig.task", self.task, Task)
        choice("ProbeConfig.pooling", self.pooling, Pooling)
        at_least("ProbeConfig.folds", self.folds, 2)


@dataclass
class ProbeResult:
    task: str
    metrics: dict[str, dict[str, float]]
    predictions: pd.DataFrame
    n_slides: int
    n_patients: int
    folds: int
    classes: list[str] = field(default_factory=list)
    #: two classes: {"positive": ..., "negative": ...}, what the scores and curves are for
    class_mapping: dict[str, str] = field(default_factory=dict)
    #: labelled rows not used, by reason: store slides without a label, unknown slides
    dropped: dict[str, list[str]] = field(default_factory=dict)
    plot: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: "slide" or "patient": the unit of ``metrics`` (patient: means of its slides' scores)
    aggregate: str = "slide"
    #: with ``aggregate="patient"``, one out-of-fold prediction per patient
    patient_predictions: pd.DataFrame | None = None
    #: the headline metric's test against chance: metric, null, p_value, method
    test: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n_slides": self.n_slides,
            "n_patients": self.n_patients,
            "folds": self.folds,
            "aggregate": self.aggregate,
            "classes": self.classes,
            "class_mapping": self.class_mapping,
            "metrics": self.metrics,
            "test": self.test,
            "dropped": self.dropped,
            "files": self.files,
            "config": self.config,
        }


def _task(values: pd.Series, task: Task) -> str:
    if task != "auto":
        return task
    numeric = pd.api.types.is_numeric_dtype(values)
    if not numeric:
        return "classification"
    integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    return "classification" if integral and values.nunique() <= MAX_CLASSES else "regression"


def probe_frame(
    store: FeatureStore,
    labels: Any,
    config: ProbeConfig,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """(slide_id, patient_id, label) rows and their (N, D) slide embeddings."""
    frame, matrix, _ = _probe_rows(store, labels, config, storage_options)
    return frame, matrix


def _probe_rows(
    store: FeatureStore, labels: Any, config: ProbeConfig, storage_options: Mapping[str, Any] | None
) -> tuple[pd.DataFrame, np.ndarray, dict[str, list[str]]]:
    table, source = load_labels(labels, storage_options, store)
    emb = store.slide_embeddings(encoder=config.encoder, config_hash=config.config_hash)
    return probe_rows(emb, table, config, source)


def load_labels(
    labels: Any, storage_options: Mapping[str, Any] | None, store: FeatureStore | None = None
) -> tuple[pd.DataFrame, str]:
    """(the labels table, how to name it in messages) from a path, a DataFrame, or
    ``store:NAME`` (the clinical columns ``slidebank slides set`` kept in ``store``)."""
    from training.cohorts.clinical import clinical_labels, is_store_labels
    from training.cohorts.labels import read_labels

    if isinstance(labels, pd.DataFrame):
        return labels, "the labels table"
    if is_store_labels(labels) and store is not None:
        return clinical_labels(store, labels), labels
    return read_labels(str(labels), storage_options), str(labels)


def probe_rows(
    emb: Any, table: pd.DataFrame, config: ProbeConfig, source: str
) -> tuple[pd.DataFrame, np.ndarray, dict[str, list[str]]]:
    """:func:`probe_frame` from loaded slide embeddings (a pyarrow table) and labels,
    plus what was left out, by id and reason."""
    from features.store.slide_embeddings import to_numpy
    from training.cohorts.labels import join_labels

    slides = emb.select(["slide_id", "patient_id"]).to_pandas()
    joined = join_labels(table, slides, label_columns=[config.label], source=source)
    missing = joined.table[config.label].isna()
    frame = joined.table[~missing].reset_index(drop=True)
    dropped = {
        "label_missing": sorted(map(str, joined.table.loc[missing, "slide_id"])),
        "no_label_row": sorted(
            set(map(str, slides["slide_id"])) - set(map(str, joined.table["slide_id"]))
        ),
        "not_in_store": [*joined.unknown_slides, *joined.unknown_patients],
    }
    dropped = {k: v for k, v in dropped.items() if v}
    for reason, ids in dropped.items():
        log.warning(
            "probe of %r: %d %s left out (%s)",
            config.label,
            len(ids),
            reason.replace("_", " "),
            ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
        )
    if frame.empty:
        raise ConfigError(f"label {config.label!r} is empty for every slide in the store")
    order = {s: i for i, s in enumerate(emb.column("slide_id").to_pylist())}
    matrix = to_numpy(emb, config.pooling)[[order[s] for s in frame["slide_id"]]]
    return frame, matrix, dropped


def _estimator(config: ProbeConfig, task: str, n_train: int) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if config.model == "knn":
        k = max(1, min(config.k, n_train - 1))
        cls = KNeighborsClassifier if task == "classification" else KNeighborsRegressor
        return make_pipeline(StandardScaler(), cls(n_neighbors=k, metric="cosine"))
    if task == "regression":
        if config.model == "logistic":
            raise ConfigError(
                "a logistic probe needs class labels; use --model linear or knn "
                "for a continuous label"
            )
        return make_pipeline(StandardScaler(), Ridge(alpha=1.0 / config.c))
    if config.model == "linear":
        return make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0 / config.c))
    return make_pipeline(StandardScaler(), LogisticRegression(C=config.c, max_iter=2000))


def _scores(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    decision = np.asarray(model.decision_function(x))
    return np.stack([-decision, decision], axis=1) if decision.ndim == 1 else decision


def _folds(
    y: np.ndarray | None, groups: np.ndarray, config: ProbeConfig, classes: list[str] | None = None
) -> list[tuple[Any, Any]]:
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if y is None:
        n = min(config.folds, n_groups)
        if n < 2:
            raise SplitError(f"cross-validation needs at least 2 patients, found {n_groups}")
        return list(GroupKFold(n_splits=n).split(groups, groups=groups))
    per_class = _patients_per_class(y, groups, classes)
    smallest = int(per_class.min())
    n = min(config.folds, smallest)
    if n < config.folds:
        log.warning(
            "%d folds instead of %d: class %r has %d patients",
            n,
            config.folds,
            per_class.idxmin(),
            smallest,
        )
    splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=config.seed)
    return list(splitter.split(groups, y, groups=groups))


def _patients_per_class(y: np.ndarray, groups: np.ndarray, classes: list[str] | None) -> pd.Series:
    """Patients per class, checked: two classes or more, each with two patients or more."""
    names = np.asarray(classes)[y] if classes else y
    per_class = pd.Series(groups).groupby(names).nunique()
    if len(per_class) < 2:
        raise SplitError(f"the label has one class only ({per_class.index[0]!r})")
    smallest = int(per_class.min())
    if smallest < 2:
        raise SplitError(
            f"class {per_class.idxmin()!r} has {smallest} patient(s); patient-level "
            "cross-validation needs at least 2 per class"
        )
    return per_class


def _fixed_folds(groups: np.ndarray, patient_folds: Mapping[str, int]) -> list[tuple[Any, Any]]:
    """(train, test) row indices from a patient → fold map; a fold with no rows is skipped."""
    missing = sorted(set(groups) - set(patient_folds))
    if missing:
        raise SplitError(f"patient(s) without a fold: {', '.join(missing[:5])}")
    fold = np.array([patient_folds[g] for g in groups])
    if len(np.unique(fold)) < 2:
        raise SplitError(
            f"the labelled patients ({len(set(groups))}) all fall in one of the "
            "shared folds; cross-validation needs them in two or more"
        )
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in np.unique(fold)]


def run_probe(
    store: FeatureStore,
    labels: Any,
    config: ProbeConfig,
    *,
    out_dir: str | Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ProbeResult:
    """Fit the probe with patient-level CV; write predictions, metrics and a PNG to ``out_dir``."""
    frame, x, dropped = _probe_rows(store, labels, config, storage_options)
    return fit_probe(frame, x, dropped, config, out_dir=out_dir)


def fit_probe(
    frame: pd.DataFrame,
    x: np.ndarray,
    dropped: dict[str, list[str]],
    config: ProbeConfig,
    *,
    out_dir: str | Path | None = None,
    patient_folds: Mapping[str, int] | None = None,
) -> ProbeResult:
    """The probe on rows from :func:`probe_rows`. ``patient_folds`` (patient_id → fold)
    fixes the folds, so that several labels share them; else they are drawn per label,
    stratified by class."""
    from training.probe.aggregate import headline_test, patient_means, unit_metrics

    task = _task(frame[config.label], config.task)
    groups = frame["patient_id"].astype(str).to_numpy()
    y, classes, splits, positive = _targets(frame, task, groups, config, patient_folds)
    scores, fold = _cross_validate(x, y, splits, task, len(classes), config)
    mapping: dict[str, str] = {}
    if positive is not None:
        if classes[0] == positive:  # folds were drawn on the sorted coding; only the naming flips
            classes, y, scores = classes[::-1], 1 - y, scores[:, ::-1]
        mapping = {"positive": classes[1], "negative": classes[0]}
    predictions = _predictions(frame, fold, scores, classes, mapping, config)
    per_patient = None
    if config.aggregate != "slide":
        how = "max" if config.aggregate == "patient-max" else "mean"
        per_patient, y, scores, groups = patient_means(
            predictions, y, scores, classes, config.label, how=how
        )
    result = ProbeResult(
        task=task,
        metrics=unit_metrics(task, y, scores, groups, config),
        predictions=predictions,
        n_slides=len(frame),
        n_patients=len(np.unique(groups)),
        folds=len(splits),
        classes=classes,
        class_mapping=mapping,
        dropped=dropped,
        config=asdict(config),
        aggregate=config.aggregate,
        patient_predictions=per_patient,
        test=headline_test(task, y, scores, groups, config),
    )
    if out_dir is not None:
        _write(result, Path(out_dir), y, scores, groups, config)
    return result


def _targets(
    frame: pd.DataFrame,
    task: str,
    groups: np.ndarray,
    config: ProbeConfig,
    patient_folds: Mapping[str, int] | None = None,
) -> tuple[np.ndarray, list[str], list[tuple[Any, Any]], str | None]:
    """(y, classes, folds, the positive class of a two-class label), checked before any fit."""
    from training.probe.classes import positive_class

    if task != "classification":
        if config.positive is not None:
            raise ConfigError(f"--positive is for a class label; {config.label!r} is continuous")
        y = pd.to_numeric(frame[config.label], errors="raise").to_numpy(dtype=float)
        splits = (
            _folds(None, groups, config)
            if patient_folds is None
            else _fixed_folds(groups, patient_folds)
        )
        return y, [], splits, None
    codes, uniques = pd.factorize(frame[config.label], sort=True)
    classes = [str(u) for u in uniques]
    y = codes.astype(int)
    if patient_folds is None:
        splits = _folds(y, groups, config, classes)
    else:
        _patients_per_class(y, groups, classes)
        splits = _fixed_folds(groups, patient_folds)
    positive = None
    if len(classes) == 2 or config.positive is not None:
        positive = positive_class(classes, config.positive, label=config.label)
    return y, classes, splits, positive


def _cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    splits: list[tuple[Any, Any]],
    task: str,
    n_classes: int,
    config: ProbeConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores (N, classes) or (N, 1), and each row's fold."""
    scores = np.zeros((len(y), n_classes if task == "classification" else 1))
    fold = np.full(len(y), -1)
    for i, (train, test) in enumerate(splits):
        model = _estimator(config, task, len(train))
        model.fit(x[train], y[train])
        fold[test] = i
        if task == "classification":
            if len(np.unique(y[train])) < n_classes:
                raise SplitError(f"fold {i}: a class has no training patients")
            scores[test] = _scores(model, x[test], n_classes)
        else:
            scores[test, 0] = model.predict(x[test])
    return scores, fold


def _predictions(
    frame: pd.DataFrame,
    fold: np.ndarray,
    scores: np.ndarray,
    classes: list[str],
    mapping: Mapping[str, str],
    config: ProbeConfig,
) -> pd.DataFrame:
    predictions = frame[["slide_id", "patient_id", config.label]].copy()
    predictions["fold"] = fold
    if not classes:
        predictions["predicted"] = scores[:, 0]
        return predictions
    for j, name in enumerate(classes):
        predictions[f"score_{name}"] = scores[:, j]
    predictions["predicted"] = [classes[j] for j in np.argmax(scores, axis=1)]
    if mapping:  # the file says which class its curves are about, as metrics.json does
        predictions["positive_class"] = mapping["positive"]
    return predictions


def _write(
    result: ProbeResult,
    out: Path,
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    config: ProbeConfig,
) -> None:
    from infra.files import atomic_write, atomic_write_json
    from training.report import REPORT_NAME, write_report

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "predictions.parquet", "wb") as handle:
        result.predictions.to_parquet(handle, index=False)
    result.files = {"predictions": str(out / "predictions.parquet")}
    if result.patient_predictions is not None:
        with atomic_write(out / "patient_predictions.parquet", "wb") as handle:
            result.patient_predictions.to_parquet(handle, index=False)
        result.files["patient_predictions"] = str(out / "patient_predictions.parquet")
    result.plot = _plot(result, out / "probe.png", y, scores, groups, config)
    result.files |= {
        "plot": str(result.plot),
        "metrics": str(out / "metrics.json"),
        "report": str(out / REPORT_NAME),
    }
    atomic_write_json(out / "metrics.json", result.summary())
    write_report(out)  # read back from the files above: the page shows what was written


def plot_title(result: ProbeResult, config: ProbeConfig) -> str:
    """What a figure shown alone must say: label, model, slides and patients, the unit."""
    unit = {"patient": "; metrics on patient means", "patient-max": "; metrics on patient maxima"}
    unit_text = unit.get(result.aggregate, "")
    return (
        f"{config.label}: {config.model} probe on {config.pooling}-pooled slide embeddings\n"
        f"{result.n_slides} slides, {result.n_patients} patients, "
        f"{result.folds} patient-level folds{unit_text}"
    )


def _plot(
    result: ProbeResult,
    plot: Path,
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    config: ProbeConfig,
) -> Path:
    from training.figures import write_regression_png, write_roc_calibration_png

    title = plot_title(result, config)
    unit = "slides" if result.aggregate == "slide" else "patients"
    if result.task == "regression":
        return write_regression_png(
            y,
            scores[:, 0],
            plot,
            metrics=result.metrics,
            label=config.label,
            title=title,
            unit=unit,
        )
    if len(result.classes) == 2:
        name = f"{config.label}={result.classes[1]}"
        return write_roc_calibration_png(
            {name: (y, scores[:, 1])},
            plot,
            aurocs={name: result.metrics["auroc"]},
            groups={name: groups},
            calibration=config.model != "linear",
            title=title,
        )
    curves = {
        f"{c} vs rest": ((y == j).astype(int), scores[:, j]) for j, c in enumerate(result.classes)
    }
    return write_roc_calibration_png(curves, plot, calibration=False, title=title)
