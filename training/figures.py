"""Evaluation figures a reader can check: ROC with CI band, calibration, predicted vs true.

Drawn with matplotlib's Agg backend (no display needed, safe on Ray workers) and
written atomically. Every panel carries axis labels, tick labels, ``n`` (slides and
positives) and the metric with its 95% CI in the legend, never over the frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infra.files import atomic_write

__all__ = [
    "colour_limits",
    "draw_tile_map",
    "pyplot",
    "roc_band",
    "save_figure",
    "save_png",
    "write_regression_png",
    "write_roc_calibration_png",
]

#: max/min below which per-tile values are called near-uniform (issue 30: 0.0364-0.0376
#: attention once filled the whole colour range and looked like a strong pattern).
NEAR_UNIFORM = 1.1
#: A near-uniform map is drawn on median ÷/× this, so a few percent stays a few shades.
_UNIFORM_SPAN = 1.25


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display; safe on Ray workers)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig: Any, path: str | Path, *, dpi: int = 120, overwrite: bool = True, title: str | None = None
) -> Path:
    """Write ``fig`` as a PNG atomically and close it; ``overwrite=False`` refuses an
    existing file (:class:`~infra.errors.OutputExistsError`), never replacing it.
    ``title`` also goes into the PNG's Title text chunk, for tools that list files."""
    path = Path(path)
    metadata = {"Title": title} if title else None
    try:
        with atomic_write(path, "wb", overwrite=overwrite) as handle:
            fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight", metadata=metadata)
    finally:
        pyplot().close(fig)
    return path


def save_png(image: Any, path: str | Path) -> Path:
    """Write a PIL image atomically (temp file then rename): no reader sees half an image."""
    with atomic_write(path) as handle:
        image.save(handle, format="PNG")
    return Path(path)


def roc_band(
    y: np.ndarray,
    p: np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fpr grid, tpr, tpr 2.5%, tpr 97.5%): the curve on a common grid and a bootstrap
    band (resampling ``groups``, e.g. patients, when given, else slides)."""
    grid = np.linspace(0, 1, 101)
    fpr, tpr, _ = roc_curve(y, p)
    main = np.interp(grid, fpr, tpr)
    main[0] = 0.0
    rng = np.random.default_rng(seed)
    units = np.unique(groups) if groups is not None else np.arange(len(y))
    curves = []
    for _ in range(n_boot):
        pick = rng.choice(units, len(units), replace=True)
        idx = (
            np.concatenate([np.flatnonzero(groups == g) for g in pick])
            if groups is not None
            else pick
        )
        if len(np.unique(y[idx])) < 2:
            continue
        f, t, _ = roc_curve(y[idx], p[idx])
        curves.append(np.interp(grid, f, t))
    if not curves:
        return grid, main, main, main
    lo, hi = np.quantile(np.stack(curves), [0.025, 0.975], axis=0)
    return grid, main, lo, hi


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at distinct scores, like scikit-learn's (NumPy only: the
    bootstrap band draws hundreds)."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = last + 1 - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    return fpr, tpr, np.r_[np.inf, p_sorted[last]]


def _ci_text(metric: Mapping[str, float]) -> str:
    lo, hi = metric.get("ci_low", np.nan), metric.get("ci_high", np.nan)
    ci = f" (95% CI {lo:.2f}–{hi:.2f})" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{metric['value']:.3f}{ci}"


def write_roc_calibration_png(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    aurocs: Mapping[str, Mapping[str, float]] | None = None,
    groups: Mapping[str, np.ndarray] | None = None,
    calibration: bool = True,
    title: str | None = None,
    overwrite: bool = True,
) -> Path:
    """ROC (with bootstrap band) and, when scores are probabilities, a reliability plot.

    ``curves`` maps a name to (y in {0,1}, score); ``aurocs`` optional precomputed
    {"value", "ci_low", "ci_high"} per name (else computed, without CI).
    """
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score

    plt = pyplot()
    ncols = 2 if calibration else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 5.0), squeeze=False)
    roc_ax = axes[0][0]
    roc_ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, (y, p)) in enumerate(curves.items()):
        y = np.asarray(y, dtype=int).reshape(-1)
        p = np.asarray(p, dtype=float).reshape(-1)
        colour = colours[i % len(colours)]
        g = None if groups is None else np.asarray(groups[name])
        grid, tpr, lo, hi = roc_band(y, p, groups=g)
        auc = (aurocs or {}).get(name) or {"value": float(roc_auc_score(y, p))}
        n_pos = int(y.sum())
        label = f"{name}: AUROC {_ci_text(auc)}\nn={len(y)} ({n_pos} pos, {len(y) - n_pos} neg)"
        roc_ax.fill_between(grid, lo, hi, color=colour, alpha=0.2, lw=0)
        roc_ax.plot(grid, tpr, color=colour, lw=2, label=label)
        if calibration:
            cal_ax = axes[0][1]
            bins = max(3, min(10, len(y) // 10))
            frac, mean = calibration_curve(y, np.clip(p, 0, 1), n_bins=bins, strategy="quantile")
            cal_ax.plot(
                mean, frac, marker="o", color=colour, label=f"{name} ({bins} quantile bins)"
            )
    roc_ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="false positive rate (1 − specificity)",
        ylabel="true positive rate (sensitivity)",
        title="ROC, 95% bootstrap band",
    )
    roc_ax.set_aspect("equal")
    roc_ax.grid(alpha=0.3)
    roc_ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    if calibration:
        cal_ax = axes[0][1]
        cal_ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfectly calibrated")
        cal_ax.set(
            xlim=(0, 1),
            ylim=(0, 1.02),
            xlabel="mean predicted probability",
            ylabel="observed fraction positive",
            title="calibration",
        )
        cal_ax.set_aspect("equal")
        cal_ax.grid(alpha=0.3)
        cal_ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, overwrite=overwrite, title=title)


def write_regression_png(
    y: np.ndarray,
    p: np.ndarray,
    path: str | Path,
    *,
    metrics: Mapping[str, Mapping[str, float]],
    label: str,
    overwrite: bool = True,
    title: str | None = None,
    unit: str = "slides",
) -> Path:
    """Predicted vs observed with the identity line, n and r / R² (CIs) in the legend;
    ``title`` (what was predicted, by which model, from how many slides and patients)
    over the panel, ``n`` counted in ``unit``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.scatter(y, p, s=18, alpha=0.7)
    lo, hi = float(np.nanmin([y.min(), p.min()])), float(np.nanmax([y.max(), p.max()]))
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.6", lw=1, label="identity")
    ax.set(xlabel=f"observed {label}", ylabel=f"predicted {label} (out of fold)")
    text = "\n".join(f"{k}: {_ci_text(v)}" for k, v in metrics.items() if "value" in v)
    ax.set_title(f"n={len(y)} {unit}", fontsize=10)
    ax.legend(title=text, loc="upper left", fontsize=8, title_fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10, y=1.03)  # clear of the panel's own n= title
    return save_figure(fig, path, overwrite=overwrite, title=title)


