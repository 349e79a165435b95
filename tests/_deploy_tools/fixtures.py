"""Session fixtures shared by the deployment tests (import them into a test module)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._deploy_tools.toolenv import tool_bin

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"
#: the platform (infra/deploy) and what is applied on top of it, one run at a time
OVERLAYS = ("jobs/ingest", "jobs/train", "dev")
CLUSTER_ENV = DEPLOY / "values" / "cluster.env"


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_bin("lint", "kubectl")), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def render(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize folder``: what `kubectl apply -k folder` would send."""
    proc = kustomize(folder)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    )


@pytest.fixture(scope="session")
def renders() -> dict[str, list[dict[str, Any]]]:
    """The platform ("") and every overlay, rendered once per session."""
    return {"": render(DEPLOY), **{o: render(DEPLOY / o) for o in OVERLAYS}}


@pytest.fixture(scope="session")
def rendered(renders) -> list[dict[str, Any]]:
    """Every object the deployment can create: the platform plus each overlay."""
    return [d for docs in renders.values() for d in docs]
