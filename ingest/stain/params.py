"""Fitted stain parameters: frozen, validated, JSON round-trippable, hashable for provenance.

One :class:`StainParams` describes the stain appearance of one image set (a slide, a
reference image, or the published standard). The slides table stores a slide's params
as JSON next to its row, so any tile can be normalized again bit for bit, and an audit
can tell which reference a slide was normalized to (``reference_id``) and with which
version of the algorithm (``version``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from infra.errors import ConfigError
from infra.provenance import canonical_json, stable_hash

__all__ = ["STAIN_ALGORITHM_VERSION", "STANDARD_REFERENCE_ID", "Method", "StainParams"]

Method = Literal["macenko", "reinhard"]
_METHODS = ("macenko", "reinhard")

# Bump when the fitting or application math changes in a way that changes pixels, so
# stored params fitted by an older version are recognised as such.
STAIN_ALGORITHM_VERSION = 1
# The id of the published H&E reference (ingest.stain.reference); fits default to it.
STANDARD_REFERENCE_ID = "macenko2009-he-standard"

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class StainParams:
    """Stain parameters of one image set.

    * ``method``: ``"macenko"`` (stain vectors and maximum concentrations) or
      ``"reinhard"`` (CIELAB mean and standard deviation of tissue pixels).
    * ``stain_matrix``: Macenko only; rows are the unit optical-density (RGB) vectors of
      hematoxylin and eosin, in that order.
    * ``max_concentrations``: Macenko only; robust maximum (99th percentile) of each
      stain's concentration.
    * ``lab_mean`` / ``lab_std``: Reinhard only; per CIELAB channel (L in 0..100).
    * ``io``, ``alpha``, ``beta``: transmitted light intensity, angle percentile and the
      optical-density threshold of tissue pixels used for the fit.
    * ``reference_id``: the target reference these params are meant to be normalized to
      (for a reference itself, its own id).
    * ``fitted_from``: what was measured (``"slide:<id>"``, ``"tiles"``, ``"image:<sha>"``,
      ``"published"``); ``n_pixels``: tissue pixels the fit used.
    """

    method: Method
    reference_id: str
    stain_matrix: tuple[Vec3, Vec3] | None = None
    max_concentrations: tuple[float, float] | None = None
    lab_mean: Vec3 | None = None
    lab_std: Vec3 | None = None
    io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15
    fitted_from: str = "tiles"
    n_pixels: int = 0
    version: int = STAIN_ALGORITHM_VERSION

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(f"stain method must be one of {_METHODS}, got {self.method!r}")
        if not self.reference_id:
            raise ConfigError("reference_id must be a non-empty string")
        _check_scalar("io", self.io, 1.0, 1024.0)
        _check_scalar("alpha", self.alpha, 0.0, 50.0)
        _check_scalar("beta", self.beta, 0.0, 5.0)
        if self.method == "macenko":
            self._check_macenko()
        else:
            self._check_reinhard()

    def _check_macenko(self) -> None:
        if self.stain_matrix is None or self.max_concentrations is None:
            raise ConfigError("macenko params need stain_matrix and max_concentrations")
        matrix = np.asarray(self.stain_matrix, dtype=np.float64)
        if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
            raise ConfigError(f"stain_matrix must be 2 finite RGB vectors, got {self.stain_matrix}")
        if not np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6):
            raise ConfigError("stain_matrix rows must be unit vectors")
        if np.linalg.matrix_rank(matrix, tol=1e-6) < 2:
            raise ConfigError("stain_matrix rows are collinear")
        conc = np.asarray(self.max_concentrations, dtype=np.float64)
        if conc.shape != (2,) or not (np.isfinite(conc).all() and (conc > 0).all()):
            raise ConfigError(f"max_concentrations must be 2 positive numbers, got {conc}")

    def _check_reinhard(self) -> None:
        if self.lab_mean is None or self.lab_std is None:
            raise ConfigError("reinhard params need lab_mean and lab_std")
        mean = np.asarray(self.lab_mean, dtype=np.float64)
        std = np.asarray(self.lab_std, dtype=np.float64)
        if mean.shape != (3,) or std.shape != (3,) or not np.isfinite([*mean, *std]).all():
            raise ConfigError("lab_mean and lab_std must be 3 finite numbers each")
        if not (std > 0).all():
            raise ConfigError(f"lab_std must be positive, got {self.lab_std}")

    # ---- arrays for computation ------------------------------------------------------------
    @property
    def he_matrix(self) -> np.ndarray:
        """(3, 2) float64: columns are the H and E optical-density vectors."""
        if self.stain_matrix is None:
            raise ConfigError(f"{self.method} params have no stain matrix")
        return np.asarray(self.stain_matrix, dtype=np.float64).T

    # ---- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():  # tuples become lists so JSON and dict agree
            if isinstance(value, tuple):
                out[key] = json.loads(json.dumps(value))
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys); floats are written with full precision."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown StainParams fields: {sorted(unknown)}")
        values = dict(data)
        for key in ("stain_matrix",):
            if values.get(key) is not None:
                values[key] = tuple(tuple(float(v) for v in row) for row in values[key])
        for key in ("max_concentrations", "lab_mean", "lab_std"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> StainParams:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"stain params are not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("stain params JSON must be an object")
        return cls.from_dict(data)

    def digest(self) -> str:
        """Short content hash for provenance and pipeline config hashes."""
        return stable_hash("slidebank.stain-params", 1, {"params": self.to_dict()})

    def with_reference(self, reference_id: str) -> StainParams:
        return dataclasses.replace(self, reference_id=reference_id)


def _check_scalar(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
