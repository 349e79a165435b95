"""Issue 17: a slide built to cost unbounded work is refused quickly, with a reason, and
never holds back the good slides beside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infra.errors import SlideLimitError
from ingest.slides import open_slide
from ingest.slides.limits import MAX_THUMBNAIL_SOURCE_PIXELS, SlideBudget, check_thumbnail
from tests._support.hostile import write_bomb_tiff

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return write_bomb_tiff(tmp_path_factory.mktemp("bomb") / "bomb.tif")


def test_bomb_is_small_and_declares_a_trillion_pixels(bomb: Path) -> None:
    import tifffile

    assert bomb.stat().st_size < 600_000
    with tifffile.TiffFile(bomb) as tif:
        page = tif.pages.first
        assert page.shape == (10**6, 10**6, 3)
        assert len(set(page.dataoffsets)) == 1  # every tile is the same stream


def test_bomb_is_refused_when_opened_with_its_reason(bomb: Path) -> None:
    with pytest.raises(SlideLimitError, match="decompression bomb") as info:
        open_slide(str(bomb))
    assert "1000000x1000000 px" in str(info.value) and str(bomb) in str(info.value)


def test_opening_the_bomb_keeps_memory_bounded(bomb: Path) -> None:
    # In a fresh process so the peak RSS is the bomb's alone (before the fix: 11.7 GB). The
    # peak is the process's VmHWM: getrusage's ru_maxrss survives exec on Linux, so a child
    # of a big pytest process would report the parent's peak.
    code = (
        "import json, re, sys\n"
        "from ingest.slides import open_slide\n"
        "try:\n"
        f"    open_slide({str(bomb)!r})\n"
        "except Exception as e:\n"
        "    err = type(e).__name__\n"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
        "print(json.dumps({'error': err, 'peak_kb': hwm}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["error"] == "SlideLimitError"
    assert result["peak_kb"] < 1_500_000, f"peak RSS {result['peak_kb']} KB"


def test_thumbnail_too_large_for_memory_is_refused(tmp_path: Path) -> None:
    # 12000² px at 8 µm/px in ~50 KB passes the ratio check (~8,600:1), but its 8 µm/px
    # thumbnail alone would be 432 MB: refused before anything is allocated or decoded.
    path = write_bomb_tiff(tmp_path / "wide.tif", side=12000, tile=4096, mpp=8.0)
    with (
        open_slide(str(path)) as slide,
        pytest.raises(SlideLimitError, match="thumbnail at 8 µm/px would be 12000x12000"),
    ):
        slide.thumbnail(8.0)


def test_thumbnail_needing_a_whole_fine_level_is_refused() -> None:
    side = int(np.sqrt(MAX_THUMBNAIL_SOURCE_PIXELS)) + 1
    with pytest.raises(SlideLimitError, match="no pyramid level near 8 µm/px"):
        check_thumbnail("flat.tif", (side // 32, side // 32), (side, side), 0, 8.0)
    check_thumbnail("pyramid.tif", (2000, 2000), (8000, 8000), 2, 8.0)  # a real pyramid passes


@pytest.mark.parametrize(
    ("budget", "reason"),
    [
        (SlideBudget("s", seconds=1e-9), "over its time budget"),
        (SlideBudget("s", memory_bytes=1), "over the reader's memory ceiling"),
    ],
)
def test_a_slide_over_budget_stops_between_chunks(synthetic_svs, budget, reason) -> None:
    with open_slide(synthetic_svs.path) as slide:
        slide.budget = budget
        with pytest.raises(SlideLimitError, match=reason):
            slide.thumbnail(8.0)
        with pytest.raises(SlideLimitError, match=reason):
            slide.read_regions_at_mpp([(0, 0)], 64, 0.5)


def test_read_stage_fails_the_bomb_and_reads_the_good_slide(bomb: Path, tmp_path: Path) -> None:
    """The reader actor's own code, without Ray: the bomb is one ``failed`` row with its
    reason, and the good slide after it in the same task is read in full."""
    from features.store import FeatureStore
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.read_stage import read_slides
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    good = write_synthetic_slide(
        tmp_path / "good.svs",
        SyntheticSlideSpec(width=1792, height=1536, seed=3, downsamples=(1, 4), n_blobs=2),
    )
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    batch = {
        "uri": np.array([str(bomb), good.path]),
        "slide_id": np.array(["bomb", "good"]),
        "patient_id": np.array(["", ""]),
        "mpp": np.array([np.nan, np.nan]),
        "write_id": np.array(["w-bomb", "w-good"]),
    }
    rows = list(
        read_slides(
            batch,
            config=IngestConfig(stain="none"),
            options=RunOptions(progress=False, tiles_per_batch=16),
            store=store.location,
            storage_options=None,
        )
    )
    by_slide: dict[str, list[dict]] = {}
    for row in rows:
        by_slide.setdefault(str(row["slide_id"][0]), []).append(row)
    (failed,) = by_slide["bomb"]
    assert str(failed["status"][0]) == "failed"
    assert str(failed["error_type"][0]) == "SlideLimitError"
    assert "decompression bomb" in str(failed["error_message"][0])
    statuses = {str(r["status"][0]) for r in by_slide["good"]}
    assert statuses == {"tiles"}
    assert sum(r["x"][0].size for r in by_slide["good"]) > 0


@pytest.mark.timeout(600)
def test_bomb_beside_a_good_slide_fails_alone(ray_local, bomb: Path, tmp_path: Path) -> None:
    from features.store import FeatureStore
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    good = write_synthetic_slide(
        tmp_path / "good.svs",
        SyntheticSlideSpec(width=1792, height=1536, seed=3, downsamples=(1, 4), n_blobs=2),
    )
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    result = run_ingest(
        [SlideSource(str(bomb), "bomb"), SlideSource(good.path, "good")],
        store,
        options=RunOptions(progress=False, tiles_per_batch=16),
        config=IngestConfig(stain="none"),
    )
    outcomes = {o.slide_id: o for o in result.outcomes}
    assert outcomes["good"].status == "done" and outcomes["good"].tiles > 0
    assert outcomes["bomb"].status == "failed"
    assert outcomes["bomb"].error_type == "SlideLimitError"
    assert "decompression bomb" in (outcomes["bomb"].error_message or "")
