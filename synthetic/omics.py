"""Synthetic RNA-seq whose immune genes track a known tissue quantity.

For tests and benchmarks that need omics *caused by* what the slides show: given each
patient's share of tissue covered by a lymphocyte infiltrate, the genes of a signature
(``ayers_ifng6`` by default: IFN-γ and the chemokines and antigen presentation it
induces, which rise with T-cell infiltration) get

    log2(TPM + 1) = base_g + slope * fraction + N(0, noise²)

and background genes get their base level plus the same noise, so a signature score
computed by :mod:`training.omics.scores` tracks the infiltrate and nothing else does.
The table is written genes × samples (the usual RNA-seq layout) with a separate
sample → patient mapping, as a non-TCGA cohort ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from infra.errors import ConfigError
from infra.files import atomic_write_text
from training.omics.signatures import get_signature

__all__ = ["TrackingExpression", "expression_tracking"]


@dataclass(frozen=True)
class TrackingExpression:
    """Linear TPM (genes × samples), the sample → patient mapping and which genes track."""

    tpm: pd.DataFrame
    mapping: pd.DataFrame  # sample_id, patient_id
    tracking_genes: tuple[str, ...]
    background_genes: tuple[str, ...]

    def write(self, folder: str | Path, name: str = "expression") -> tuple[Path, Path]:
        """``<name>.tsv`` (genes × samples, TPM) and ``<name>_mapping.csv``; atomic."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        expr, mapping = folder / f"{name}.tsv", folder / f"{name}_mapping.csv"
        frame = self.tpm.copy()
        frame.index.name = "gene"
        _atomic(expr, frame.to_csv(sep="\t", float_format="%.4f"))
        _atomic(mapping, self.mapping.to_csv(index=False))
        return expr, mapping


def _atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def expression_tracking(
    fractions: Mapping[str, float],
    *,
    signature: str = "ayers_ifng6",
    slope: float = 8.0,
    noise: float = 0.35,
    n_background: int = 24,
    shift: float = 0.0,
    seed: int = 0,
) -> TrackingExpression:
    """One RNA sample per patient (``<patient>-RNA``) for patients -> infiltrate fraction.

    ``slope`` is log2 units per unit fraction (8: a 30% infiltrate adds 2.4 log2 units,
    about a five-fold rise, typical of inflamed vs cold tumours); ``shift`` moves every
    gene (a platform or batch offset, as an external cohort has).
    """
    if not fractions:
        raise ConfigError("expression_tracking needs at least one patient")
    if noise < 0:
        raise ConfigError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    patients = list(fractions)
    frac = np.array([float(fractions[p]) for p in patients])
    tracking = tuple(get_signature(signature).genes)
    background = tuple(f"BG{i:03d}" for i in range(n_background))
    genes = tracking + background
    base = rng.uniform(3.0, 7.0, size=len(genes)) + shift
    log2 = base[:, None] + rng.normal(0.0, noise, size=(len(genes), len(patients)))
    log2[: len(tracking)] += slope * frac[None, :]
    tpm = np.clip(np.exp2(log2) - 1.0, 0.0, None)
    samples = [f"{p}-RNA" for p in patients]
    table = pd.DataFrame(tpm, index=pd.Index(genes, name="gene"), columns=samples)
    mapping = pd.DataFrame({"sample_id": samples, "patient_id": patients})
    return TrackingExpression(table, mapping, tracking, background)
