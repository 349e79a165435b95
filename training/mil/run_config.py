"""The training YAML as a typed, frozen run config (``slidebank train CONFIG.yaml``).

Every key is known: a misspelled key is an error naming it and the keys that exist,
never a silently ignored setting. Defaults live once, on the dataclasses the job uses
(:class:`~training.mil.job.JobConfig`, :class:`~training.mil.train.TrainConfig`,
:class:`~training.mil.models.MILConfig`): a key left out of the YAML is simply not
passed on. Relative paths (store, cohort, external, out, checkpoints) are resolved
against the config file's folder, so a run does not depend on the directory it was
started from (Ray workers run in their own session folder).

    store: ./store
    cohort: cohort.parquet
    encoder: handcrafted-he-v1
    task: binary                 # multiclass | multisignature | regression
    labels: [ayers_ifng6_label]
    model: {model: clam_sb, hidden: 128}
    train: {epochs: 20, lr: 0.0002, patience: 5}
    workers: 2
    cv: true                     # k-fold on the cohort's `fold` column; false: its `split` column
    folds: 4                     # a labels table without fold/split columns gets patient-level ones
    positive: High               # the positive class (default: High/1/True/yes/positive, as probe)
    aggregate: slide             # patient (patient-max): metrics on each patient's mean (highest) slide score
    external: ext.parquet
    slide_table: slides.csv      # slide_id, patient_id, when the cohort is keyed by patient_id
    out: runs/clam               # each run writes to out/<run_id>/
    address: auto                # optional: a running Ray cluster (else RAY_ADDRESS, else embedded)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from infra.errors import ConfigError
from infra.storage import is_local
from infra.validate import choice, require

__all__ = ["TASKS", "TrainRunConfig", "apply_overrides", "load_run_config", "parse_run_config"]

TASKS = ("binary", "multiclass", "multisignature", "regression")
Task = Literal["binary", "multiclass", "multisignature", "regression"]
Aggregate = Literal["slide", "patient", "patient-max"]

#: keys that name a location; resolved against the config file's folder when relative
_PATH_KEYS = ("store", "cohort", "slide_table", "external", "out", "checkpoints")
#: JobConfig fields a YAML key maps onto (YAML name -> JobConfig name)
_JOB_KEYS = {
    "workers": "num_workers",
    "use_gpu": "use_gpu",
    "checkpoints": "storage_path",
    "name": "name",
    "max_failures": "max_failures",
    "cache_bags": "cache_bags",
    "address": "address",
}


@dataclass(frozen=True)
class TrainRunConfig:
    store: str
    cohort: str
    labels: tuple[str, ...]
    out: str
    task: Task = "binary"
    encoder: str | None = None
    cv: bool = True
    external: str | None = None
    #: slide_id, patient_id: maps a cohort keyed by patient_id to slides (STAMP's habit)
    slide_table: str | None = None
    attention: bool = False
    #: folds to assign when the cohort is a plain labels table without ``fold``/``split``
    #: (None: training.cohorts' default)
    folds: int | None = None
    #: the positive class of a binary label (None: High/1/True/yes/positive, as probe)
    positive: str | None = None
    #: the unit metrics are computed on: each slide, or each patient (mean of its slides)
    aggregate: Aggregate = "slide"
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    #: MILConfig fields (model.*), TrainConfig fields (train.*), JobConfig fields (top level)
    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    job: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choice("TrainRunConfig.task", self.task, Task)
        choice("TrainRunConfig.aggregate", self.aggregate, Aggregate)
        if self.positive is not None:  # YAML reads `positive: 1` as a number
            object.__setattr__(self, "positive", str(self.positive))
        require(
            self.labels, "TrainRunConfig.labels", "at least one label (or gene) column", self.labels
        )
        if self.folds is not None:
            require(
                isinstance(self.folds, int)
                and not isinstance(self.folds, bool)
                and self.folds >= 3,
                "TrainRunConfig.folds",
                "an integer >= 3 (a test, a validation and a training fold)",
                self.folds,
            )

    def build(self) -> tuple[Any, Any]:
        """(JobConfig, TrainConfig) with every nested setting validated by its dataclass."""
        from training.mil.job import JobConfig
        from training.mil.models import SPATIAL_MODELS, MILConfig
        from training.mil.train import TrainConfig

        model = MILConfig(**dict(self.model))
        _check_model_options(model)
        train = TrainConfig(**{**dict(self.train), "model": model, "task": self.task})
        if model.model in SPATIAL_MODELS and train.max_patches is not None:
            raise ConfigError(
                f"model {model.model!r} reads the tiles' layout and needs whole bags, but "
                f"train.max_patches is {train.max_patches} (a random subsample cuts the tile graph); "
                "set `train: {max_patches: null}`"
            )
        job = JobConfig(
            store_uri=self.store,
            train=train,
            label_columns=self.labels,
            encoder=self.encoder,
            storage_options=dict(self.storage_options),
            **{_JOB_KEYS[k]: v for k, v in self.job.items()},
        )
        return job, train

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


def _check_model_options(model: Any) -> None:
    """Build the model once, here on the CPU: a bad option value (``model.options.conv=sage``)
    is then a one-line ConfigError before Ray starts, not a worker failure after its start-up."""
    from training.mil.models import build_model

    build_model(model)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``a.b=value`` sets config['a']['b'] (value parsed as YAML: numbers, lists, bools)."""
    from infra.yaml_safe import load_yaml

    out = json.loads(json.dumps(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a mapping")
        node[parts[-1]] = load_yaml(raw, f"override {key}")
    return out


def _known(cls: type, values: Mapping[str, Any], what: str, skip: tuple[str, ...] = ()) -> None:
    known = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {unknown}; known: {sorted(known)}")


def parse_run_config(raw: Mapping[str, Any], base: Path | None = None) -> TrainRunConfig:
    """Check ``raw`` (the YAML mapping) key by key and resolve relative paths against ``base``."""
    from training.mil.models import MILConfig
    from training.mil.train import TrainConfig

    top = {f.name for f in dataclasses.fields(TrainRunConfig)} - {"model", "train", "job"}
    known = sorted(top | set(_JOB_KEYS) | {"model", "train"})
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known: {known}")
    for key in ("store", "cohort", "labels", "out"):
        if raw.get(key) in (None, "", []):
            raise ConfigError(f"config is missing {key!r}")
    for key in ("model", "train", "storage_options"):
        if not isinstance(raw.get(key) or {}, Mapping):
            raise ConfigError(f"{key!r} must be a mapping, got {type(raw[key]).__name__}")
    model, train = dict(raw.get("model") or {}), dict(raw.get("train") or {})
    _known(MILConfig, model, "model", skip=("in_dim", "n_outputs"))
    _known(TrainConfig, train, "train", skip=("model", "task"))
    labels = raw["labels"]
    values: dict[str, Any] = {k: raw[k] for k in top if k in raw}
    values["labels"] = tuple([labels] if isinstance(labels, str) else (str(v) for v in labels))
    for key in _PATH_KEYS:
        if key in raw and raw[key] is not None:
            resolved = _resolve(str(raw[key]), base)
            if key in values:
                values[key] = resolved
            else:
                raw = {**raw, key: resolved}
    job = {k: raw[k] for k in _JOB_KEYS if k in raw}
    return TrainRunConfig(**values, model=model, train=train, job=job)


def _resolve(value: str, base: Path | None) -> str:
    # store:NAME is the store's clinical table (training.cohorts.clinical), not a path
    if base is None or not is_local(value) or value.startswith(("file://", "store:")):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> TrainRunConfig:
    """Read the YAML at ``path``, apply ``key=value`` overrides, and parse it."""
    from infra.yaml_safe import load_yaml_file

    path = Path(path)
    # Bounded loader: aliases that expand to gigabytes are refused before the copy below
    # (json round trip) or any key check walks them.
    raw = load_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping, got {type(raw).__name__}")
    return parse_run_config(apply_overrides(raw, overrides or []), base=path.resolve().parent)
