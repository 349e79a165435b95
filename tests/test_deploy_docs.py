"""docs/cloud.md is a runbook: the kustomizations it applies render, the Terraform outputs
and files it names exist, and the platform it applies first starts no job."""

from __future__ import annotations

import re
from pathlib import Path

from tests._deploy_tools.fixtures import DEPLOY, render
from tests.test_deploy_terraform import _blocks, _load

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "cloud.md").read_text()


def test_every_kustomization_the_runbook_applies_renders() -> None:
    folders = sorted(set(re.findall(r"kubectl (?:apply|delete) -k (infra/deploy[\w/-]*)", DOC)))
    assert {
        "infra/deploy",
        "infra/deploy/jobs/ingest",
        "infra/deploy/jobs/train",
        "infra/deploy/dev",
    } <= set(folders)
    for folder in folders:
        assert render(ROOT / folder), folder
    # The first apply is the platform, and the platform runs nothing.
    first = re.search(r"kubectl apply -k (infra/deploy[\w/-]*)", DOC)
    assert first is not None and first.group(1) == "infra/deploy"
    assert not [d for d in render(DEPLOY) if d["kind"] in ("RayJob", "RayCluster")]


def test_the_terraform_outputs_and_files_it_names_exist() -> None:
    outputs = _blocks(_load(ROOT / "terraform"), "output")
    named = set(re.findall(r"terraform(?: -chdir=terraform)? output(?: -raw)? (\w+)", DOC))
    assert named and named <= set(outputs), named - set(outputs)
    for path in re.findall(r"(infra/deploy/[\w./-]+\.(?:env|yaml))", DOC):
        assert (ROOT / path).exists(), path