def colour_limits(values: np.ndarray) -> tuple[float, float, str]:
    """(vmin, vmax, note) for per-tile values, honest about a near-uniform range.

    Values whose max/min is below :data:`NEAR_UNIFORM` are drawn on a scale fixed
    around their median (÷/× 1.25) instead of being stretched over the whole colour map,
    and the note says so; otherwise the scale is the values' own range. The note always
    states the range.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0, "no values"
    lo, hi = float(finite.min()), float(finite.max())
    span = f"values {lo:.3g}–{hi:.3g}"
    if lo > 0 and hi / lo < NEAR_UNIFORM:
        mid = float(np.median(finite))
        return (
            mid / _UNIFORM_SPAN,
            mid * _UNIFORM_SPAN,
            f"{span}, near-uniform (max/min {hi / lo:.3f}; scale fixed at median ÷/× {_UNIFORM_SPAN})",
        )
    if hi <= lo:
        return lo - 0.5, hi + 0.5, f"{span}, all equal"
    return lo, hi, span


def _nice_length(span_mm: float) -> float:
    """A 1/2/5 × 10^k length near a fifth of the image width, in mm."""
    target = max(span_mm / 5.0, 1e-6)
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


def _scale_bar(ax: Any, width_mm: float) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = _nice_length(width_mm)
    text = f"{length:g} mm" if length >= 1 else f"{length * 1000:g} µm"
    bar = AnchoredSizeBar(
        ax.transData,
        length,
        text,
        "lower left",
        pad=0.4,
        sep=3,
        color="black",
        frameon=True,
        size_vertical=width_mm / 150,
    )
    bar.patch.set_alpha(0.7)
    ax.add_artist(bar)


def draw_tile_map(
    thumb: np.ndarray,
    grid: np.ndarray,
    path: str | Path,
    *,
    level0_size: tuple[int, int],
    mpp: float,
    origin: tuple[int, int],
    stride: float,
    title: str,
    label: str,
    cmap: str = "inferno",
    alpha: float = 0.6,
    overwrite: bool = True,
) -> Path:
    """Per-tile values (``grid``: one cell per tile, NaN where none; ``origin``/``stride``
    in level-0 px) over the slide thumbnail: axes in mm, a colour bar whose label states
    the range, a scale bar and a title; about 1,000 px wide."""
    plt = pyplot()
    width0, height0 = level0_size
    mm = mpp / 1000.0
    vmin, vmax, note = colour_limits(grid)
    fig, ax = plt.subplots(figsize=(9.0, max(3.5, 7.5 * height0 / max(width0, 1)) + 1.0))
    ax.imshow(thumb[..., :3], extent=(0, width0 * mm, height0 * mm, 0))
    x0, y0 = origin
    extent = (
        x0 * mm,
        (x0 + grid.shape[1] * stride) * mm,
        (y0 + grid.shape[0] * stride) * mm,
        y0 * mm,
    )
    image = ax.imshow(
        np.ma.masked_invalid(grid),
        extent=extent,
        cmap=cmap,
        alpha=alpha,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(f"{label}\n({note})", fontsize=8)
    ax.set(xlabel="x (mm)", ylabel="y (mm)", xlim=(0, width0 * mm), ylim=(height0 * mm, 0))
    _scale_bar(ax, width0 * mm)
    n_tiles = int(np.isfinite(grid).sum())
    ax.set_title(f"{title}\n{n_tiles} tiles; {note}", fontsize=10)
    return save_figure(fig, path, overwrite=overwrite)
