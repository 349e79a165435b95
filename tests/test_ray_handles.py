"""Slides sent to Ray workers reopen there: no file handle is ever pickled."""

from __future__ import annotations

import numpy as np

from ingest.slides import SlideHandle, open_slide


def test_slide_and_handle_travel_to_ray_workers(ray_local, synthetic_svs) -> None:
    import ray

    @ray.remote
    def read(obj, loc):
        import os

        slide = obj.open() if isinstance(obj, SlideHandle) else obj
        with slide:
            return os.getpid(), slide.read_region(loc, 0, (128, 128))

    with open_slide(str(synthetic_svs.path)) as slide:
        local = slide.read_region((300, 200), 0, (128, 128))
        pid1, via_slide = ray.get(read.remote(slide, (300, 200)))
        pid2, via_handle = ray.get(read.remote(slide.handle, (300, 200)))
    import os

    assert os.getpid() not in (pid1, pid2)
    assert np.array_equal(local, via_slide) and np.array_equal(local, via_handle)
