"""The fused engine (one read→encode→write actor per slide slot) and the local cluster."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from features.store import FeatureStore
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.fused_stage import FusedStage
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.slide_steps import batch_slices
from ingest.pipeline.sources import SlideSource
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

pytestmark = pytest.mark.timeout(600)
OPTS = RunOptions(progress=False, commit_every=2, tiles_per_batch=16)


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[SlideSource]:
    folder = tmp_path_factory.mktemp("fused")
    out = []
    for i in range(2):
        path = folder / f"f-{i}.svs"
        write_synthetic_slide(
            path,
            SyntheticSlideSpec(width=1536, height=1280, seed=70 + i, downsamples=(1, 4), n_blobs=2),
        )
        out.append(SlideSource(str(path), path.stem))
    return out


def _tiles(store: FeatureStore):
    return (
        store.latest()
        .tiles(columns=["slide_id", "x", "y", "qc_flags", "embedding"])
        .sort_by([("slide_id", "ascending"), ("x", "ascending"), ("y", "ascending")])
    )


def _fused_stage(
    store: FeatureStore, config: IngestConfig, options: RunOptions, config_hash: str
) -> FusedStage:
    """The fused actor's stage in this process: weight-free encoder, one CPU thread."""
    return FusedStage(
        read_kwargs={
            "config": config,
            "options": options,
            "store": store.location,
            "storage_options": None,
        },
        encoder_kwargs={
            "encoder": config.encoder,
            "weights": None,
            "device": "cpu",
            "batch_size": 16,
            "num_threads": 1,
        },
        write_kwargs={
            "store": store.location,
            "encoder": config.encoder_id,
            "config_hash": config_hash,
            "dtype": "float32",
            "tile_size": 256,
            "read_mpp": 0.5,
        },
    )


def _slide_row(slide: SlideSource, write_id: str) -> dict[str, object]:
    return {
        "uri": slide.uri,
        "slide_id": slide.slide_id,
        "patient_id": "",
        "mpp": float("nan"),
        "write_id": write_id,
    }


def test_fused_stage_in_process_streams_one_row_per_batch(slides, tmp_path, monkeypatch) -> None:
    import ingest.pipeline.fused_stage as fused_stage

    monkeypatch.setattr(fused_stage, "FIRST_BATCH", 3)  # below this small slide's tile count
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    config = IngestConfig(stain="none")
    store.ensure_tiles_table(config.encoder_id, 64, "float32")
    stage = _fused_stage(store, config, OPTS, "c" * 16)
    rows = list(
        stage.run(
            {
                "uri": slides[0].uri,
                "slide_id": "a",
                "patient_id": "",
                "mpp": float("nan"),
                "write_id": "w1",
            }
        )
    )
    assert rows and all(r["status"] == "tiles" for r in rows)
    assert [r["batch_index"] for r in rows] == list(range(rows[0]["n_batches"]))
    assert all(r["dim"] == 64 and len(json.loads(r["fragments"])) >= 1 for r in rows)
    assert "image" not in rows[0] and "embedding" not in rows[0], "no pixels or vectors go back"
    # the actor's first batch is small (the first tiles are stored within seconds), the rest full
    total = sum(r["n_tiles"] for r in rows)
    assert total > 3 and [r["n_tiles"] for r in rows] == [3, total - 3]
    again = list(
        stage.run(
            {
                "uri": slides[0].uri,
                "slide_id": "a2",
                "patient_id": "",
                "mpp": float("nan"),
                "write_id": "w3",
            }
        )
    )
    assert [r["n_tiles"] for r in again] == [total]
    missing = list(
        stage.run(
            {
                "uri": str(tmp_path / "nope.svs"),
                "slide_id": "b",
                "patient_id": "",
                "mpp": float("nan"),
                "write_id": "w2",
            }
        )
    )
    assert [r["status"] for r in missing] == ["failed"] and missing[0]["error_type"]


