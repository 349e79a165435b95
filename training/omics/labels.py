"""Labels and regression targets from expression.

Classification labels are "High" versus "Median/Low" for one signature:

* ``hierarchical`` (the published method): patients are clustered on the z-scored
  expression of the signature's genes (agglomerative, Ward linkage by default) into
  three clusters; the cluster whose mean expression is highest is "High", the others
  together "Median/Low".
* ``quantile``: "High" when the signature score is at or above a cohort quantile.

Regression targets are a signature score, or the log2 expression of a list of genes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage

from training.omics.config import LabelConfig, ScoreConfig
from training.omics.errors import InsufficientGenesError, SignatureError
from training.omics.io import ExpressionMatrix
from training.omics.patients import PatientExpression
from training.omics.scores import SignatureScore, resolve_genes, zscore_matrix
from training.omics.signatures import Signature

__all__ = [
    "HIGH",
    "REST",
    "LabelResult",
    "hierarchical_labels",
    "label_signature",
    "quantile_labels",
    "regression_targets",
]

HIGH = "High"
REST = "Median/Low"
_GROUP_NAMES = {2: ("High", "Low"), 3: ("High", "Median", "Low")}


@dataclass(frozen=True)
class LabelResult:
    """One signature's labels: per patient ``score``, ``group``, ``label``, ``high``."""

    signature: str
    method: str
    table: pd.DataFrame
    present: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.table["label"].value_counts().items()}

    def columns(self, prefix: str | None = None) -> pd.DataFrame:
        """The table with columns named ``<signature>_<column>``, for a cohort table."""
        name = prefix or self.signature
        return self.table.add_prefix(f"{name}_")


def _frame(expression: ExpressionMatrix | PatientExpression | pd.DataFrame) -> pd.DataFrame:
    if isinstance(expression, (ExpressionMatrix, PatientExpression)):
        return expression.data
    return expression


def _group_names(n: int) -> tuple[str, ...]:
    return _GROUP_NAMES.get(n, tuple(["High", *(f"Cluster{i}" for i in range(2, n + 1))]))


def hierarchical_labels(
    expression: ExpressionMatrix | PatientExpression | pd.DataFrame,
    signature: Signature,
    config: LabelConfig | None = None,
    score_config: ScoreConfig | None = None,
) -> LabelResult:
    """High vs Median/Low by hierarchical clustering on the signature's genes.

    The clusters are ranked by the mean z-score of their members over the signature's
    genes; the top one is High. ``score`` is each patient's mean z-score.
    """
    config = config or LabelConfig()
    frame = _frame(expression)
    present, missing = resolve_genes(signature, frame.columns, score_config)
    z, _constant = zscore_matrix(frame[list(present)])
    if z.shape[1] == 0:
        raise InsufficientGenesError(signature.name, (), signature.genes, 1, "all genes constant")
    if len(z) < max(config.n_clusters, 3):
        raise SignatureError(
            f"signature {signature.name!r}: {len(z)} patients are too few to cluster "
            f"into {config.n_clusters} groups"
        )
    tree = linkage(z.to_numpy(), method=config.linkage, metric=config.metric)
    clusters = fcluster(tree, t=config.n_clusters, criterion="maxclust")
    score = z.mean(axis=1).to_numpy()
    means = pd.Series(score).groupby(clusters).mean().sort_values(ascending=False)
    names = _group_names(len(means))
    group_of = {int(c): names[i] for i, c in enumerate(means.index)}
    # Cluster 0 is High, then by decreasing mean: stable numbers across runs.
    rank_of = {int(c): i for i, c in enumerate(means.index)}
    high = clusters == means.index[0]
    table = pd.DataFrame(
        {
            "score": score,
            "cluster": [rank_of[int(c)] for c in clusters],
            "group": [group_of[int(c)] for c in clusters],
            "label": np.where(high, HIGH, REST),
            "high": high.astype(np.int8),
        },
        index=frame.index,
    )
    return LabelResult(signature.name, "hierarchical", table, present, missing)


def quantile_labels(
    scores: SignatureScore | pd.Series, config: LabelConfig | None = None
) -> LabelResult:
    """High when the score is at or above the ``high_quantile`` quantile of the cohort."""
    config = config or LabelConfig(method="quantile")
    series = scores.scores if isinstance(scores, SignatureScore) else scores
    name = scores.signature if isinstance(scores, SignatureScore) else str(series.name)
    if series.isna().any() or len(series) < 2:
        raise SignatureError(f"signature {name!r}: need at least two non-missing scores")
    threshold = float(np.quantile(series.to_numpy(), config.high_quantile))
    high = series.to_numpy() >= threshold
    table = pd.DataFrame(
        {
            "score": series.to_numpy(),
            "cluster": np.where(high, 0, 1),
            "group": np.where(high, HIGH, REST),
            "label": np.where(high, HIGH, REST),
            "high": high.astype(np.int8),
        },
        index=series.index,
    )
    present = scores.present if isinstance(scores, SignatureScore) else ()
    missing = scores.missing if isinstance(scores, SignatureScore) else ()
    return LabelResult(name, "quantile", table, present, missing)


def label_signature(
    expression: ExpressionMatrix | PatientExpression | pd.DataFrame,
    signature: Signature,
    config: LabelConfig | None = None,
    score_config: ScoreConfig | None = None,
) -> LabelResult:
    """Labels by the method in ``config``; a quantile label thresholds the score of
    ``score_config.method`` (z-score by default)."""
    from training.omics.scores import score_signature

    config = config or LabelConfig()
    if config.method == "hierarchical":
        return hierarchical_labels(expression, signature, config, score_config)
    return quantile_labels(score_signature(_frame(expression), signature, score_config), config)


def regression_targets(
    expression: ExpressionMatrix | PatientExpression | pd.DataFrame,
    *,
    genes: Sequence[str] = (),
    scores: Sequence[SignatureScore] = (),
    standardize: bool = False,
) -> pd.DataFrame:
    """Continuous targets per patient: ``expr_<GENE>`` (log2 expression) for each gene,
    ``score_<signature>`` for each score; z-standardised across patients if asked.

    A requested gene missing from the matrix is an error: a regression target cannot
    be scored on what remains, unlike a signature.
    """
    frame = _frame(expression)
    if not genes and not scores:
        raise SignatureError("regression_targets needs genes or scores")
    absent = [g for g in genes if g not in frame.columns]
    if absent:
        raise SignatureError(f"genes not in the expression matrix: {', '.join(absent)}")
    columns = {f"expr_{g}": frame[g].to_numpy(dtype=np.float64) for g in genes}
    out = pd.DataFrame(columns, index=frame.index)
    for score in scores:
        out[f"score_{score.signature}"] = score.scores.reindex(frame.index).to_numpy()
    if standardize:
        std = out.std(axis=0, ddof=1).replace(0.0, np.nan)
        out = (out - out.mean(axis=0)) / std
    return out
