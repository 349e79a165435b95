"""Synthetic expression cohorts with a planted "High" immune cluster, shared by the
omics and cohort tests (tests/test_omics_synthetic.py checks the plant is what they think)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.omics.signatures import LIBRARY


@dataclass
class Planted:
    """Linear TPM (genes × samples), the truth per patient, and the ids used."""

    tpm: pd.DataFrame
    high: pd.Series  # patient_id -> planted High
    samples: list[str]
    patients: list[str]

    def write_tsv(self, path: Path) -> Path:
        frame = self.tpm.copy()
        frame.index.name = "gene"
        frame.to_csv(path, sep="\t")
        return path


def tcga_patient(i: int) -> str:
    return f"TCGA-ZZ-{i:04d}"


def planted_cohort(
    n_patients: int = 150,
    *,
    signature: str = "ayers_ifng6",
    n_background: int = 300,
    high_fraction: float = 1 / 3,
    shift: float = 2.0,
    seed: int = 0,
    normals: int = 0,
    tcga: bool = True,
) -> Planted:
    """log2 expression = gene baseline + noise; in High patients the signature's genes
    share an immune factor centred ``shift`` higher (the others split into a median and
    a low group half a unit apart, as the published three-cluster picture has it)."""
    rng = np.random.default_rng(seed)
    sig = LIBRARY[signature].genes
    # Every other library gene is present but unplanted, so any signature can be scored.
    others = sorted({g for s in LIBRARY.values() for g in s.genes} - set(sig))
    genes = [*sig, *others, *(f"BG{i:04d}" for i in range(n_background))]
    high = rng.permutation(n_patients) < round(high_fraction * n_patients)
    low = ~high & (rng.random(n_patients) < 0.5)
    factor = np.where(high, shift, np.where(low, -0.5, 0.0)) + rng.normal(0, 0.3, n_patients)
    baseline = rng.uniform(2.0, 8.0, len(genes))
    logs = baseline + rng.normal(0, 0.5, (n_patients, len(genes)))
    logs[:, : len(sig)] += factor[:, None]
    patients = [tcga_patient(i) if tcga else f"HOSP{i:04d}" for i in range(n_patients)]
    samples = [f"{p}-01A-11R-A37K-07" if tcga else f"S{i:04d}" for i, p in enumerate(patients)]
    extra_samples, extra_logs = [], []
    for i in range(normals):  # normal tissue of the first patients: must not label them
        extra_samples.append(f"{patients[i]}-11A-11R-A37K-07")
        extra_logs.append(
            baseline
            + rng.normal(0, 0.5, len(genes))
            + np.r_[np.full(len(sig), 5.0), np.zeros(len(genes) - len(sig))]
        )
    all_logs = np.vstack([logs, *extra_logs]) if extra_logs else logs
    tpm = np.clip(np.exp2(all_logs) - 1.0, 0.0, None)
    frame = pd.DataFrame(tpm.T, index=genes, columns=[*samples, *extra_samples])
    return Planted(frame, pd.Series(high, index=patients, name="high"), samples, patients)
