"""Describing an encoder costs no image-processing imports (issue 28: seconds for small jobs).

Every run and listing resolves its encoder's spec through the registry, which imports the
built-in encoders' modules; the handcrafted encoder's SciPy and scikit-image parts (about a
second on 2 cores) load when its features are first computed, and only then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("scipy.spatial", "scipy.linalg", "scipy.ndimage", "skimage.feature", "skimage.filters")

_PROBE = """
import sys
from features.encoders.registry import get_encoder_spec, list_encoders
list_encoders()
spec = get_encoder_spec("handcrafted-he-v1")
print("LOADED", *[name for name in {heavy!r} if name in sys.modules])
if "--encode" in sys.argv:
    import numpy as np
    from features.encoders.handcrafted import handcrafted_features
    tiles = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    assert handcrafted_features(tiles).shape == (2, spec.embed_dim)
    print("AFTER", *[name for name in {heavy!r} if name in sys.modules])
"""


def _probe(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_registry_describes_the_handcrafted_encoder_without_scipy_or_skimage() -> None:
    loaded = _probe().split("LOADED")[-1].split()
    assert loaded == []


def test_computing_the_features_loads_them() -> None:
    out = _probe("--encode")
    assert out.split("LOADED")[-1].split("AFTER")[0].split() == []
    assert set(out.split("AFTER")[-1].split()) >= {"scipy.ndimage", "skimage.feature"}


def test_the_lazily_built_stain_tables_are_the_documented_matrix() -> None:
    from skimage.color import hed_from_rgb

    from features.encoders._stain import _OD_LUT, _stain_luts

    luts = _stain_luts()
    assert luts is _stain_luts() and not luts.flags.writeable
    expected = (_OD_LUT[None, None, :] * hed_from_rgb.astype(np.float32)[:, :, None]).astype(
        np.float32
    )
    assert luts.dtype == np.float32 and np.array_equal(luts, expected)
