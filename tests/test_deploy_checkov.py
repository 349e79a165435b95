"""checkov over the Terraform, the Kubernetes manifests and the Dockerfile: zero failed
checks, every skip justified inline, and slidebank's own KubeRay policies
(infra/deploy/checkov) loaded and passing on every RayCluster/RayJob. One checkov run
covers the real assets and the broken fixtures, which must fail the matching checks.
Offline: ``--skip-download`` (no Bridgecrew platform), registry modules not fetched.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests._deploy_tools.toolenv import tool_bin

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "_deploy_tools" / "broken"
SCANNED = [
    ROOT / "terraform",
    ROOT / "infra" / "deploy",
    BROKEN / "terraform",
    BROKEN / "k8s",
    BROKEN / "docker",
]
OUR_CHECKS = {f"CKV_SLIDEBANK_RAY_{i}" for i in range(1, 5)}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict[str, Any]]:
    """Every check result of one checkov run, each tagged with its file's absolute path."""
    out_dir = tmp_path_factory.mktemp("checkov")
    cmd = [
        str(tool_bin("checkov", "checkov")),
        "--framework",
        "terraform",
        "kubernetes",
        "dockerfile",
        "--external-checks-dir",
        str(ROOT / "infra" / "deploy" / "checkov"),
        "--skip-download",
        "--output",
        "json",
        "--output-file-path",
        str(out_dir),
        "--soft-fail",
    ]
    for folder in SCANNED:
        cmd += ["-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = json.loads((out_dir / "results_json.json").read_text())
    reports = reports if isinstance(reports, list) else [reports]
    out = []
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
        for state in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in report["results"].get(state, []):
                out.append(
                    {**check, "state": state.split("_")[0], "framework": report["check_type"]}
                )
    return out


def _in(path: Path, check: dict[str, Any]) -> bool:
    return Path(check["file_abs_path"]).resolve().is_relative_to(path)


def _real(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in results if not _in(BROKEN, c)]


def test_no_failed_check_on_the_real_assets(results) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_abs_path']})"
        for c in _real(results)
        if c["state"] == "failed"
    ]
    assert failed == []
    frameworks = {c["framework"] for c in _real(results)}
    assert frameworks == {"terraform", "kubernetes", "dockerfile"}


def test_every_skip_says_why(results) -> None:
    skipped = [c for c in _real(results) if c["state"] == "skipped"]
    assert skipped, "the Terraform has justified skips; none seen means skips were not read"
    for check in skipped:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 20, (
            f"{check['check_id']} on {check['resource']} skipped without a reason"
        )


def test_our_ray_policies_ran_on_every_ray_resource(results) -> None:
    ray_resources = {
        "RayJob.slidebank.slidebank-ingest",
        "RayJob.slidebank.slidebank-train",
        "RayCluster.slidebank.slidebank-dev",
    }
    passed = {(c["check_id"], c["resource"]) for c in _real(results) if c["state"] == "passed"}
    assert {(i, r) for i in OUR_CHECKS for r in ray_resources} <= passed


def test_the_broken_rayjob_fails_every_ray_policy(results) -> None:
    failed = {c["check_id"] for c in results if _in(BROKEN / "k8s", c) and c["state"] == "failed"}
    assert failed >= OUR_CHECKS, failed


def test_the_broken_terraform_and_dockerfile_fail(results) -> None:
    failed = {c["check_id"] for c in results if _in(BROKEN, c) and c["state"] == "failed"}
    assert {"CKV_AWS_145", "CKV_AWS_24", "CKV_TF_1"} <= failed, (
        failed
    )  # no KMS; SSH from anywhere; no hash
    assert "CKV_DOCKER_3" in failed, failed  # the image runs as root
