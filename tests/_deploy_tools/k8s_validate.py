"""Validate Kubernetes manifests (YAML on stdin, many documents) with kubernetes-validate.

Runs inside the ``lint`` tool environment; prints a JSON list of findings
``{"resource": "Kind/name", "error": "..."}`` (empty when everything is valid).
Built-in kinds are checked strictly (unknown fields are errors) against the bundled
schema of ``--version``. KubeRay kinds have no bundled schema: each of their pod
templates (head, worker groups, job submitter) is wrapped in a ``PodTemplate`` and
checked the same way, which is where typos hurt (a misspelt ``resources`` is silently
dropped by the API server). Other custom kinds are listed as ``skipped``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import kubernetes_validate
import yaml

BUILTIN_GROUPS = (
    "v1",
    "apps/v1",
    "batch/v1",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "policy/v1",
)


def ray_templates(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterSpec", spec) if doc["kind"] == "RayJob" else spec
    found = [("head", (cluster.get("headGroupSpec") or {}).get("template"))]
    found += [
        (f"worker:{w.get('groupName')}", w.get("template"))
        for w in cluster.get("workerGroupSpecs") or []
    ]
    if doc["kind"] == "RayJob" and spec.get("submitterPodTemplate"):
        found.append(("submitter", spec["submitterPodTemplate"]))
    return found


def check(doc: dict[str, Any], version: str) -> tuple[list[dict[str, str]], bool]:
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    errors = []

    def run(obj: dict[str, Any], label: str) -> None:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append({"resource": label, "error": f"{exc.message} at {path or '.'}"})

    if doc.get("apiVersion") in BUILTIN_GROUPS:
        run(doc, name)
        return errors, True
    if doc.get("kind") in ("RayCluster", "RayJob"):
        for where, template in ray_templates(doc):
            if not template:
                errors.append({"resource": f"{name} {where}", "error": "pod template missing"})
                continue
            run(
                {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"{doc['metadata']['name']}-{where.replace(':', '-')}"},
                    "template": template,
                },
                f"{name} {where}",
            )
        return errors, True
    return errors, False


def main(version: str) -> None:
    findings, skipped = [], []
    for doc in yaml.safe_load_all(sys.stdin):
        if not doc:
            continue
        errors, checked = check(doc, version)
        findings += errors
        if not checked:
            skipped.append(f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}")
    json.dump({"findings": findings, "skipped": skipped}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "1.34")
