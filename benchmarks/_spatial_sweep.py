"""The noise sweep of ``benchmarks/spatial.py --sweep``: spatial models against the
``module_stats`` baseline and the planted-type oracle, as single-tile separability falls.

Each cell is one cohort (S1, S2, ...) written with one noise model (isotropic, per-slide
offsets, nuisance directions with heavy tails and offsets: ``synthetic.spatial``)
calibrated to one separability (balanced accuracy of a logistic tile typer on held-out
slides), with irregular tissue shapes. Every model is trained on the same patient-level
folds as the rest of the benchmark. Per cell and model: pooled out-of-fold AUROC (mean
over seeds), bootstrap CI, shuffled-coordinates AUROC, and the train/validation gap
(lowest training loss, training loss and validation AUROC at the kept epoch, and whether
the fold memorised: training loss < 0.05 while the kept validation AUROC < 0.6). The
``oracle`` row is a logistic regression on the same statistics computed from the planted
types instead of modules: it says the label is in the data, and is never counted as a model.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

SWEEP_MODELS = [
    "mean_pool",
    "module_stats",
    "module_stats_cw",
    "module_graph_cw",
    "tile_gnn",
    "tile_gnn_modules",
]
QUICK_SWEEP: dict[str, Any] = {
    "cohorts": ["S1", "S2"],
    # Fewer models than the full sweep, to fit 20 minutes on 2 cores: default tile_gnn
    # (at chance under offsets and nuisance noise, spatial_sweep_quick_v1.json) and
    # module_graph_cw (never ahead of tile_gnn_modules there) run in the full sweep only.
    "models": ["mean_pool", "module_stats", "module_stats_cw", "tile_gnn_modules"],
    "noises": ["isotropic", "offsets", "nuisance"],
    "separabilities": [0.95, 0.85],
    "slides": 80,
    "seeds": [0],
    "epochs": 20,
    "patience": 6,
    "shape": "irregular",
    "train_slides_list": [None],
}
FULL_SWEEP: dict[str, Any] = {
    "cohorts": ["S1", "S2", "S3"],
    "noises": ["isotropic", "offsets", "nuisance"],
    "separabilities": [0.99, 0.95, 0.9, 0.85, 0.8],
    "slides": 200,
    "seeds": [0, 1, 2],
    "epochs": 20,
    "patience": 6,
    "shape": "irregular",
    "train_slides_list": [40, 80, None],
    "models": SWEEP_MODELS,
}


def rank_auroc(y: Any, p: Any) -> float:
    """Binary AUROC as the Mann-Whitney statistic with average ranks for ties (label 1 is
    positive): the value ``roc_auc_score`` gives, up to float round-off, without its input
    validation. A bootstrap CI calls it 1000 times; through scikit-learn that was the
    largest single cost of a sweep cell after training (profile in docs/spatial.md)."""
    from scipy.stats import rankdata

    pos = np.asarray(y).reshape(-1) == 1
    ranks = rankdata(np.asarray(p, dtype=np.float64).reshape(-1))
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def oracle(cohort: Any, fold_column: str = "fold") -> dict[str, Any]:
    """Logistic (ridge for regression) on planted-type statistics, on the benchmark's folds
    (fold k tests; k+1, the models' validation fold, is left out as it is for them)."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from synthetic.spatial import TYPES
    from training.mil.evaluate import bootstrap_ci
    from training.spatial.stats import module_features

    table = cohort.table
    # real_S1's planted types use their own numbering (synthetic.slides.nests)
    k = max(len(TYPES), 1 + max(int(np.max(cohort.types[s])) for s in table["slide_id"]))
    feats = {
        sid: module_features(cohort.types[sid], cohort.coords[sid], k) for sid in table["slide_id"]
    }
    folds = sorted(table[fold_column].unique())
    y_all, p_all = [], []
    for i, fold in enumerate(folds):
        test = table[table[fold_column] == fold]
        train = table[~table[fold_column].isin([fold, folds[(i + 1) % len(folds)]])]
        x_tr = np.stack([feats[s] for s in train["slide_id"]])
        x_te = np.stack([feats[s] for s in test["slide_id"]])
        if cohort.task == "binary":
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(x_tr, train["label"].to_numpy())
            p_all.append(clf.predict_proba(x_te)[:, 1])
            y_all.append(test["label"].to_numpy())
        else:
            reg = make_pipeline(StandardScaler(), Ridge(alpha=10.0))
            reg.fit(x_tr, train[cohort.targets].to_numpy())
            p_all.append(reg.predict(x_te))
            y_all.append(test[cohort.targets].to_numpy())
    y, p = np.concatenate(y_all), np.concatenate(p_all)
    if cohort.task == "binary":
        lo, hi = bootstrap_ci(y, p, rank_auroc, n_boot=1000)
        return {"auroc": float(roc_auc_score(y, p)), "auroc_ci": [lo, hi]}
    return {
        "pearson": {
            t: float(stats.pearsonr(p[:, j], y[:, j])[0]) for j, t in enumerate(cohort.targets)
        }
    }


def permute_within_folds(table: Any, seed: int) -> Any:
    """``table`` with its labels permuted among the patients of each fold (a patient's
    slides keep one label). Permuting across the whole cohort, as this control did first,
    unbalances the folds: a model that learns only its training folds' base rate then ranks
    the test folds with fewer positives higher, and the pooled out-of-fold AUROC of a model
    that knows nothing falls below 0.5 (S1 at 160 training slides: ``module_stats`` 0.41
    [0.34, 0.48] on labels permuted across the cohort). Within folds every fold keeps its
    real class balance, so an uninformative model pools to 0.5."""
    rng = np.random.default_rng(seed)
    out = table.copy()
    patients = out.groupby("patient_id", sort=True).agg(
        label=("label", "first"), fold=("fold", "first")
    )
    for _, members in patients.groupby("fold", sort=True):
        patients.loc[members.index, "label"] = rng.permutation(members["label"].to_numpy())
    out["label"] = out["patient_id"].map(patients["label"]).to_numpy()
    return out


def permuted_control(
    cohort: Any, models: list[str], params: dict[str, Any], evaluate_cohort: Any
) -> dict[str, Any]:
    """The leakage control: every model (and the oracle) on the same cohort and folds with
    the labels permuted (seeded; first seed only; :func:`permute_within_folds`). Pooled
    AUROC and CI should straddle 0.5."""
    from dataclasses import replace

    shuffled = replace(cohort, table=permute_within_folds(cohort.table, seed=12345))
    res = evaluate_cohort(shuffled, models, {**params, "seeds": params["seeds"][:1]})
    return {
        "auroc": res["auroc"],
        "auroc_ci": res["auroc_ci"],
        "oracle": oracle(shuffled),
        "seeds": params["seeds"][:1],
    }


def fit_gap(runs_per_seed: list[list[Any]]) -> dict[str, Any]:
    """Train/validation gap over every fold of every seed."""
    from training.mil.train import memorised

    folds = []
    for runs in runs_per_seed:
        for run in runs:
            if not run.history:
                continue
            kept = run.history[run.best_epoch]
            min_loss = min(h["train_loss"] for h in run.history)
            folds.append(
                {
                    "min_train_loss": min_loss,
                    "kept_train_loss": kept["train_loss"],
                    "kept_val_auroc": kept["val_score"],
                    "best_epoch": run.best_epoch,
                    "epochs_run": len(run.history),
                    # the trainer's own rule, which also warns the user (training.mil.train)
                    "memorised": memorised(run.history, run.best_epoch, "binary"),
                }
            )
    if not folds:
        return {}
    return {
        "min_train_loss": float(np.mean([f["min_train_loss"] for f in folds])),
        "kept_train_loss": float(np.mean([f["kept_train_loss"] for f in folds])),
        "kept_val_auroc": float(np.nanmean([f["kept_val_auroc"] for f in folds])),
        "memorised_folds": int(sum(f["memorised"] for f in folds)),
        # the learning curve's use: how many epochs each fold ran and which one it kept
        "best_epochs": [f["best_epoch"] for f in folds],
        "epochs_run": [f["epochs_run"] for f in folds],
        "folds": len(folds),
    }


def _run_cell(
    name: str,
    noise: str,
    separability: float,
    params: dict[str, Any],
    models: list[str],
    tmp: Path,
    evaluate_cohort: Any,
    side: int,
) -> list[dict[str, Any]]:
    """One cohort x noise model x separability: write the cohort, then per training-set
    size train every model (and the permuted control); the cells, one per size."""
    from synthetic.spatial import NoiseSpec, write_spatial_cohort

    spec = NoiseSpec(noise, separability)
    store = tmp / f"{name}_{spec.tag}"
    built = time.perf_counter()
    cohort = write_spatial_cohort(
        str(store),
        name,
        n_slides=params["slides"],
        side=side,
        noise=spec,
        shape=params["shape"],
    )
    build_s = time.perf_counter() - built
    cells = []
    try:
        for train_slides in params["train_slides_list"]:
            res = evaluate_cohort(cohort, models, {**params, "train_slides": train_slides})
            cell = {
                "cohort": name,
                "noise": noise,
                "separability": separability,
                "noise_scale": cohort.meta["noise_scale"],
                "train_slides": train_slides,
                "build_s": build_s,
                "oracle": oracle(cohort),
                "gap": {m: fit_gap(runs) for m, runs in res["runs"].items()},
            }
            for key in (
                "auroc",
                "auroc_ci",
                "auroc_per_seed",
                "shuffle_auroc",
                "pearson",
                "seconds",
            ):
                cell[key] = res[key]
            if params.get("permuted") and cohort.task == "binary":
                cell["permuted"] = permuted_control(
                    cohort, models, {**params, "train_slides": train_slides}, evaluate_cohort
                )
            cells.append(cell)
            print(
                f"{name} {spec.tag} train={train_slides} oracle={cell['oracle'].get('auroc')} "
                f"{ {m: round(v, 3) for m, v in res['auroc'].items()} }",
                flush=True,
            )
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return cells


def run_sweep(
    params: dict[str, Any],
    models: list[str],
    tmp: Path,
    out: str,
    result: dict[str, Any],
    evaluate_cohort: Any,
    side_of: dict[str, int],
    workers: int = 1,
) -> dict[str, Any]:
    """Every cell of the grid; with ``workers`` > 1 the cells run in that many processes
    (spawned, one torch thread each), each cell whole in one process so its models share
    the fitted modules and statistics. Cells are independent and seeded, so the results do
    not depend on ``workers``; the JSON lists them in grid order either way."""
    from benchmarks._common import write_json
    from infra.errors import ConfigError

    if workers < 1:
        raise ConfigError(f"sweep workers must be >= 1, got {workers}")
    result.setdefault("cells", [])
    grid = [
        (name, noise, separability)
        for name in params["cohorts"]
        for noise in params["noises"]
        for separability in params["separabilities"]
    ]
    done: dict[int, list[dict[str, Any]]] = {}

    def record(i: int, cells: list[dict[str, Any]]) -> None:
        done[i] = cells
        result["cells"] = [c for j in sorted(done) for c in done[j]]
        write_json(out, {**result, "partial": True})

    def args(cell: tuple[str, str, float]) -> tuple[Any, ...]:
        name, noise, separability = cell
        return (
            name,
            noise,
            separability,
            params,
            models,
            tmp,
            evaluate_cohort,
            side_of.get(name, 16),
        )

    if workers == 1 or len(grid) == 1:
        for i, cell in enumerate(grid):
            record(i, _run_cell(*args(cell)))
        return result
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: the parent has torch (and its thread pools) loaded
    with ProcessPoolExecutor(
        max_workers=min(workers, len(grid)), mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = {pool.submit(_run_cell, *args(cell)): i for i, cell in enumerate(grid)}
        for future in as_completed(futures):
            record(futures[future], future.result())
    return result


def plot_sweep(result: dict[str, Any], png: str | Path) -> None:
    """One panel per cohort × noise model: pooled AUROC against single-tile separability,
    one line per model, the oracle dashed, chance dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in result["cells"] if c.get("train_slides") is None]
    cohorts = sorted({c["cohort"] for c in cells})
    noises = [
        n for n in ("isotropic", "offsets", "nuisance") if any(c["noise"] == n for c in cells)
    ]
    models = result["models"]
    fig, axes = plt.subplots(
        len(cohorts),
        len(noises),
        figsize=(4 * len(noises), 3.2 * len(cohorts)),
        squeeze=False,
        sharey=True,
    )
    for r, cohort in enumerate(cohorts):
        for col, noise in enumerate(noises):
            ax = axes[r][col]
            part = sorted(
                (c for c in cells if c["cohort"] == cohort and c["noise"] == noise),
                key=lambda c: c["separability"],
            )
            xs = [100 * c["separability"] for c in part]
            for model in models:
                ax.plot(xs, [c["auroc"].get(model, np.nan) for c in part], marker="o", label=model)
            ax.plot(
                xs,
                [c["oracle"].get("auroc", np.nan) for c in part],
                "k--",
                label="oracle (planted types)",
            )
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{cohort}, {noise}")
            ax.set_xlabel("single-tile separability (%)")
            ax.invert_xaxis()
            ax.set_ylim(0.3, 1.02)
            if col == 0:
                ax.set_ylabel("pooled out-of-fold AUROC")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(png, dpi=110)
    plt.close(fig)


def markdown_table(result: dict[str, Any]) -> str:
    """The sweep as a markdown table: pooled AUROC per cell and model, the oracle first;
    ``†n``: n folds memorised (training loss < 0.05 while the kept validation AUROC < 0.6)."""
    models = result["models"]
    lines = [
        "| cohort | noise | separability | oracle | " + " | ".join(f"`{m}`" for m in models) + " |",
        "|---|---|---|---|" + "---|" * len(models),
    ]
    for c in result["cells"]:
        cells = []
        for m in models:
            value = c["auroc"].get(m)
            text = "—" if value is None else f"{value:.2f}"
            memorised = c.get("gap", {}).get(m, {}).get("memorised_folds", 0)
            cells.append(text + (f" †{memorised}" if memorised else ""))
        size = "" if c.get("train_slides") is None else f", {c['train_slides']} training slides"
        lines.append(
            f"| {c['cohort']} | {c['noise']}{size} | {100 * c['separability']:.0f}% | "
            f"{c['oracle'].get('auroc', float('nan')):.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)
