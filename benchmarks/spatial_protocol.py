"""The spatial protocol's table from its recorded parts, checked against its criteria.

The full protocol (S0-S4 at n=200 with 3 seeds, real_S1 with 100 slides) takes hours on a
small machine, so it is run in parts (``benchmarks/spatial.py --cohorts ... --seeds ...``),
each writing its own results file. This script reads those files, keeps for each cohort
and model the part with the most seeds at the protocol's size (parts with disjoint
seeds are combined; ties: the later file on the command line), writes one JSON in ``benchmarks/spatial.py``'s shape (``"auroc":
{cohort: {model: value}}``, plus ``pearson``, CIs, per-seed values, shuffled AUROCs and
which file each cell came from; module discovery and masking come from the last file on
the command line that has them) and prints the table and every acceptance criterion of
the protocol with the measured value and whether it holds. Nothing is recomputed.

Usage: python -m benchmarks.spatial_protocol --out benchmarks/results/spatial_protocol.json \\
           benchmarks/results/spatial_s0_s1_n200.json benchmarks/results/spatial_s2_n200.json ...
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, machine, write_json

ORDER_BLIND = ("abmil", "clam_sb", "mean_pool")
SPATIAL = ("tile_gnn", "module_graph", "region_transformer")
MODELS = ORDER_BLIND + SPATIAL
COHORTS = ("S0", "S1", "S2", "S3", "S4", "real_S1")
SIZE = {"S0": 200, "S1": 200, "S2": 200, "S3": 200, "S4": 200, "real_S1": 100}
SEEDS = 3
_KEYS = ("auroc", "auroc_ci", "auroc_per_seed", "shuffle_auroc", "pearson")


def _size(params: dict[str, Any], cohort: str) -> int | None:
    if cohort == "real_S1":
        return params.get("real_slides")
    return params.get("slides")


def merge(paths: Sequence[Path]) -> dict[str, Any]:
    """One cell per (cohort, model): the part with the most seeds at the protocol's size."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    capped: dict[str, dict[str, Any]] = {}
    diagnostics: dict[str, Any] = {}  # module discovery and masking, at the protocol's size
    for path in paths:
        part = json.loads(path.read_text())
        params = part.get("params", {})
        seeds = list(params.get("seeds", []))
        for key, value in part.items():
            cohort = key.removeprefix("module_discovery_").removeprefix("masking_")
            if cohort != key and _size(params, cohort) == SIZE.get(cohort):
                diagnostics[key] = {**value, "source": _name(path)}
        if params.get("train_slides"):  # sample efficiency: training sets capped
            for cohort, by_model in part.get("auroc", {}).items():
                for model, value in by_model.items():
                    capped.setdefault(cohort, {})[model] = {
                        "train_slides": params["train_slides"],
                        "auroc": value,
                        "seeds": seeds,
                        "auroc_per_seed": part.get("auroc_per_seed", {}).get(cohort, {}).get(model),
                        "source": [_name(path)],
                    }
            continue
        for cohort in COHORTS:
            if _size(params, cohort) != SIZE[cohort]:
                continue
            for model in MODELS:
                cell = {key: part.get(key, {}).get(cohort, {}).get(model) for key in _KEYS}
                if cell["auroc"] is None and cell["pearson"] is None:
                    continue
                cell.update(seeds=seeds, source=[_name(path)])
                held = cells.get((cohort, model))
                if held is not None and not set(seeds) & set(held["seeds"]):
                    cells[(cohort, model)] = _combine(held, cell)
                elif held is None or len(seeds) >= len(held["seeds"]):
                    cells[(cohort, model)] = cell
    out: dict[str, Any] = {key: {} for key in (*_KEYS, "seeds", "source")}
    for (cohort, model), cell in sorted(cells.items()):
        for key in (*_KEYS, "seeds", "source"):
            if cell.get(key) is not None:
                out[key].setdefault(cohort, {})[model] = cell[key]
    out["capped_training"] = capped
    out["diagnostics"] = diagnostics
    return out


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two parts with disjoint seeds as one cell: means weighted by seeds (exact for a
    mean over seeds). The CI is the larger part's (it cannot be pooled from summaries)."""
    na, nb = len(a["seeds"]), len(b["seeds"])
    big = a if na >= nb else b

    def mean(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else (x * na + y * nb) / (na + nb)

    out = {
        "seeds": sorted(a["seeds"] + b["seeds"]),
        "source": a["source"] + b["source"],
        "auroc": mean(a["auroc"], b["auroc"]),
        "shuffle_auroc": mean(a["shuffle_auroc"], b["shuffle_auroc"]),
        "auroc_ci": big["auroc_ci"],
        "auroc_per_seed": (a["auroc_per_seed"] or []) + (b["auroc_per_seed"] or []) or None,
        "pearson": None,
    }
    if a["pearson"] is not None and b["pearson"] is not None:
        out["pearson"] = {
            gene: mean(a["pearson"][gene], b["pearson"][gene]) for gene in a["pearson"]
        }
    return out


def _get(table: dict[str, Any], key: str, cohort: str, model: str) -> Any:
    return table.get(key, {}).get(cohort, {}).get(model)


def criteria(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Every numeric acceptance criterion of the protocol: what it asks, what was measured."""
    rows: list[dict[str, Any]] = []

    def check(what: str, value: float | None, ok: bool | None, seeds: Iterable[int] | None) -> None:
        rows.append({"criterion": what, "value": value, "holds": ok, "seeds": list(seeds or [])})

    def auroc(cohort: str, model: str) -> tuple[float | None, list[int] | None]:
        return _get(table, "auroc", cohort, model), _get(table, "seeds", cohort, model)

    for model in MODELS:
        v, s = auroc("S0", model)
        check(f"S0 {model} >= 0.95", v, None if v is None else v >= 0.95, s)
    for model in ("abmil", "clam_sb"):
        v, s = auroc("S1", model)
        ci = _get(table, "auroc_ci", "S1", model)
        check(f"S1 {model} <= 0.60", v, None if v is None else v <= 0.60, s)
        check(
            f"S1 {model} CI contains 0.5",
            None if ci is None else ci,
            None if ci is None else ci[0] <= 0.5 <= ci[1],
            s,
        )
    for model, floor in (("tile_gnn", 0.95), ("module_graph", 0.95), ("region_transformer", 0.90)):
        v, s = auroc("S1", model)
        check(f"S1 {model} >= {floor:.2f}", v, None if v is None else v >= floor, s)
    v, s = auroc("S2", "module_graph")
    check("S2 module_graph >= 0.95", v, None if v is None else v >= 0.95, s)
    for key, found in sorted(table.get("diagnostics", {}).items()):
        cohort = key.removeprefix("module_discovery_")
        # On the embedding cohorts every tile has one planted type; real_S1's tiles are
        # cut from pixels and many mix types, so its ARI is reported, not held to 0.90.
        if cohort != key and cohort != "real_S1":
            check(
                f"{cohort} module discovery ARI >= 0.90", found["ari"], found["ari"] >= 0.90, None
            )
    masking = table.get("diagnostics", {}).get("masking_S2")
    first = None if masking is None else masking["ranking"][0]["module_type"]
    check(
        "S2 masking: the immune module ranks first",
        first,
        None if first is None else first == "I",
        None,
    )
    by_type = {r["module_type"]: r for r in (masking or {}).get("ranking", [])}
    immune = by_type.get("I", {})
    v = immune.get("auroc_masked")
    check("S2 masking: AUROC with I masked <= 0.60", v, None if v is None else v <= 0.60, None)
    if "N" in by_type and immune:
        v = by_type["N"]["mean_abs_delta"] / immune["mean_abs_delta"]
        check("S2 masking: N moves predictions < 10% of I", v, v < 0.10, None)
    cut = (masking or {}).get("edge_masking_T_I_class1", {}).get("flipped_fraction")
    check(
        "S2 edge masking T-I flips >= 90% of class-1 calls",
        cut,
        None if cut is None else cut >= 0.90,
        None,
    )
    cap = table.get("capped_training", {}).get("S2", {}).get("module_graph")
    check(
        "S2 module_graph >= 0.90 with 40 training slides",
        None if cap is None else cap["auroc"],
        None if cap is None or cap["train_slides"] != 40 else cap["auroc"] >= 0.90,
        None if cap is None else cap["seeds"],
    )
    v, s = auroc("S3", "region_transformer")
    check("S3 region_transformer >= 0.90", v, None if v is None else v >= 0.90, s)
    for model in SPATIAL:
        r = _get(table, "pearson", "S4", model)
        s = _get(table, "seeds", "S4", model)
        for gene in ("GENE_SPATIAL", "GENE_COMPOSITION"):
            v = None if r is None else r[gene]
            check(f"S4 {model} r({gene}) >= 0.80", v, None if v is None else v >= 0.80, s)
    r = _get(table, "pearson", "S4", "abmil")
    s = _get(table, "seeds", "S4", "abmil")
    check(
        "S4 abmil r(GENE_SPATIAL) <= 0.20",
        None if r is None else r["GENE_SPATIAL"],
        None if r is None else r["GENE_SPATIAL"] <= 0.20,
        s,
    )
    check(
        "S4 abmil r(GENE_COMPOSITION) >= 0.80",
        None if r is None else r["GENE_COMPOSITION"],
        None if r is None else r["GENE_COMPOSITION"] >= 0.80,
        s,
    )
    for model in SPATIAL:
        v, s = auroc("real_S1", model)
        check(f"real_S1 {model} >= 0.90", v, None if v is None else v >= 0.90, s)
    v, s = auroc("real_S1", "abmil")
    check("real_S1 abmil <= 0.65", v, None if v is None else v <= 0.65, s)
    for cohort in ("S1", "S2"):
        for model in SPATIAL:
            v = _get(table, "shuffle_auroc", cohort, model)
            if v is not None or cohort == "S1":
                check(
                    f"{cohort} {model} shuffled <= 0.60",
                    v,
                    None if v is None else v <= 0.60,
                    _get(table, "seeds", cohort, model),
                )
    for model in SPATIAL:
        v = _get(table, "shuffle_auroc", "S0", model)
        check(
            f"S0 {model} shuffled >= 0.95",
            v,
            None if v is None else v >= 0.95,
            _get(table, "seeds", "S0", model),
        )
    return rows


def markdown(table: dict[str, Any]) -> str:
    """Cohorts × models: mean over seeds [CI]; S4 as contact / composition gene r."""
    lines = [
        "| cohort | " + " | ".join(f"`{m}`" for m in MODELS) + " |",
        "|---|" + "---|" * len(MODELS),
    ]
    for cohort in COHORTS:
        cells = []
        for model in MODELS:
            seeds = _get(table, "seeds", cohort, model) or []
            tag = (
                ""
                if len(seeds) >= SEEDS
                else f" ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
            )
            r = _get(table, "pearson", cohort, model)
            v = _get(table, "auroc", cohort, model)
            if r is not None:
                cells.append(f"{r['GENE_SPATIAL']:.2f} / {r['GENE_COMPOSITION']:.2f}{tag}")
            elif v is not None:
                shuffled = _get(table, "shuffle_auroc", cohort, model)
                cells.append(
                    f"{v:.2f}"
                    + (f", shuffled {shuffled:.2f}" if shuffled is not None else "")
                    + tag
                )
            else:
                cells.append("—")
        lines.append(f"| {cohort} (n={SIZE[cohort]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "parts", nargs="+", type=Path, help="results files of benchmarks/spatial.py"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    table = merge([p.resolve() for p in args.parts])
    checks = criteria(table)
    write_json(
        args.out,
        {
            "benchmark": "spatial-protocol",
            "machine": machine(),
            **table,
            "criteria": checks,
            "note": "merged from the parts named in 'source' (nothing recomputed); auroc: mean "
            "over seeds of the pooled out-of-fold AUROC; auroc_ci: bootstrap 95% CI of "
            "the pooled AUROC of the seed-averaged predictions; S4: Pearson r",
        },
    )
    print(markdown(table))
    print()
    for row in checks:
        mark = {True: "holds", False: "FAILS", None: "not measured"}[row["holds"]]
        value = row["value"]
        shown = (
            f"{value:.2f}"
            if isinstance(value, float)
            else value
            if isinstance(value, str)
            else f"[{value[0]:.2f}, {value[1]:.2f}]"
            if isinstance(value, list)
            else "—"
        )
        print(f"{mark:13s} {row['criterion']:50s} {shown:>14s}  seeds {row['seeds']}")


if __name__ == "__main__":
    main()
