"""GPU decoding (cuCIM + nvJPEG) agrees with CPU decoding. Runs only where a GPU is present.

Tolerance: nvJPEG and libjpeg-turbo use different IDCT and chroma up-sampling, so pixels
may differ slightly: mean |difference| ≤ 1 grey level, max ≤ 16.
"""

from __future__ import annotations

import numpy as np
import pytest

from ingest.slides import open_slide

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("fixture", ["synthetic_svs", "synthetic_tiff"])
def test_gpu_and_cpu_decoding_agree(request, fixture: str) -> None:
    path = str(request.getfixturevalue(fixture).path)
    locs = [(0, 0), (512, 384), (1000, 700)]
    with (
        open_slide(path, reader="cucim", device="cpu") as cpu,
        open_slide(path, reader="cucim", device="cuda") as gpu,
    ):
        a = cpu.read_regions(locs, 0, (256, 256))
        b = gpu.read_regions(locs, 0, (256, 256))
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() <= 1.0 and diff.max() <= 16
