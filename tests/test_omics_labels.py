"""Labels: a planted High cluster is recovered; quantile labels; regression targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from tests._support.omics import planted_cohort
from training.omics import (
    HIGH,
    REST,
    LabelConfig,
    ScoreConfig,
    SignatureError,
    get_signature,
    hierarchical_labels,
    label_signature,
    load_expression,
    quantile_labels,
    regression_targets,
    to_patients,
    zscore_score,
)


def _agreement(labels: pd.Series, truth: pd.Series) -> tuple[float, float]:
    """(simple agreement, adjusted Rand index) of binary High calls against the plant."""
    called = labels.reindex(truth.index).astype(bool).to_numpy()
    return float((called == truth.to_numpy()).mean()), float(adjusted_rand_score(truth, called))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_high_cluster_is_recovered(tmp_path: Path, seed: int) -> None:
    planted = planted_cohort(150, seed=seed, normals=10)
    matrix = load_expression(str(planted.write_tsv(tmp_path / "expr.tsv")))
    patients = to_patients(matrix)  # TCGA: primary tumours only, normals left out
    assert len(patients.excluded_samples) == 10 and len(patients.data) == 150
    result = hierarchical_labels(patients, get_signature("ayers_ifng6"))
    agreement, ari = _agreement(result.table["high"], planted.high)
    assert agreement >= 0.95 and ari >= 0.8, (agreement, ari)
    assert set(result.table["label"]) == {HIGH, REST}
    assert set(result.table["group"]) == {"High", "Median", "Low"}
    high = result.table["high"].astype(bool)
    assert result.table.loc[high, "score"].min() > result.table.loc[~high, "score"].mean()


def test_quantile_labels_on_either_score(tmp_path: Path) -> None:
    planted = planted_cohort(150, seed=4)
    patients = to_patients(load_expression(str(planted.write_tsv(tmp_path / "e.tsv"))))
    signature = get_signature("ayers_ifng6")
    config = LabelConfig(method="quantile", high_quantile=2 / 3)
    for method in ("zscore", "rank"):
        result = label_signature(patients, signature, config, ScoreConfig(method=method))  # type: ignore[arg-type]
        assert result.method == "quantile" and result.counts[HIGH] == 50
        agreement, _ = _agreement(result.table["high"], planted.high)
        assert agreement >= 0.95, (method, agreement)


def test_quantile_threshold_is_inclusive() -> None:
    scores = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd"), name="s")
    result = quantile_labels(scores, LabelConfig(method="quantile", high_quantile=0.5))
    assert result.table["label"].tolist() == [REST, REST, HIGH, HIGH]


def test_too_few_patients_to_cluster() -> None:
    frame = pd.DataFrame(
        np.random.default_rng(0).normal(size=(2, 6)),
        columns=list(get_signature("ayers_ifng6").genes),
    )
    with pytest.raises(SignatureError, match="too few to cluster"):
        hierarchical_labels(frame, get_signature("ayers_ifng6"))


def test_regression_targets(tmp_path: Path) -> None:
    planted = planted_cohort(40, seed=5)
    patients = to_patients(load_expression(str(planted.write_tsv(tmp_path / "e.tsv"))))
    score = zscore_score(patients, get_signature("ayers_ifng6"))
    targets = regression_targets(patients, genes=["CXCL9", "BG0001"], scores=[score])
    assert list(targets.columns) == ["expr_CXCL9", "expr_BG0001", "score_ayers_ifng6"]
    np.testing.assert_allclose(targets["expr_CXCL9"], patients.data["CXCL9"])
    standard = regression_targets(patients, genes=["CXCL9"], standardize=True)
    assert standard["expr_CXCL9"].mean() == pytest.approx(0.0, abs=1e-12)
    assert standard["expr_CXCL9"].std() == pytest.approx(1.0)
    with pytest.raises(SignatureError, match="NOPE"):
        regression_targets(patients, genes=["NOPE"])
