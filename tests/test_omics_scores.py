"""Signature scores: z-score and the ssGSEA-like rank score, and missing genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.omics import (
    LIBRARY,
    InsufficientGenesError,
    ScoreConfig,
    Signature,
    rank_score,
    score_signatures,
    zscore_score,
)
from training.omics.scores import _rank_enrichment

SIG = Signature("toy", ("A", "B", "C", "D"), source="test")


def _frame(seed: int = 0, n: int = 20, background: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    genes = ["A", "B", "C", "D", *(f"G{i}" for i in range(background))]
    return pd.DataFrame(
        rng.normal(5, 1, (n, len(genes))), columns=genes, index=[f"P{i}" for i in range(n)]
    )


def test_zscore_is_the_mean_of_gene_z_scores() -> None:
    frame = _frame()
    result = zscore_score(frame, SIG)
    genes = frame[list(SIG.genes)]
    expected = ((genes - genes.mean()) / genes.std(ddof=1)).mean(axis=1)
    np.testing.assert_allclose(result.scores.to_numpy(), expected.to_numpy())
    assert result.present == SIG.genes and result.missing == () and result.method == "zscore"


def test_missing_genes_are_reported_and_too_few_is_an_error() -> None:
    frame = _frame().drop(columns=["D"])
    result = zscore_score(frame, SIG)
    assert result.missing == ("D",) and result.coverage == 0.75
    assert result.report()["genes_missing"] == ["D"]
    with pytest.raises(InsufficientGenesError) as info:
        zscore_score(frame.drop(columns=["B", "C"]), SIG)
    error = info.value
    assert error.present == ("A",) and error.missing == ("B", "C", "D") and error.required == 2
    assert isinstance(error, ValueError)
    strict = ScoreConfig(min_fraction=1.0)
    with pytest.raises(InsufficientGenesError, match="only 3 of 4"):
        zscore_score(frame, SIG, strict)


def test_ensembl_matrix_gets_a_hint() -> None:
    frame = pd.DataFrame(np.ones((3, 3)), columns=["ENSG00000111537", "ENSG00000115415", "ENSG1"])
    with pytest.raises(InsufficientGenesError, match="gene_map"):
        zscore_score(frame, LIBRARY["ayers_ifng6"])


def test_constant_genes_are_left_out_of_z_scores() -> None:
    frame = _frame()
    frame["A"] = 3.0
    result = zscore_score(frame, SIG)
    assert result.constant == ("A",)
    assert np.isfinite(result.scores).all()


def _reference_ssgsea(values: np.ndarray, hits: np.ndarray, alpha: float) -> float:
    """A direct, loop-by-loop transcription of the running-sum definition."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = pd.Series(values).rank(method="average").to_numpy()
    total = sum(ranks[i] ** alpha for i in range(len(values)) if hits[i])
    misses = len(values) - hits.sum()
    p_hit = p_miss = score = 0.0
    for i in order:
        if hits[i]:
            p_hit += ranks[i] ** alpha / total
        else:
            p_miss += 1.0 / misses
        score += p_hit - p_miss
    return score


def test_rank_score_matches_the_running_sum_definition() -> None:
    frame = _frame(seed=1, n=5, background=40)
    hits = frame.columns.isin(SIG.genes)
    got = _rank_enrichment(frame.to_numpy(), np.asarray(hits), 0.25)
    want = [_reference_ssgsea(row, hits, 0.25) for row in frame.to_numpy()]
    np.testing.assert_allclose(got, want)


def test_rank_score_is_single_sample_and_rank_based() -> None:
    frame = _frame(seed=2)
    frame.loc["P0", list(SIG.genes)] += 4.0  # P0 expresses the signature highly
    scores = rank_score(frame, SIG).scores
    assert scores.idxmax() == "P0"
    # Depends on the sample alone: other samples do not change its score...
    alone = rank_score(frame.loc[["P0"]], SIG).scores
    assert alone["P0"] == pytest.approx(scores["P0"])
    # ...and only on ranks: a monotone transform of a sample leaves it unchanged.
    transformed = frame.copy()
    transformed.loc["P0"] = np.exp(transformed.loc["P0"])
    assert rank_score(transformed, SIG).scores["P0"] == pytest.approx(scores["P0"])


def test_scores_of_several_signatures() -> None:
    frame = _frame()
    other = Signature("other", ("G1", "G2", "G3"), source="test")
    table, results = score_signatures(frame, [SIG, other], ScoreConfig(method="rank"))
    assert list(table.columns) == ["toy", "other"] and len(table) == len(frame)
    assert [r.method for r in results] == ["rank", "rank"]
