"""Scale (slow): 1,000 small synthetic slides in one run on this machine.

Every slide must end ``done`` with exactly its planned tiles and no duplicates. The
per-slide overhead is measured in benchmarks/ingest_scale.py, next to the sequential
baseline, not here.
"""

from __future__ import annotations

import pytest

from features.store import FeatureStore
from ingest.pipeline.config import RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from ingest.slides import open_slide
from ingest.tiling.plan import plan_slide
from synthetic.slides.cohort import write_small_cohort

N_SLIDES = 1000


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_one_thousand_small_slides_in_one_run(ray_local, tmp_path) -> None:
    paths = write_small_cohort(tmp_path / "cohort", N_SLIDES)
    sources = [SlideSource(str(p), p.stem) for p in paths]
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    result = run_ingest(sources, store, options=RunOptions(progress=False))
    assert len(result.outcomes) == N_SLIDES and not result.failed
    slides = store.latest().slides(encoder=result.encoder).to_pandas()
    assert len(slides) == N_SLIDES and set(slides["status"]) == {"done"}
    tiles = store.latest().tiles_pandas(encoder=result.encoder, columns=["slide_id", "x", "y"])
    assert not tiles.duplicated().any()
    counts = tiles["slide_id"].value_counts()
    assert all(
        counts.get(s, 0) == n for s, n in zip(slides["slide_id"], slides["tile_count"], strict=True)
    )
    assert len(tiles) == result.tiles > N_SLIDES
    for source in sources[::100]:  # a sample: the exact planned coordinates
        with open_slide(source.uri) as slide:
            table = plan_slide(slide)[1].table
        planned = set(
            zip(table.column("x").to_pylist(), table.column("y").to_pylist(), strict=True)
        )
        mine = tiles[tiles["slide_id"] == source.slide_id]
        assert set(zip(mine["x"], mine["y"], strict=True)) == planned
