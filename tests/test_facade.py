"""The facade: every advertised name resolves, and importing it is side-effect free."""

from __future__ import annotations

import subprocess
import sys


def test_every_export_resolves() -> None:
    import slidebank as sb

    for name in sb.__all__:
        assert getattr(sb, name) is not None


def test_import_is_light() -> None:
    code = "import sys, slidebank; print(sorted(m for m in ('torch', 'ray', 'lance', 'cucim') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
