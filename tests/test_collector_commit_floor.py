"""Issue 28 #4: many small slides share a commit. By default the collector commits at
least 8 slides and at most once per 2 s; an explicit ``commit_every`` commits exactly that
many (what the crash and Ctrl-C tests rely on). Real store commits, a controlled clock."""

from __future__ import annotations

import json

import pytest

from features.store import FeatureStore, new_write_id
from infra.errors import ConfigError
from ingest.pipeline.collector import SlideCollector
from ingest.pipeline.config import COMMIT_EVERY, COMMIT_FLOOR_S, RunOptions


def _failed_row(slide_id: str, write_id: str) -> dict[str, object]:
    return {
        "slide_id": slide_id,
        "write_id": write_id,
        "info_json": json.dumps({"source_uri": f"/slides/{slide_id}.svs"}),
        "status": "failed",
        "error_type": "SlideReadError",
        "error_message": "unreadable",
    }


def _collector(tmp_path, ids, every, floor, now):
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    write_ids = {sid: new_write_id() for sid in ids}
    collector = SlideCollector(
        store, "handcrafted-he-v1", "c" * 16, "float32", write_ids, every, "run-floor",
        commit_floor_s=floor, clock=lambda: now[0],
    )  # fmt: skip
    return store, collector, write_ids


def test_small_slides_arriving_fast_share_one_commit(tmp_path) -> None:
    ids = [f"s{i:02d}" for i in range(20)]
    now = [0.0]
    store, collector, write_ids = _collector(tmp_path, ids, COMMIT_EVERY, COMMIT_FLOOR_S, now)
    for i, sid in enumerate(ids[:19]):
        now[0] = 0.05 * i  # 20 slides a second: well inside the floor
        collector.add(_failed_row(sid, write_ids[sid]))
    assert collector.commits == 0 and len(collector.ready) == 19
    now[0] = COMMIT_FLOOR_S + 0.1
    collector.add(_failed_row(ids[19], write_ids[ids[19]]))
    assert collector.commits == 1 and collector.committed_slides == 20
    assert store.latest().slides(status="failed").num_rows == 20


def test_slow_slides_still_commit_every_group_and_explicit_counts_are_exact(tmp_path) -> None:
    ids = [f"s{i:02d}" for i in range(6)]
    now = [0.0]
    _, slow, write_ids = _collector(tmp_path / "a", ids, 2, COMMIT_FLOOR_S, now)
    for i, sid in enumerate(ids):
        now[0] = 1.5 * (i + 1)  # a slide every 1.5 s: each pair spans more than the floor
        slow.add(_failed_row(sid, write_ids[sid]))
    assert slow.commits == 3

    now[0] = 0.0
    _, exact, write_ids = _collector(tmp_path / "b", ids, 2, 0.0, now)
    for sid in ids:
        exact.add(_failed_row(sid, write_ids[sid]))
    assert exact.commits == 3


def test_run_options_default_to_the_floor_and_check_an_explicit_count() -> None:
    assert RunOptions().commit_every is None
    with pytest.raises(ConfigError, match="commit_every"):
        RunOptions(commit_every=0)
