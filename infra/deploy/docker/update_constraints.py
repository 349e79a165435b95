"""Rewrite constraints.txt from the environment the tests passed in.

Run with the project's interpreter after changing dependencies:
    .venv/bin/python infra/deploy/docker/update_constraints.py
tests/test_deploy_manifests.py fails while a runtime dependency has no pin here.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
HEADER = """\
# Exact versions for the image (pip --constraint), taken from the environment the test
# suite passed in; one line per runtime dependency of pyproject.toml (a test checks that).
# Regenerate with infra/deploy/docker/update_constraints.py.
# ray is the base image's own version: a second Ray would not match the raylets.
"""


def main() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[\[<>=!~ ;]", d)[0] for d in deps]
    lines = [f"{name}=={importlib.metadata.version(name)}" for name in names]
    (HERE / "constraints.txt").write_text(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