def test_all_three_engines_store_the_same_tiles(ray_local, slides, tmp_path) -> None:
    """fused, Ray Data pools, the GPU-resident engine (its NumPy stand-in here: planning
    tasks on CPUs, a device actor reading from coordinates) and the in-process engine (no
    Ray: the driver runs the fused stage) store the same rows."""
    config = IngestConfig(stain="macenko")
    stores = {}
    for engine in ("fused", "dataset", "device", "inprocess"):
        stores[engine] = FeatureStore.open(str(tmp_path / engine), create=True)
        result = run_ingest(slides, stores[engine], config, OPTS.replace(engine=engine))
        assert [o.status for o in result.outcomes] == ["done", "done"], engine
        assert result.engine == engine
        assert result.first_tile_s is not None and 0 < result.first_tile_s <= result.seconds
        assert result.steady_tiles_per_s is not None and result.steady_tiles_per_s > 0
        # The run's last flush brought the slide-level table up to date (no pooling on read).
        slide_level = stores[engine]._tables.open(
            stores[engine].location.join("slide_embeddings", f"{config.encoder_id}.lance")
        )
        assert slide_level.count_rows() == len(slides), engine
    fused = _tiles(stores["fused"])
    assert fused.num_rows > 0
    a = np.stack(fused.column("embedding").to_numpy(zero_copy_only=False))
    for engine in ("dataset", "device", "inprocess"):
        other = _tiles(stores[engine])
        for column in ("slide_id", "x", "y", "qc_flags"):
            assert fused.column(column).equals(other.column(column)), (engine, column)
        b = np.stack(other.column("embedding").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=engine)
    # The slide rows agree too (the device engine's planning tasks measured the tissue).
    columns = ["slide_id", "status", "tile_count", "tissue_area_mm2", "mpp", "mpp_source"]
    rows = {
        e: sorted(
            stores[e].latest().slides(encoder=config.encoder_id, columns=columns).to_pylist(),
            key=lambda r: r["slide_id"],
        )
        for e in ("fused", "device", "inprocess")
    }
    assert rows["fused"] == rows["device"] == rows["inprocess"]
    assert all(r["status"] == "done" for r in rows["device"])
    # Every engine records the same per-slide stages (the slide row's timings come from the
    # same call that emits the stage metric: slide_steps.record_stage).
    stages = {
        e: [
            sorted(json.loads(r["timings_json"]))
            for r in stores[e]
            .latest()
            .slides(encoder=config.encoder_id, columns=["timings_json"])
            .to_pylist()
        ]
        for e in stores
    }
    assert stages["fused"] == [["plan_s", "read_s"]] * len(slides)
    assert all(stages[e] == stages["fused"] for e in stores), stages


def test_fused_and_device_stages_record_the_same_stage_metrics(
    slides, tmp_path, monkeypatch
) -> None:
    """The stage metrics (Ray histograms) each stage records for one slide: the fused stage
    (which the fused, in-process and Ray Data engines run) and the device stage with its
    planning task record plan, read, encode and write alike."""
    from infra import metrics

    seen: list[str] = []
    monkeypatch.setattr(metrics, "observe_stage", lambda stage, seconds: seen.append(stage))
    config = IngestConfig(stain="macenko")
    recorded = {}
    for name in ("fused", "device"):
        store = FeatureStore.open(str(tmp_path / name), create=True)
        store.ensure_tiles_table(config.encoder_id, 64, "float32")
        seen.clear()
        if name == "fused":
            stage = _fused_stage(store, config, OPTS, "e" * 16)
            rows = list(stage.run(_slide_row(slides[0], "w-f")))
        else:
            rows = _device_rows(slides[0], store, config, "cpu")
        assert rows and all(r["status"] == "tiles" for r in rows)
        recorded[name] = set(seen)
    assert recorded["fused"] == {"plan", "read", "encode", "write"}
    assert recorded["device"] == recorded["fused"]


def test_device_engine_records_a_missing_slide_and_goes_on(ray_local, slides, tmp_path) -> None:
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    sources = [SlideSource(str(tmp_path / "nope.svs"), "nope"), slides[0]]
    result = run_ingest(sources, store, IngestConfig(stain="none"), OPTS.replace(engine="device"))
    outcomes = {o.slide_id: o for o in result.outcomes}
    assert (
        outcomes["nope"].status == "failed" and outcomes["nope"].error_type == "SlideNotFoundError"
    )
    assert outcomes[slides[0].slide_id].status == "done" and outcomes[slides[0].slide_id].tiles > 0


