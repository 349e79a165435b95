"""The Grafana board plots only series that exist: slidebank's own metrics as the code
defines them, and Ray's built-in node/Data metrics as the installed Ray defines them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests._deploy_tools.fixtures import rendered, renders  # noqa: F401
from tests._deploy_tools.metric_names import code_metrics, exported_names, promql_metric_names

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "infra" / "deploy" / "grafana" / "slidebank.json"
# Labels every series carries besides its own tag keys: Ray's defaults and what the
# PodMonitor adds by relabelling, plus Prometheus' target labels and histogram buckets.
COMMON_LABELS = {
    "ray_io_cluster",
    "ray_io_group",
    "instance",
    "job",
    "le",
    "SessionName",
    "NodeAddress",
    "Component",
    "WorkerId",
    "Version",
    "operator",
    "dataset",
}


def _ray_sources() -> str:
    import ray

    base = Path(ray.__file__).parent
    files = [
        base / "dashboard" / "modules" / "reporter" / "reporter_agent.py",
        base / "data" / "_internal" / "execution" / "interfaces" / "op_runtime_metrics.py",
    ]
    return "\n".join(p.read_text() for p in files if p.exists())


def board_problems(board: dict[str, Any]) -> list[str]:
    """Everything wrong with a board (empty: fine)."""
    defined = code_metrics()
    ours = {
        series: (name, tags)
        for name, (kind, tags) in defined.items()
        for series in exported_names(name, kind)
    }
    ray_text = _ray_sources()
    problems = []
    ids = [p.get("id") for p in board.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids {ids}")
    variables = {v["name"] for v in board.get("templating", {}).get("list", [])}
    for panel in board.get("panels", []):
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(
                f"panel {panel.get('title')!r}: datasource is not the ${{datasource}} variable"
            )
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var in re.findall(r"\$(?:\{)?(\w+)", expr):
                if var not in variables and not var.startswith("__"):
                    problems.append(f"panel {panel.get('title')!r}: unknown variable ${var}")
            for series in promql_metric_names(expr):
                if series.startswith("ray_slidebank_"):
                    if series not in ours:
                        problems.append(
                            f"panel {panel.get('title')!r}: {series} is not emitted by the code"
                        )
                        continue
                    tags = set(ours[series][1])
                    used = set(re.findall(r"(\w+)\s*(?:=~|!=|!~|=)\s*\"", expr))
                    used |= {
                        w
                        for grp in re.findall(r"\bby\s*\(([^)]*)\)", expr)
                        for w in re.findall(r"\w+", grp)
                    }
                    unknown = used - tags - COMMON_LABELS
                    if unknown:
                        problems.append(
                            f"panel {panel.get('title')!r}: {series} has no label(s) {sorted(unknown)}"
                        )
                elif series.startswith("ray_"):
                    stem = re.sub(r"^ray_(data_)?|_(bucket|sum|count|total)$", "", series)
                    if not re.search(rf"\b{re.escape(stem)}\b", ray_text):
                        problems.append(
                            f"panel {panel.get('title')!r}: {series} is not a Ray metric"
                        )
                else:
                    problems.append(f"panel {panel.get('title')!r}: {series} has no known source")
    return problems


def test_every_plotted_series_is_emitted() -> None:
    board = json.loads(BOARD.read_text())
    assert board_problems(board) == []
    plotted = {
        s for p in board["panels"] for t in p["targets"] for s in promql_metric_names(t["expr"])
    }
    # The board covers every slidebank metric (a new metric needs a panel).
    for name, (kind, _) in code_metrics().items():
        assert exported_names(name, kind) & plotted, f"{name} is emitted but not plotted"


@pytest.mark.parametrize(
    ("title", "expr", "expected"),
    [
        ("typo", "sum(rate(ray_slidebank_tile_total[5m]))", "not emitted by the code"),
        ("bad label", "sum by (node) (rate(ray_slidebank_tiles_total[5m]))", "has no label"),
        ("not ray", "sum(ray_node_gpus_melted)", "not a Ray metric"),
        ("dcgm", "avg(DCGM_FI_DEV_GPU_UTIL)", "no known source"),
        ("var", "sum(rate(ray_slidebank_tiles_total[5m])) * $price", "unknown variable"),
    ],
)
def test_a_broken_panel_is_caught(title: str, expr: str, expected: str) -> None:
    board = json.loads(BOARD.read_text())
    board["panels"][0]["targets"] = [{"refId": "A", "expr": expr}]
    problems = board_problems(board)
    assert any(expected in p for p in problems), problems


def test_the_configmap_ships_the_same_board(rendered) -> None:  # noqa: F811
    (cm,) = [
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "slidebank-grafana-dashboard"
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["slidebank.json"]) == json.loads(BOARD.read_text())


def test_the_cost_table_uses_the_recorded_benchmark() -> None:
    """docs/cloud.md's measured rows are the figures in benchmarks/results/ingest.json,
    and its arithmetic (tiles ÷ tiles/s ÷ 3600 × $/h) holds."""
    doc = (ROOT / "docs" / "cloud.md").read_text()
    rows = json.loads((ROOT / "benchmarks" / "results" / "ingest.json").read_text())["rows"]
    rate = 2 * 0.403 / 8
    for encoder in ("handcrafted-he-v1", "timm:vit_small_patch16_224"):
        (row,) = [
            r
            for r in rows
            if r["encoder"] == encoder and r["case"] == "slidebank (Ray)" and r["cores"] == 2
        ]
        tps = row["tiles_per_s"]
        assert f"| {tps:.3g} |" in doc, (encoder, tps)
        per_slide = row["tiles"] / row["slides"]
        for tiles in (per_slide, 10_000):
            dollars = tiles * 1000 / tps / 3600 * rate
            assert f"**${dollars:.2f}**" in doc, (encoder, tiles, dollars)
