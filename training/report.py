"""``report.html``: one self-contained page per run folder, for a talk or a lab notebook.

A probe folder (``metrics.json``, ``predictions.parquet``, ``probe.png``), a multi-label
probe folder (``summary.tsv`` and a folder per label) or a ``slidebank train`` run
(``summary.json``, ``predictions.parquet``, ``<set>_roc.png``, ``attention/*.png``) is
read back from its files, so the page shows what the run wrote and nothing else.

The page has the metrics table with 95% CIs, the class mapping, the titled ROC and
calibration figures, the top and bottom slides by the positive class's score (with their
full-size attention over the tissue when the run wrote attention), the slides left out,
and the config. Every image is inlined as a ``data:`` URI and the style sheet is in the
page: no script, no CDN, nothing fetched, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from infra.errors import ConfigError, SlidebankError
from infra.files import atomic_write_text

__all__ = ["REPORT_NAME", "chromium_binary", "screenshot", "write_report"]

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
#: slides shown at each end of the score ranking
N_EXTREMES = 3

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;
margin:2em auto;max-width:1200px;color:#1b1b1b;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
figure{margin:.6em 0}figcaption{color:#444;font-size:.9em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
.pos{color:#b03030;font-weight:600}
"""


class ReportError(SlidebankError, ValueError):
    """A folder that is not a run folder, or a screenshot that could not be taken."""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _image(path: Path, caption: str | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = caption or path.name
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">{cap}</figure>'


def _num(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    return f"{number:.3f}" if number == number else "–"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, float)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{_num(cell) if numeric else _esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _metric_rows(metrics: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name, m in metrics.items():
        if name == "n" or not isinstance(m, Mapping) or "value" not in m:
            continue  # n is in the heading (with the positives)
        rows.append(
            [name, float(m["value"]), float(m.get("ci_low", "nan")), float(m.get("ci_high", "nan"))]
        )
    return rows


def _config_block(config: Any) -> str:
    text = html.escape(json.dumps(config, indent=2, default=str), quote=False)
    return f"<h2>Config</h2><pre>{text}</pre>"


def _dropped_block(dropped: Mapping[str, Sequence[str]]) -> str:
    if not dropped:
        return "<p>No labelled slide was left out.</p>"
    items = "".join(
        f"<li>{_esc(reason.replace('_', ' '))} ({len(ids)}): {_esc(', '.join(map(str, ids)))}</li>"
        for reason, ids in dropped.items()
    )
    return f"<h2>Slides left out</h2><ul>{items}</ul>"


def _extremes(
    frame: pd.DataFrame, score: str, columns: Sequence[str], attention: Mapping[str, Path]
) -> str:
    """The top and bottom slides by ``score``, with their attention pictures if any."""
    ranked = frame.sort_values(score, ascending=False, kind="mergesort")
    parts = []
    for name, part in (
        ("Top", ranked.head(N_EXTREMES)),
        ("Bottom", ranked.tail(N_EXTREMES).iloc[::-1]),
    ):
        shown = [c for c in columns if c in part.columns]
        rows = [[*(row[c] for c in shown), float(row[score])] for _, row in part.iterrows()]
        parts.append(f"<h3>{name} {len(part)} slides by {_esc(score)}</h3>")
        parts.append(_table([*shown, score], rows))
        for sid in part["slide_id"].astype(str):
            if sid in attention:
                parts.append(
                    _image(attention[sid], f"{sid}: attention over the tissue ({score} ranking)")
                )
    return "".join(parts)


def _page(title: str, subtitle: str, body: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_esc(title)}</h1><p class='sub'>{_esc(subtitle)}</p>"
        + "".join(body)
        + "</body></html>\n"
    )


def _mapping_block(mapping: Mapping[str, Any], label: str) -> str:
    if not mapping or mapping.get("positive") is None:
        return ""
    score = f" ({_esc(mapping['score'])})" if mapping.get("score") else ""
    return (
        f"<p>Positive class: <span class='pos'>{_esc(label)}={_esc(mapping['positive'])}</span>"
        f", negative: {_esc(mapping.get('negative', ''))}{score}. ROC, AUPRC and calibration "
        "are about the positive class.</p>"
    )


def _probe_page(folder: Path) -> str:
    metrics = json.loads((folder / "metrics.json").read_text())
    config = metrics.get("config") or {}
    label = str(config.get("label", "label"))
    model = config.get("model", "probe")
    unit = metrics.get("aggregate", "slide")
    title = f"{label}: {model} probe"
    subtitle = (
        f"{metrics.get('task')} · {metrics.get('n_slides')} slides, {metrics.get('n_patients')} "
        f"patients, {metrics.get('folds')} patient-level folds · metrics per "
        + {
            "patient": "patient (mean of its slides)",
            "patient-max": "patient (its highest slide score)",
        }.get(unit, "slide")
        + ", 95% patient-bootstrap CIs"
    )
    mapping = metrics.get("class_mapping") or {}
    body = [
        "<h2>Metrics</h2>",
        _table(["metric", "value", "95% CI low", "95% CI high"], _metric_rows(metrics["metrics"])),
        _mapping_block(mapping, label),
    ]
    test = metrics.get("test") or {}
    if test.get("p_value") is not None:
        body.append(
            f"<p>{_esc(test['metric'])} against {_esc(test['null'])}: p = "
            f"{float(test['p_value']):.3g} ({_esc(test.get('method', ''))}).</p>"
        )
    if (folder / "probe.png").exists():
        body += ["<h2>Figures</h2>", _image(folder / "probe.png")]
    predictions = pd.read_parquet(folder / "predictions.parquet")
    score = f"score_{mapping['positive']}" if mapping.get("positive") else None
    if score is None and "predicted" in predictions and metrics.get("task") == "regression":
        score = "predicted"
    if score and score in predictions:
        body += [
            "<h2>Top and bottom slides (out-of-fold)</h2>",
            _extremes(predictions, score, ["slide_id", "patient_id", label, "fold"], {}),
        ]
    body += [_dropped_block(metrics.get("dropped") or {}), _config_block(config)]
    return _page(title, subtitle, body)


def _multi_page(folder: Path) -> str:
    table = pd.read_csv(folder / "summary.tsv", sep="\t")
    title = f"probe of {len(table)} labels"
    subtitle = "shared patient-level folds; p: patient bootstrap vs chance, q: Benjamini–Hochberg"
    columns = [
        c
        for c in ("label", "metric", "value", "ci_low", "ci_high", "n_slides", "p_value", "q_value")
        if c in table.columns
    ]
    rows = [
        [float(v) if isinstance(v, float) else v for v in row]
        for row in table[columns].itertuples(index=False)
    ]
    body = ["<h2>Labels</h2>", _table(columns, rows), "<h2>Figures</h2>"]
    for png in sorted(folder.glob("*/probe.png")):
        body.append(_image(png, png.parent.name))
    return _page(title, subtitle, body)


def _train_page(folder: Path) -> str:
    summary = json.loads((folder / "summary.json").read_text())
    config = summary.get("config") or {}
    labels = list(config.get("labels") or [])
    model = (config.get("model") or {}).get("model", "MIL")
    folds = len(summary.get("checkpoints") or [])
    title = f"{', '.join(labels)}: {model}"
    subtitle = (
        f"{summary.get('task')} · run {summary.get('run_id')} · "
        f"{f'{folds}-fold CV' if folds > 1 else 'one train/val/test split'} · "
        "pooled out-of-fold metrics"
        + {
            "patient": " per patient (mean of its slides)",
            "patient-max": " per patient (its highest slide score)",
        }.get(str(summary.get("aggregate")), "")
        + ", 95% bootstrap CIs"
    )
    body = ["<h2>Metrics</h2>"]
    for name, result in summary.items():
        if isinstance(result, Mapping) and "pooled" in result:
            pooled = result["pooled"]
            n = pooled.get("n") or {}
            body.append(
                f"<h3>{_esc(name)} (n={int(n.get('value', 0))}, "
                f"{int(n.get('positives', 0))} positive)</h3>"
            )
            body.append(
                _table(["metric", "value", "95% CI low", "95% CI high"], _metric_rows(pooled))
            )
        elif isinstance(result, Mapping) and "mean_pearson_r" in result:
            body.append(
                f"<h3>{_esc(name)}</h3><p>mean Pearson r {float(result['mean_pearson_r']):.3f}, "
                f"{result.get('genes_q_below_0.05')} genes with q &lt; 0.05</p>"
            )
    mapping = summary.get("classes") or {}
    body.append(_mapping_block(mapping, labels[0] if labels else "label"))
    pngs = sorted(folder.glob("*_roc.png"))
    if pngs:
        body.append("<h2>Figures</h2>")
        body += [_image(p) for p in pngs]
    attention = {p.stem: p for p in sorted((folder / "attention").glob("*.png"))}
    predictions_path = folder / "predictions.parquet"
    if labels and predictions_path.exists() and summary.get("task") == "binary":
        predictions = pd.read_parquet(predictions_path)
        test = predictions[predictions["set"] == "test"] if "set" in predictions else predictions
        score = f"pred:{labels[0]}"
        if score in test and not test.empty:
            body += [
                "<h2>Top and bottom test slides</h2>",
                _extremes(
                    test,
                    score,
                    ["slide_id", "patient_id", f"target:{labels[0]}", "fold"],
                    attention,
                ),
            ]
    body.append(_config_block(config))
    return _page(title, subtitle, body)


def write_report(folder: str | Path) -> Path:
    """Write ``<folder>/report.html`` for the run in ``folder`` and return its path."""
    folder = Path(folder)
    if (folder / "summary.json").exists():
        page = _train_page(folder)
    elif (folder / "metrics.json").exists() and (folder / "predictions.parquet").exists():
        page = _probe_page(folder)
    elif (folder / "summary.tsv").exists():
        page = _multi_page(folder)
    else:
        raise ReportError(
            f"{folder} is not a run folder: it has no summary.json (slidebank train), "
            "metrics.json (slidebank probe) or summary.tsv (several labels)"
        )
    path = folder / REPORT_NAME
    atomic_write_text(path, page)
    return path


def chromium_binary() -> str | None:
    """The Chromium (or Chrome) binary on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    page: str | Path,
    png: str | Path,
    *,
    width: int = 1280,
    height: int = 2400,
    timeout: float = 120,
) -> Path:
    """Render ``page`` in headless Chromium into ``png`` (the browser on PATH; none is
    downloaded)."""
    binary = chromium_binary()
    if binary is None:
        raise ReportError(
            "no chromium on PATH for the screenshot (Debian: apt-get install chromium)"
        )
    page, png = Path(page).resolve(), Path(png).resolve()
    if not page.is_file():
        raise ConfigError(f"{page}: no such report")
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not png.exists():
        raise ReportError(
            f"chromium could not screenshot {page} (exit {done.returncode}): "
            f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'}"
        )
    return png
