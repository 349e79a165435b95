"""A process that imported PyTorch before cuCIM must not hang opening a slide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_torch_first_falls_back_instead_of_hanging(synthetic_svs) -> None:
    code = (
        "import torch\n"
        "from ingest.slides import open_slide\n"
        f"s = open_slide({str(synthetic_svs.path)!r})\n"
        "print(s.metadata.reader)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=120, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "openslide"
    assert "cuCIM disabled in this process" in proc.stderr
