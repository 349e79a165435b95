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
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from infra.errors import ConfigError
from infra.provenance import canonical_json, stable_hash
from infra.validate import choice, in_range, non_empty, require

__all__ = ["STAIN_ALGORITHM_VERSION", "STANDARD_REFERENCE_ID", "Method", "StainParams"]

Method = Literal["macenko", "reinhard"]

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
        choice("StainParams.method", self.method, Method)
        non_empty("StainParams.reference_id", self.reference_id)
        in_range("StainParams.io", self.io, 1.0, 1024.0)
        in_range("StainParams.alpha", self.alpha, 0.0, 50.0)
        in_range("StainParams.beta", self.beta, 0.0, 5.0)
        if self.method == "macenko":
            self._check_macenko()
        else:
            self._check_reinhard()

    def _check_macenko(self) -> None:
        name = "StainParams.stain_matrix"
        require(self.stain_matrix is not None, name, "set for macenko params", None)
        matrix = np.asarray(self.stain_matrix, dtype=np.float64)
        require(
            matrix.shape == (2, 3) and np.isfinite(matrix).all(),
            name,
            "2 finite RGB vectors",
            self.stain_matrix,
        )
        require(
            np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6),
            name,
            "2 unit vectors",
            self.stain_matrix,
        )
        require(
            np.linalg.matrix_rank(matrix, tol=1e-6) == 2,
            name,
            "2 non-collinear vectors",
            self.stain_matrix,
        )
        name = "StainParams.max_concentrations"
        require(self.max_concentrations is not None, name, "set for macenko params", None)
        conc = np.asarray(self.max_concentrations, dtype=np.float64)
        require(
            conc.shape == (2,) and np.isfinite(conc).all() and (conc > 0).all(),
            name,
            "2 positive finite numbers",
            self.max_concentrations,
        )

    def _check_reinhard(self) -> None:
        for name, value in (
            ("StainParams.lab_mean", self.lab_mean),
            ("StainParams.lab_std", self.lab_std),
        ):
            require(value is not None, name, "set for reinhard params", None)
            array = np.asarray(value, dtype=np.float64)
            require(
                array.shape == (3,) and np.isfinite(array).all(), name, "3 finite numbers", value
            )
        require(
            (np.asarray(self.lab_std) > 0).all(),
            "StainParams.lab_std",
            "3 positive numbers",
            self.lab_std,
        )

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
