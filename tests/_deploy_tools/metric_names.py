"""Which Prometheus series the code emits, and which ones a PromQL expression reads.

The Grafana board must only plot series that exist. Rather than a hand-kept list, the
emitted names are derived from the code's own metric definitions: the ``METRIC_NAMES``
table in ``infra/metrics.py`` plus any ``Counter/Gauge/Histogram("literal", ...)`` call in
the packages, turned into exported names by Ray's rules (prefix ``ray_``; counters end in
``_total``; histograms export ``_bucket``, ``_sum``, ``_count``). The slow multi-node test
checks those rules against a real node's metrics endpoint.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

__all__ = ["code_metrics", "exported_names", "promql_metric_names"]

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("infra", "ingest", "features", "training", "slidebank")
_KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}


def _table(tree: ast.Module) -> dict[str, tuple[str, tuple[str, ...]]]:
    for node in ast.walk(tree):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(target, ast.Name)
            and target.id == "METRIC_NAMES"
            and node.value is not None
        ):
            table = ast.literal_eval(node.value)
            return {name: (kind, tuple(tags)) for name, (kind, _desc, tags) in table.items()}
    return {}


def _calls(tree: ast.Module) -> dict[str, tuple[str, tuple[str, ...]]]:
    found = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if (
            func in _KINDS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            tags: tuple[str, ...] = ()
            for kw in node.keywords:
                if kw.arg == "tag_keys":
                    try:
                        tags = tuple(ast.literal_eval(kw.value))
                    except ValueError:  # computed tag keys: names still count
                        tags = ()
            found[node.args[0].value] = (_KINDS[func], tags)
    return found


def code_metrics(root: Path = ROOT) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Metric name -> (kind, tag keys) for every metric defined in slidebank's packages."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "deploy" in path.relative_to(root).parts:
                continue
            text = path.read_text()
            if "METRIC_NAMES" not in text and not any(k + "(" in text for k in _KINDS):
                continue
            tree = ast.parse(text)
            out.update(_calls(tree))
            out.update(_table(tree))
    return out


def exported_names(name: str, kind: str) -> set[str]:
    """Prometheus series names Ray exports for one metric."""
    base = f"ray_{name}"
    if kind == "counter":
        return {base if base.endswith("_total") else base + "_total"}
    if kind == "histogram":
        return {base + "_bucket", base + "_sum", base + "_count"}
    return {base}


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names read by a PromQL expression (functions, labels, variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "0", text)  # dashboard variables
    text = re.sub(r"(?<![A-Za-z0-9_])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", "0", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names
