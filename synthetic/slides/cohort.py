"""Many small synthetic slides at once (scale tests and benchmarks), in parallel processes.

Each slide has its own seed, so every slide is different; existing files are kept, so a
cohort written once is reused by later runs.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from synthetic.slides.writer import SyntheticSlideSpec, write_synthetic_slide

__all__ = ["write_small_cohort"]


def _write(args: tuple[str, int, int, int]) -> str:
    path, side, seed, blobs = args
    if not Path(path).exists():
        # write_synthetic_slide writes atomically: an interrupted run leaves no truncated slide
        write_synthetic_slide(
            path, SyntheticSlideSpec(width=side, height=side, seed=seed, n_blobs=blobs)
        )
    return path


def write_small_cohort(
    folder: str | os.PathLike,
    n_slides: int,
    *,
    side: int = 1024,
    seed: int = 10_000,
    processes: int | None = None,
) -> list[Path]:
    """Write ``n_slides`` SVS slides of ``side``² px at 0.5 µm/px into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(folder / f"slide-{i:05d}.svs"), side, seed + i, 1 + i % 3) for i in range(n_slides)
    ]
    todo = [j for j in jobs if not Path(j[0]).exists()]
    workers = max(1, min(processes or os.cpu_count() or 1, len(todo)))
    if workers == 1:
        for job in todo:
            _write(job)
    elif todo:
        # spawn, not fork: the caller may hold Ray or PyTorch threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            list(pool.map(_write, todo, chunksize=16))
    return [Path(j[0]) for j in jobs]
