"""``benchmarks/spatial_protocol.py``: parts merged into one table, criteria read from it."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.spatial_protocol import criteria, merge


def _part(
    path: Path,
    seeds: list[int],
    auroc: dict,
    pearson: dict | None = None,
    slides: int = 200,
    **extra: object,
) -> Path:
    path.write_text(
        json.dumps(
            {
                "params": {"slides": slides, "real_slides": 100, "seeds": seeds},
                "auroc": auroc,
                "auroc_ci": {c: {m: [0.4, 0.6] for m in v} for c, v in auroc.items()},
                "auroc_per_seed": {
                    c: {m: [v[m]] * len(seeds) for m in v} for c, v in auroc.items()
                },
                "shuffle_auroc": {},
                "pearson": pearson or {},
                **extra,
            }
        )
    )
    return path


def test_disjoint_seeds_combine_and_overlapping_parts_keep_the_larger(tmp_path: Path) -> None:
    a = _part(
        tmp_path / "a.json",
        [0],
        {"S1": {"abmil": 0.40}},
        {"S4": {"abmil": {"GENE_SPATIAL": 0.0, "GENE_COMPOSITION": 0.9}}},
    )
    b = _part(
        tmp_path / "b.json",
        [1, 2],
        {"S1": {"abmil": 0.55}},
        {"S4": {"abmil": {"GENE_SPATIAL": 0.3, "GENE_COMPOSITION": 0.6}}},
    )
    small = _part(
        tmp_path / "c.json", [0], {"S1": {"abmil": 0.99}}, slides=60
    )  # not the protocol's size
    table = merge([a, b, small])
    assert table["seeds"]["S1"]["abmil"] == [0, 1, 2]
    assert abs(table["auroc"]["S1"]["abmil"] - (0.40 + 2 * 0.55) / 3) < 1e-12
    assert abs(table["pearson"]["S4"]["abmil"]["GENE_SPATIAL"] - 0.2) < 1e-12
    assert table["auroc_per_seed"]["S1"]["abmil"] == [0.40, 0.55, 0.55]
    again = _part(tmp_path / "d.json", [0, 1, 2], {"S1": {"abmil": 0.50}})
    assert merge([a, again])["auroc"]["S1"]["abmil"] == 0.50  # overlapping seeds: the larger part


def test_criteria_report_holds_fails_and_unmeasured(tmp_path: Path) -> None:
    part = _part(
        tmp_path / "p.json",
        [0, 1, 2],
        {"S0": {"abmil": 0.90}, "S1": {"abmil": 0.52}},
        masking_S2={"ranking": [{"module_type": "T"}, {"module_type": "I"}]},
    )
    rows = {r["criterion"]: r["holds"] for r in criteria(merge([part]))}
    assert rows["S0 abmil >= 0.95"] is False
    assert rows["S1 abmil <= 0.60"] is True and rows["S1 abmil CI contains 0.5"] is True
    assert rows["S3 region_transformer >= 0.90"] is None
    assert rows["S2 masking: the immune module ranks first"] is False
