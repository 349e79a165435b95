"""Signature scores: one number per sample (or patient) for a gene list.

Two methods:

* ``zscore``: each gene is z-scored across the cohort, then the signature's genes are
  averaged. Scores are relative to the cohort, which is what the published labels
  need (a patient is "High" relative to the others).
* ``rank``: a single-sample, rank-based enrichment score in the manner of ssGSEA
  (Barbie et al. 2009): each sample's genes are ranked by expression, and a weighted
  running sum walks down the ranking, rising at signature genes (weight rank**alpha)
  and falling at the others; the score is the sum of the walk. It depends only on
  the sample itself, so it is stable across cohorts and platforms; it needs the
  whole transcriptome (or panel) as background, not just the signature's genes.

Genes of the signature absent from the matrix are reported; when fewer than
``max(min_genes, ceil(min_fraction * len(signature)))`` are present the signature
is not scored (:class:`InsufficientGenesError`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from training.omics.config import ScoreConfig
from training.omics.errors import InsufficientGenesError, SignatureError
from training.omics.io import ExpressionMatrix
from training.omics.patients import PatientExpression
from training.omics.signatures import Signature

__all__ = [
    "SignatureScore",
    "rank_score",
    "resolve_genes",
    "score_signature",
    "score_signatures",
    "zscore_matrix",
    "zscore_score",
]

log = logging.getLogger(__name__)
Expression: TypeAlias = ExpressionMatrix | PatientExpression | pd.DataFrame
_CHUNK = 64  # samples ranked at once: bounds memory to 64 × genes × a few arrays


@dataclass(frozen=True)
class SignatureScore:
    """Scores of one signature, with the genes that were and were not used."""

    signature: str
    method: str
    scores: pd.Series
    present: tuple[str, ...]
    missing: tuple[str, ...]
    constant: tuple[str, ...] = ()

    @property
    def coverage(self) -> float:
        return len(self.present) / (len(self.present) + len(self.missing))

    def report(self) -> dict[str, object]:
        return {
            "signature": self.signature,
            "method": self.method,
            "genes_present": list(self.present),
            "genes_missing": list(self.missing),
            "genes_constant": list(self.constant),
            "coverage": round(self.coverage, 4),
        }


def _frame(expression: Expression) -> pd.DataFrame:
    frame = (
        expression.data
        if isinstance(expression, (ExpressionMatrix, PatientExpression))
        else expression
    )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise SignatureError(f"expression matrix is empty ({frame.shape[0]} × {frame.shape[1]})")
    return frame


def resolve_genes(
    signature: Signature, available: Iterable[str], config: ScoreConfig | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(present, missing) genes of ``signature``; too few present is an error."""
    config = config or ScoreConfig()
    have = set(available)
    present = tuple(g for g in signature.genes if g in have)
    missing = tuple(g for g in signature.genes if g not in have)
    required = max(config.min_genes, math.ceil(config.min_fraction * len(signature.genes)))
    required = min(required, len(signature.genes))
    if len(present) < required:
        hint = ""
        if have and sum(1 for g in have if str(g).startswith("ENS")) > len(have) / 2:
            hint = "the matrix is indexed by Ensembl ids: load it with gene_map= to use symbols"
        raise InsufficientGenesError(signature.name, present, missing, required, hint)
    if missing:
        log.warning(
            "signature %s: %d of %d genes missing (%s)",
            signature.name,
            len(missing),
            len(signature.genes),
            ", ".join(missing),
        )
    return present, missing


def zscore_matrix(frame: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Genes z-scored across samples; genes constant in the cohort are dropped (their
    z-score is undefined) and returned as the second element."""
    values = frame.to_numpy(dtype=np.float64)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
    varying = std > 1e-12
    constant = tuple(str(g) for g in frame.columns[~varying])
    z = (values[:, varying] - values[:, varying].mean(axis=0)) / std[varying]
    return pd.DataFrame(z, index=frame.index, columns=frame.columns[varying]), constant


def zscore_score(
    expression: Expression,
    signature: Signature,
    config: ScoreConfig | None = None,
) -> SignatureScore:
    """Mean z-score of the signature's genes (z across the samples given)."""
    config = config or ScoreConfig()
    frame = _frame(expression)
    if len(frame) < 2:
        raise SignatureError("z-scores need at least two samples; use method='rank'")
    present, missing = resolve_genes(signature, frame.columns, config)
    z, constant = zscore_matrix(frame[list(present)])
    if z.shape[1] == 0:
        raise InsufficientGenesError(signature.name, (), signature.genes, 1, "all genes constant")
    scores = pd.Series(z.mean(axis=1).to_numpy(), index=frame.index, name=signature.name)
    return SignatureScore(signature.name, "zscore", scores, present, missing, constant)


def _rank_enrichment(values: np.ndarray, hits: np.ndarray, alpha: float) -> np.ndarray:
    """ssGSEA-like enrichment of the genes flagged in ``hits`` for each row of ``values``.

    ``values``: samples × genes; ``hits``: boolean per gene. Walking from the most to the
    least expressed gene, the hit part climbs by rank**alpha (normalised to end at 1)
    and the miss part by 1/(genes - hits); the score sums their difference.
    """
    n_genes = values.shape[1]
    n_hits = int(hits.sum())
    out = np.empty(values.shape[0])
    for start in range(0, values.shape[0], _CHUNK):
        block = values[start : start + _CHUNK]
        ranks = rankdata(block, axis=1, method="average")  # 1 = least expressed
        order = np.argsort(-block, axis=1, kind="stable")
        hit_sorted = hits[order]
        weights = np.where(hit_sorted, np.take_along_axis(ranks, order, axis=1) ** alpha, 0.0)
        step_hit = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
        if n_genes > n_hits:
            step_miss = np.cumsum(~hit_sorted, axis=1) / (n_genes - n_hits)
        else:
            step_miss = np.zeros_like(step_hit)
        out[start : start + len(block)] = (step_hit - step_miss).sum(axis=1)
    return out


def rank_score(
    expression: Expression,
    signature: Signature,
    config: ScoreConfig | None = None,
) -> SignatureScore:
    """Single-sample rank-based enrichment score (ssGSEA-like), one per sample."""
    config = config or ScoreConfig()
    frame = _frame(expression)
    present, missing = resolve_genes(signature, frame.columns, config)
    if frame.shape[1] <= len(present):
        raise SignatureError(
            f"signature {signature.name!r}: a rank score needs background genes beyond the "
            f"signature ({frame.shape[1]} genes in the matrix)"
        )
    hits = frame.columns.isin(present)
    scores = _rank_enrichment(frame.to_numpy(dtype=np.float64), np.asarray(hits), config.alpha)
    return SignatureScore(
        signature.name,
        "rank",
        pd.Series(scores, index=frame.index, name=signature.name),
        present,
        missing,
    )


def score_signature(
    expression: Expression,
    signature: Signature,
    config: ScoreConfig | None = None,
) -> SignatureScore:
    """Score with the method named in ``config`` (``zscore`` by default)."""
    config = config or ScoreConfig()
    if config.method == "rank":
        return rank_score(expression, signature, config)
    return zscore_score(expression, signature, config)


def score_signatures(
    expression: Expression,
    signatures: Sequence[Signature],
    config: ScoreConfig | None = None,
) -> tuple[pd.DataFrame, list[SignatureScore]]:
    """Scores of several signatures as columns, and each one's gene report."""
    results = [score_signature(expression, s, config) for s in signatures]
    table = pd.concat([r.scores for r in results], axis=1)
    return table, results