def test_local_cluster_address_only_while_it_answers(tmp_path, monkeypatch) -> None:
    from infra import local_cluster

    monkeypatch.setenv("SLIDEBANK_CLUSTER_STATE", str(tmp_path / "cluster.json"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert local_cluster.address() is None and local_cluster.resolve_address(None) is None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        Path(tmp_path / "cluster.json").write_text(
            json.dumps({"address": addr, "temp_dir": "/nonexistent-x"})
        )
        assert local_cluster.resolve_address(None) == addr
        assert local_cluster.resolve_address("auto") == addr
        assert local_cluster.resolve_address("10.0.0.1:6379") == "10.0.0.1:6379"
    assert local_cluster.address() is None, "a cluster that no longer answers is not joined"
    assert local_cluster.resolve_address("auto") == "auto"
    assert local_cluster.down() == 0 and not (tmp_path / "cluster.json").exists()


def test_batch_slices_cover_every_tile_once() -> None:
    for n in (1, 7, 8, 9, 64, 65, 200):
        for first in (None, 8, 64, 100):
            parts = batch_slices(n, 64, first)
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            assert all(p.stop - p.start <= 64 for p in parts)
            if first is not None and first < 64:
                assert parts[0] == slice(0, min(first, n))
            else:
                assert parts[0] == slice(0, min(64, n))


def _device_rows(
    slide: SlideSource,
    store: FeatureStore,
    config: IngestConfig,
    device: str,
    encoder: str = "handcrafted-he-v1",
    options: RunOptions = OPTS,
) -> list[dict]:
    from ingest.pipeline.device_stage import DeviceStage, plan_for_device

    source = {
        "uri": slide.uri,
        "slide_id": slide.slide_id,
        "patient_id": "",
        "mpp": float("nan"),
        "write_id": f"w-{device}",
    }
    planned = plan_for_device(
        source, config=config, options=OPTS, store=store.location, storage_options=None
    )
    assert "image" not in planned and planned["x"].dtype.kind == "i", "coordinates, never pixels"
    stage = DeviceStage(
        config=config,
        options=options,
        storage_options=None,
        encoder_kwargs={
            "encoder": encoder,
            "weights": "random" if ":" in encoder else None,
            "batch_size": 16,
        },
        write_kwargs={
            "store": store.location,
            "encoder": config.encoder_id,
            "config_hash": "d" * 16,
            "dtype": "float32",
            "tile_size": 256,
            "read_mpp": 0.5,
        },
        device=device,
    )
    return list(stage.run(planned))


def test_device_stage_bounds_each_slide_and_counts_only_what_it_adds(slides, tmp_path) -> None:
    """The device actor's per-slide budget: over time, the slide fails with the reason; its
    memory ceiling is what the slide adds to a process that holds the model (an absolute
    ceiling below the actor's own resident memory would fail every slide)."""
    from ingest.slides.limits import current_rss

    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    config = IngestConfig(stain="none")
    store.ensure_tiles_table(config.encoder_id, 64, "float32")
    below_rss = current_rss() / 2**30 / 2  # half of what this process already holds
    rows = _device_rows(
        slides[0], store, config, "cpu", options=OPTS.replace(reader_memory_gb=below_rss)
    )
    assert rows and all(r["status"] == "tiles" for r in rows)
    late = _device_rows(
        slides[0], store, config, "cpu", options=OPTS.replace(slide_time_budget_s=1e-9)
    )
    assert [r["status"] for r in late] == ["failed"]
    assert late[0]["error_type"] == "SlideLimitError" and "time budget" in late[0]["error_message"]


@pytest.mark.parametrize("device", ["cpu", "standin", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_device_stage_matches_the_fused_cpu_path(slides, tmp_path, device) -> None:
    """The GPU-resident stage stores what the fused stage stores on the CPU: on NumPy, on
    the strict device stand-in (its device path: GPU-decode stand-in, device reads) and on
    a GPU. The reference is explicitly the CPU path (decode, tissue, QC, encoder), so on
    a GPU host it is not a second GPU run."""
    import contextlib

    from features.store import PendingSlide, SlideInfo, SlideKey
    from ingest.slides.backends import cucim_standin

    config = IngestConfig(stain="macenko")
    results = {}
    for name in ("fused", device):
        store = FeatureStore.open(str(tmp_path / name), create=True)
        store.ensure_tiles_table(config.encoder_id, 64, "float32")
        if name == "fused":
            stage = _fused_stage(store, config, OPTS.replace(device="cpu"), "d" * 16)
            rows = list(stage.run(_slide_row(slides[1], "w-fused")))
        else:
            standin = cucim_standin.installed() if device == "standin" else contextlib.nullcontext()
            with standin:
                rows = _device_rows(
                    slides[1], store, config, "cuda" if device == "standin" else device
                )
        assert rows and all(r["status"] == "tiles" for r in rows), rows[0].get("error_message")
        fragments = tuple(f for r in rows for f in json.loads(r["fragments"]))
        store.commit(
            [
                PendingSlide(
                    key=SlideKey(slides[1].slide_id, config.encoder_id, "d" * 16),
                    info=SlideInfo(source_uri=slides[1].uri),
                    write_id=rows[0]["write_id"],
                    status="done",
                    n_tiles=sum(r["n_tiles"] for r in rows),
                    fragments=fragments,
                    dim=64,
                    dtype="float32",
                )
            ],
            run_id=f"r-{name}",
        )
        results[name] = _tiles(store)
    fused, other = results["fused"], results[device]
    assert fused.num_rows > 0
    for column in ("slide_id", "x", "y", "qc_flags"):
        assert fused.column(column).equals(other.column(column)), column
    a = np.stack(fused.column("embedding").to_numpy(zero_copy_only=False))
    b = np.stack(other.column("embedding").to_numpy(zero_copy_only=False))
    # Stated tolerance: within 1e-5 on the CPU (NumPy and the stand-in); CuPy's float
    # reductions may differ in the last bits.
    np.testing.assert_allclose(
        a, b, rtol=1e-3 if device == "cuda" else 1e-5, atol=1e-4 if device == "cuda" else 1e-5
    )
