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


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool_bin("lint", "kubectl")), "kustomize", str(folder)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def rendered() -> list[dict[str, Any]]:
    """``kubectl kustomize infra/deploy``: what `kubectl apply -k` would send."""
    proc = kustomize(DEPLOY)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
