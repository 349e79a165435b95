"""The device engine's device path, proven on a CPU with the strict device stand-in.

``infra.strict_device`` plays CuPy (arrays that refuse implicit host conversion, explicit
transfers counted in a ledger) and ``cucim_standin`` plays cuCIM's GPU decoder (cuCIM's CPU
decoder whose output appears on the stand-in device, in a buffer reused batch after
batch). On them the production code runs unchanged: the cuCIM backend, ``Slide``'s
device reads and resampling, tile QC, stain normalization, the encoder's DLPack hand-off
and ``DeviceStage``. No Ray.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from features.encoders.spec import EncoderSpec, frozen_kwargs
from features.store import FeatureStore, PendingSlide, SlideInfo, SlideKey
from infra import strict_device
from infra.strict_device import ImplicitTransferError
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.slides.backends import cucim_standin
from ingest.slides.backends.cucim_reader import CucimReader
from ingest.tiling import TilingConfig
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

pytestmark = pytest.mark.skipif(not CucimReader.is_available(), reason="cuCIM is not installed")

#: a ViT small enough for a CPU test, large enough to be a real timm transformer
TINY_VIT = EncoderSpec(
    name="test-tiny-vit",
    family="test",
    embed_dim=32,
    pooling="cls",
    input_size=32,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    architecture="vit_tiny_patch16_224",
    timm_kwargs=frozen_kwargs(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2),
    dtype="float32",
)
FRAGMENT = 8
OPTS = RunOptions(progress=False, tiles_per_batch=FRAGMENT, device="cpu")
TILE = 128  # at 0.5 µm/px: read at 256² from the 0.25 µm/px level; ~35 tiles on the slide


def _config(stain: str) -> IngestConfig:
    return IngestConfig(stain=stain, tiling=TilingConfig(tile_size=TILE))


@pytest.fixture(scope="module")
def slide_40x(tmp_path_factory) -> str:
    """A 40×-style slide (0.25 µm/px, no 0.5 µm level): every tile is read at twice its
    size and area-reduced, and level 0 is too large to be decoded whole."""
    path = tmp_path_factory.mktemp("strict") / "s40.svs"
    write_synthetic_slide(
        path,
        SyntheticSlideSpec(
            width=3072, height=2560, mpp=0.25, seed=5, downsamples=(1, 4), n_blobs=2
        ),
    )
    return str(path)


# ---- the stand-in itself ------------------------------------------------------------------


def test_strict_arrays_refuse_every_implicit_host_conversion() -> None:
    xp = strict_device.module()
    a = xp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4), what="params")
    one = a.sum()
    for convert in (np.asarray, float, int, bool, lambda v: v.tolist(), lambda v: v.item()):
        with pytest.raises(ImplicitTransferError):
            convert(one)
    with pytest.raises(ImplicitTransferError):
        np.asarray(a)
    with pytest.raises(ImplicitTransferError):
        _ = a + np.ones((3, 4), np.float32)  # CuPy refuses a host operand too
    with pytest.raises(TypeError):  # ImplicitTransferError is one, as CuPy raises
        a[0] = np.zeros(4, np.float32)
    # Device work stays on the device: results are device arrays, nothing is counted.
    b = np.concatenate([a, a * np.float32(2)])
    assert isinstance(b, strict_device.StrictArray) and b.shape == (6, 4)
    assert xp.ledger.count() == 1
    host = xp.asnumpy(b[:, 1:], what="result")
    assert host.tolist() == [
        [1, 2, 3],
        [5, 6, 7],
        [9, 10, 11],
        [2, 4, 6],
        [10, 12, 14],
        [18, 20, 22],
    ]
    assert [(t.direction, t.what, t.nbytes) for t in xp.ledger.select()] == [
        ("h2d", "params", 48),
        ("d2h", "result", 72),
    ]
    pixels = xp.asarray(np.zeros((2, 4, 4, 3), np.uint8))
    assert xp.ledger.select("h2d")[-1].what == "pixels" and pixels.shape == (2, 4, 4, 3)


def test_the_installed_stand_in_is_the_device_module() -> None:
    from infra.arrays import array_module, asnumpy, get_xp, gpu_available, torch_device

    before = gpu_available()
    with strict_device.installed() as xp:
        assert gpu_available() and get_xp("cuda") is xp and get_xp("auto") is xp
        a = xp.zeros((2, 3), dtype=np.uint8)
        assert array_module(a) is xp and torch_device(xp) == "cpu"
        assert asnumpy(a, what="probe").shape == (2, 3)
        assert xp.ledger.select()[-1].what == "probe"
    assert get_xp("cpu") is np and gpu_available() == before


# ---- resampling on the device -------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "size", "resample"),
    [
        (512, 256, "area"),
        (768, 256, "area"),
        (1024, 256, "area"),  # whole factors 2, 3, 4
        (507, 256, "area"),
        (300, 256, "area"),  # a 0.2527 µm/px slide: PIL's BOX
        (507, 256, "lanczos"),
        (512, 224, "lanczos"),
    ],
)
def test_device_resample_is_the_cpu_resample_pixel_for_pixel(side, size, resample) -> None:
    from ingest.slides.resample import downsample_batch
    from ingest.slides.slide import downsample

    rng = np.random.default_rng(side + size)
    tiles = rng.integers(0, 256, (3, side, side, 3), dtype=np.uint8)
    tiles[0] = 255  # glass and full black: the ends of the fixed-point range
    tiles[1, : side // 2] = 0
    expected = np.stack([downsample(t, size, resample) for t in tiles])
    xp = strict_device.module()
    got = downsample_batch(strict_device.decoded(xp, tiles), size, resample)
    assert xp.ledger.count(what="pixels") == 0, "no pixel left the device"
    np.testing.assert_array_equal(xp.asnumpy(got), expected)


# ---- the cuCIM backend's device reads -----------------------------------------------------


def test_cucim_device_reads_stay_on_the_device_and_copy_the_reused_buffer(slide_40x) -> None:
    from ingest.slides import open_slide

    rng = np.random.default_rng(0)
    locs = np.stack([rng.integers(0, 2500, 40), rng.integers(0, 2000, 40)], 1)  # 512² inside
    locs[-1] = (2950, 2450)  # partly outside the slide: white beyond the edge
    with open_slide(slide_40x, device="cpu") as cpu:
        expected = cpu.read_regions_at_mpp(locs, 256, 0.5)
    with cucim_standin.installed() as xp, open_slide(slide_40x, device="cuda") as slide:
        tiles = slide.read_regions_at_mpp(locs, 256, 0.5, xp=xp)
        images = slide._backend._image
        assert images.batches >= 2, "the batched read went through the reused buffer twice"
        assert xp.ledger.count(what="pixels") == 0, xp.ledger.summary()
        np.testing.assert_array_equal(xp.asnumpy(tiles, what="check"), expected)


# ---- DeviceStage on the strict device -----------------------------------------------------


def _plan(uri: str, sid: str, store: FeatureStore, config: IngestConfig) -> dict:
    from ingest.pipeline.device_stage import plan_for_device

    source = {
        "uri": uri,
        "slide_id": sid,
        "patient_id": "",
        "mpp": float("nan"),
        "write_id": f"w-{sid}",
    }
    planned = plan_for_device(
        source, config=config, options=OPTS, store=store.location, storage_options=None
    )
    assert planned["status"] == "tiles", planned.get("error")
    return planned


def _stage(
    store: FeatureStore,
    config: IngestConfig,
    device: str,
    encode_batch: int,
    fragment_tiles: int = FRAGMENT,
    **kwargs,
):
    """A stage writing FRAGMENT-tile fragments (several per slide, so the tests see the
    writer's steps) unless told otherwise."""
    from ingest.pipeline.device_stage import DeviceStage

    return DeviceStage(
        config=config,
        options=OPTS,
        storage_options=None,
        encoder_kwargs={"encoder": TINY_VIT, "weights": None, "num_threads": 1},
        write_kwargs=_write_kwargs(store, config),
        device=device,
        encode_batch=encode_batch,
        fragment_tiles=fragment_tiles,
        **kwargs,
    )


def _write_kwargs(store: FeatureStore, config: IngestConfig) -> dict:
    return {
        "store": store.location,
        "encoder": config.encoder_id,
        "config_hash": "s" * 16,
        "dtype": "float32",
        "tile_size": TILE,
        "read_mpp": 0.5,
    }


def _commit(store: FeatureStore, config: IngestConfig, sid: str, uri: str, rows: list[dict]):
    fragments = tuple(f for r in rows for f in json.loads(r["fragments"]))
    store.commit(
        [
            PendingSlide(
                key=SlideKey(sid, config.encoder_id, "s" * 16),
                info=SlideInfo(source_uri=uri),
                write_id=rows[0]["write_id"],
                status="done",
                n_tiles=sum(r["n_tiles"] for r in rows),
                fragments=fragments,
                dim=TINY_VIT.embed_dim,
                dtype="float32",
            )
        ],
        run_id=f"r-{sid}",
    )
    return (
        store.latest()
        .tiles(columns=["x", "y", "qc_flags", "embedding"])
        .sort_by([("x", "ascending"), ("y", "ascending")])
    )


def _fused_reference(tmp_path: Path, slide: str, config: IngestConfig):
    """The fused engine on the CPU (NumPy, PIL resampling, the host encoder path)."""
    from ingest.pipeline.fused_stage import FusedStage

    store = FeatureStore.open(str(tmp_path / "fused"), create=True)
    store.ensure_tiles_table(config.encoder_id, TINY_VIT.embed_dim, "float32")
    stage = FusedStage(
        read_kwargs={
            "config": config,
            "options": OPTS,
            "store": store.location,
            "storage_options": None,
        },
        encoder_kwargs={
            "encoder": TINY_VIT,
            "weights": None,
            "device": "cpu",
            "batch_size": 16,
            "num_threads": 1,
        },
        write_kwargs=_write_kwargs(store, config),
    )
    rows = list(
        stage.run(
            {
                "uri": slide,
                "slide_id": "s40",
                "patient_id": "",
                "mpp": float("nan"),
                "write_id": "w-fused",
            }
        )
    )
    assert rows and all(r["status"] == "tiles" for r in rows)
    return _commit(store, config, "s40", slide, rows)


def test_device_stage_on_the_strict_device_moves_no_pixels(slide_40x, tmp_path) -> None:
    """Read (cuCIM GPU decode, area resample) → QC → stain → DLPack → ViT → one copy of
    embeddings + flags per step; the stored rows are the fused CPU engine's."""
    config = _config("macenko")
    store = FeatureStore.open(str(tmp_path / "device"), create=True)
    store.ensure_tiles_table(config.encoder_id, TINY_VIT.embed_dim, "float32")
    planned = _plan(slide_40x, "s40", store, config)
    n_tiles = len(planned["x"])
    assert n_tiles > 2 * FRAGMENT, "several steps, so a read is always in flight"
    with cucim_standin.installed() as xp:
        stage = _stage(store, config, "cuda", encode_batch=2 * FRAGMENT)
        xp.ledger.clear()  # what building the model moved is not the path's
        rows = list(stage.run(planned))
        assert [r["status"] for r in rows] == ["tiles"] * len(rows), rows[0].get("error_message")
        steps = -(-n_tiles // (2 * FRAGMENT))
        assert xp.ledger.count(what="pixels") == 0, xp.ledger.summary()
        assert xp.ledger.count(what="embeddings") == 0, "the ViT's output stayed on the device"
        d2h = xp.ledger.select("d2h")
        assert len(d2h) == steps, xp.ledger.summary()
        assert {t.what for t in d2h} == {"embeddings+flags"}
        assert sum(t.shape[0] for t in d2h) == n_tiles
    assert [r["n_tiles"] for r in rows] == [
        min(FRAGMENT, n_tiles - i) for i in range(0, n_tiles, FRAGMENT)
    ]
    device = _commit(store, config, "s40", slide_40x, rows)
    fused = _fused_reference(tmp_path, slide_40x, config)
    assert device.num_rows == fused.num_rows == n_tiles
    for column in ("x", "y", "qc_flags"):
        assert device.column(column).equals(fused.column(column)), column
    np.testing.assert_allclose(
        np.stack(device.column("embedding").to_numpy(zero_copy_only=False)),
        np.stack(fused.column("embedding").to_numpy(zero_copy_only=False)),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.gpu
def test_tiny_vit_through_dlpack_and_device_stage_on_a_gpu(slide_40x, tmp_path) -> None:
    """The same path on CuPy and CUDA: CuPy tiles → DLPack → torch → CuPy embeddings agree
    with the host encoder, and DeviceStage stores what the fused CPU engine stores
    (tolerance: nvJPEG vs libjpeg-turbo decode, TF32/cuDNN sums)."""
    import cupy

    from features.encoders import Encoder

    tiles = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    on_gpu = Encoder(TINY_VIT, device="cuda", batch_size=4).embed_device(cupy.asarray(tiles))
    assert isinstance(on_gpu, cupy.ndarray) and on_gpu.shape == (8, TINY_VIT.embed_dim)
    on_cpu = Encoder(TINY_VIT, device="cpu").encode(tiles)
    np.testing.assert_allclose(cupy.asnumpy(on_gpu), on_cpu, rtol=1e-2, atol=1e-2)

    config = _config("macenko")
    store = FeatureStore.open(str(tmp_path / "device"), create=True)
    store.ensure_tiles_table(config.encoder_id, TINY_VIT.embed_dim, "float32")
    planned = _plan(slide_40x, "s40", store, config)
    rows = list(_stage(store, config, "cuda", encode_batch=2 * FRAGMENT).run(planned))
    assert rows and all(r["status"] == "tiles" for r in rows), rows[0].get("error_message")
    device = _commit(store, config, "s40", slide_40x, rows)
    fused = _fused_reference(tmp_path, slide_40x, config)
    assert device.column("x").equals(fused.column("x")) and device.column("y").equals(
        fused.column("y")
    )
    np.testing.assert_allclose(
        np.stack(device.column("embedding").to_numpy(zero_copy_only=False)),
        np.stack(fused.column("embedding").to_numpy(zero_copy_only=False)),
        rtol=5e-2,
        atol=5e-2,
    )


class _WatchedCuImage(cucim_standin.StandInCuImage):
    """Records a close that lands while a read runs, or a read that starts after close.
    Every batched read after the first waits (up to a second) for the close."""

    opened: ClassVar[list[_WatchedCuImage]] = []

    def __init__(self, path: str, xp) -> None:
        super().__init__(path, xp)
        self.closed = threading.Event()
        self.reading = 0
        self.reads = 0
        self.closed_during_read = self.read_after_close = False
        _WatchedCuImage.opened.append(self)

    def _batches(self, locations, size, level, batch_size):
        self.reads += 1
        if self.closed.is_set():
            self.read_after_close = True
        self.reading += 1
        try:
            if self.reads > 1:
                self.closed.wait(1.0)
            yield from super()._batches(locations, size, level, batch_size)
        finally:
            self.reading -= 1

    def close(self) -> None:
        if self.reading:
            self.closed_during_read = True
        self.closed.set()
        super().close()


class _FailsOnce:
    """The stage's encoder, failing its first call (a CUDA out-of-memory, say)."""

    def __init__(self, encoder) -> None:
        self._encoder, self.failed = encoder, False

    def __getattr__(self, name: str):
        attr = getattr(self._encoder, name)
        if name not in ("embed_device", "encode_device"):
            return attr

        def call(*args, **kwargs):
            if not self.failed:
                self.failed = True
                raise RuntimeError("CUDA out of memory (injected)")
            return attr(*args, **kwargs)

        return call


def test_a_slide_failing_mid_loop_waits_for_its_read_and_the_next_slide_is_done(
    slide_40x, tmp_path
) -> None:
    config = _config("none")
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    store.ensure_tiles_table(config.encoder_id, TINY_VIT.embed_dim, "float32")
    first = _plan(slide_40x, "a", store, config)
    second = {
        **first,
        "source": {**first["source"], "slide_id": "b", "write_id": "w-b"},
        "info": {**first["info"], "timings": {}},
    }
    _WatchedCuImage.opened.clear()
    with cucim_standin.installed() as xp:
        CucimReader.image_type = lambda path: _WatchedCuImage(path, xp)
        stage = _stage(store, config, "cuda", encode_batch=FRAGMENT)
        stage._encoder = _FailsOnce(stage._encoder)
        failed = list(stage.run(first))
        assert [r["status"] for r in failed] == ["failed"]
        assert failed[0]["error_type"] == "RuntimeError"
        image = _WatchedCuImage.opened[0]
        assert not image.closed_during_read, "the slide closed under the read in flight"
        assert not image.read_after_close, "a read of the failed slide ran after it closed"
        done = list(stage.run(second))  # the same actor, the next slide
    assert done and all(r["status"] == "tiles" for r in done), done[0].get("error_message")
    assert sum(r["n_tiles"] for r in done) == len(second["x"])


@pytest.mark.slow
def test_gpu_benchmark_dry_run_runs_every_part_on_the_stand_in(tmp_path) -> None:
    from benchmarks import gpu

    results = gpu.main(["--dry-run", "--out", str(tmp_path / "gpu.json")])
    parts = ("device", "peak", "encoder", "reader", "stain", "e2e")
    assert {p: results[p].get("error") for p in parts} == dict.fromkeys(parts)
    assert results["device"]["device_batch_reads"] == "stand-in device array"
    assert results["reader"]["result_device"] == "StrictArray"
    moved = results["e2e"]["transfers_per_run"]
    assert not any(key.endswith(":pixels") for key in moved), moved
    assert set(k for k in moved if k.startswith("d2h")) == {"d2h:embeddings+flags"}
    e2e = results["e2e"]
    assert e2e["device"] and e2e["tiles_per_s"] > 0 and e2e["gpu_busy_pct"] > 0
    assert set(e2e["warm_up_s"]) == {"decoder", "encoder"} and e2e["cupy_pool_limit_gib"] == 4.0
    overlap = e2e["overlap"]
    assert overlap["d2h_non_blocking_pinned"] and overlap["d2h_streams"] == [
        overlap["compute_stream"]
    ]
    assert overlap["decode_streams"] == [overlap["read_stream"]]
    assert list(overlap["host_waits_per_run"]) == ["event@device-write"]
    assert overlap["pinned_buffers_allocated"] == 0, "the warm-up's buffers were reused"
    assert [(r["encode_batch"], r["compiled"], r["error"]) for r in e2e["sweep"]] == [
        (8, "eager", None),
        (16, "reduce-overhead", None),  # the device's mode (Dynamo alone on the CPU)
    ]
    assert e2e["fragment_tiles"] == 16
    assert [r["compiled"] for r in results["encoder"]["runs"]] == [False, False, True]
