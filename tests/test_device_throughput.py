"""The device engine's throughput settings, checked on a CPU: fragments written in groups
of ``device_fragment_tiles`` by the writer thread, ``--compile`` with padded static
batches, and device actors with several CPUs passed to the reader's decode threads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from features.store import FeatureStore
from infra.errors import ConfigError
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.resources import DevicePlan
from ingest.slides.backends import cucim_standin
from ingest.slides.backends.cucim_reader import CucimReader
from ingest.tiling import TilingConfig
from tests.test_device_strict import (
    FRAGMENT,
    TILE,
    TINY_VIT,
    _commit,
    _config,
    _fused_reference,
    _plan,
    _stage,
    slide_40x,
)

__all__ = ["slide_40x"]  # the fixture, shared with test_device_strict

needs_cucim = pytest.mark.skipif(not CucimReader.is_available(), reason="cuCIM is not installed")


def _store(tmp_path, config: IngestConfig, name: str = "store") -> FeatureStore:
    store = FeatureStore.open(str(tmp_path / name), create=True)
    store.ensure_tiles_table(config.encoder_id, TINY_VIT.embed_dim, "float32")
    return store


# ---- fragments in groups ------------------------------------------------------------------


@needs_cucim
def test_a_5000_tile_slide_is_written_as_3_fragments_of_at_most_2048_tiles(
    slide_40x, tmp_path
) -> None:
    """5,000 tiles encoded in steps of 256 are stored as ⌈5000/2048⌉ = 3 fragments (not
    one per step or per ``tiles_per_batch``), and every tile is stored once."""
    config = IngestConfig(stain="none", tiling=TilingConfig(tile_size=16))
    store = _store(tmp_path, config)
    planned = _plan(slide_40x, "big", store, config)
    # 16-pixel tiles at 0.5 µm/px are 32 level-0 pixels: a 96 × 80 grid; its first 5,000
    grid = np.mgrid[0:80, 0:96].reshape(2, -1)[:, :5000] * 32
    planned = {
        **planned,
        "x": grid[1].astype(planned["x"].dtype),
        "y": grid[0].astype(planned["y"].dtype),
        "tissue_fraction": np.ones(5000, planned["tissue_fraction"].dtype),
        "qc_flags": np.zeros(5000, planned["qc_flags"].dtype),
    }
    stage = _stage(store, config, "cpu", encode_batch=256, fragment_tiles=None)
    assert stage.fragment_tiles == RunOptions().device_fragment_tiles == 2048
    rows = list(stage.run(planned))
    assert [r["status"] for r in rows] == ["tiles"] * 3, [r["n_tiles"] for r in rows]
    assert [r["n_tiles"] for r in rows] == [2048, 2048, 904]
    assert [int(r["batch_index"]) for r in rows] == [0, 1, 2]
    assert {int(r["n_batches"]) for r in rows} == {3}
    assert sum(len(json.loads(r["fragments"])) for r in rows) == 3
    stored = _commit(store, config, "big", slide_40x, rows)
    assert stored.num_rows == 5000
    pairs = set(zip(stored.column("x").to_pylist(), stored.column("y").to_pylist(), strict=True))
    assert pairs == set(zip(planned["x"].tolist(), planned["y"].tolist(), strict=True))


@needs_cucim
def test_fragments_spanning_steps_store_the_fused_engines_rows(slide_40x, tmp_path) -> None:
    """On the strict stand-in, steps of 8 tiles gathered into fragments of 20 (not a
    multiple of the step): one copy per step, fragments of 20 and the tail, and the stored
    tiles, flags and embeddings are the fused CPU engine's."""
    config = _config("macenko")
    store = _store(tmp_path, config, "device")
    planned = _plan(slide_40x, "s40", store, config)
    n_tiles = len(planned["x"])
    assert n_tiles > 20 and n_tiles % 20, "whole fragments and a tail"
    with cucim_standin.installed() as xp:
        stage = _stage(store, config, "cuda", encode_batch=FRAGMENT, fragment_tiles=20)
        xp.ledger.clear()
        rows = list(stage.run(planned))
        assert len(xp.ledger.select("d2h")) == -(-n_tiles // FRAGMENT)
        assert xp.ledger.count(what="pixels") == 0, xp.ledger.summary()
    assert [r["status"] for r in rows] == ["tiles"] * len(rows), rows[0].get("error_message")
    assert [r["n_tiles"] for r in rows] == [min(20, n_tiles - i) for i in range(0, n_tiles, 20)]
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


def test_fragment_tiles_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="device_fragment_tiles must be >= 1"):
        RunOptions(device_fragment_tiles=0)
    with pytest.raises(ConfigError, match="cpus_per_device_actor must be >= 1"):
        RunOptions(cpus_per_device_actor=0)


# ---- --compile: padded static batches -----------------------------------------------------


@needs_cucim
@pytest.mark.parametrize(
    "backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)]
)  # Dynamo's capture alone (a few s); Inductor's code generation too (about 40 s cold here)
def test_compiled_stage_pads_to_one_shape_and_matches_the_eager_embeddings(
    slide_40x, tmp_path, monkeypatch, backend
) -> None:
    """``compile``: the slide's short last step is padded to ``encode_batch``, so the
    model sees one input shape; the stored embeddings are the eager stage's (1e-5)."""
    from ingest.pipeline import device_compile
    from ingest.pipeline.device_compile import compile_mode

    monkeypatch.setattr(device_compile, "BACKEND", backend)

    assert compile_mode("cuda") == "reduce-overhead" and compile_mode("cpu") == "default"
    config = _config("none")
    stores = {"eager": _store(tmp_path, config, "eager"), "compiled": _store(tmp_path, config, "c")}
    planned = _plan(slide_40x, "s40", stores["eager"], config)
    n_tiles, batch = len(planned["x"]), 16
    assert n_tiles % batch, "a short last step to pad"
    tables, shapes = {}, {}
    for name, store in stores.items():
        stage = _stage(store, config, "cpu", encode_batch=batch, compile=name == "compiled")
        torch_backend = stage._encoder._backend
        seen: list[tuple[int, ...]] = []
        forward = torch_backend.forward_tensor

        def recording(tensor, forward=forward, seen=seen):
            seen.append(tuple(tensor.shape))
            return forward(tensor)

        torch_backend.forward_tensor = recording
        rows = list(stage.run(planned))
        assert {r["status"] for r in rows} == {"tiles"}, rows[0].get("error_message")
        shapes[name] = seen
        tables[name] = _commit(store, config, "s40", slide_40x, rows)
    assert stage.compiled == "default" and torch_backend.compiled
    assert torch_backend._runtime.info["static_shapes"]
    assert len(set(shapes["compiled"])) == 1 and shapes["compiled"][0][0] == batch
    assert len(set(shapes["eager"])) == 2, "without compile the last step is not padded"
    assert tables["compiled"].num_rows == tables["eager"].num_rows == n_tiles
    for column in ("x", "y", "qc_flags"):
        assert tables["compiled"].column(column).equals(tables["eager"].column(column))
    np.testing.assert_allclose(
        np.stack(tables["compiled"].column("embedding").to_numpy(zero_copy_only=False)),
        np.stack(tables["eager"].column("embedding").to_numpy(zero_copy_only=False)),
        rtol=1e-5,
        atol=1e-5,
    )


@needs_cucim
def test_compiled_padding_stays_on_the_device(slide_40x, tmp_path, monkeypatch) -> None:
    """On the strict stand-in the padded step is built on the device: no pixel crosses to
    or from the host, one copy per step, one input shape, CUDA-graph mode on "cuda"."""
    from ingest.pipeline import device_compile

    monkeypatch.setattr(device_compile, "BACKEND", "eager")  # Dynamo only (see above)
    config = _config("none")
    store = _store(tmp_path, config)
    planned = _plan(slide_40x, "s40", store, config)
    n_tiles, batch = len(planned["x"]), 16
    with cucim_standin.installed() as xp:
        stage = _stage(store, config, "cuda", encode_batch=batch, compile=True)
        assert stage.compiled == "reduce-overhead"
        seen: list[tuple[int, ...]] = []
        forward = stage._encoder._backend.forward_tensor

        def recording(tensor):
            seen.append(tuple(tensor.shape))
            return forward(tensor)

        stage._encoder._backend.forward_tensor = recording
        xp.ledger.clear()
        rows = list(stage.run(planned))
        assert xp.ledger.count(what="pixels") == 0, xp.ledger.summary()
        assert len(xp.ledger.select("d2h")) == -(-n_tiles // batch)
    assert {r["status"] for r in rows} == {"tiles"}, rows[0].get("error_message")
    assert sum(r["n_tiles"] for r in rows) == n_tiles
    assert set(seen) == {(batch, TILE, TILE, 3)} and len(seen) == -(-n_tiles // batch)


# ---- CPUs per device actor ----------------------------------------------------------------


def _node(cpus: float, gpus: float, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, "GPU": gpus}}


def test_a_device_actor_asks_for_several_cpus_per_gpu() -> None:
    from ingest.pipeline.engines.device import actor_cpus

    gpu_plan = DevicePlan(actors=2, cpus_per_actor=1.0, gpus_per_actor=1.0, device="cuda",
                          planners_ahead=4)  # fmt: skip
    cpu_plan = DevicePlan(1, 0.5, 0.0, "cpu", 3)
    # min(4, CPUs per GPU), from the tightest live GPU node
    assert actor_cpus(RunOptions(), gpu_plan, [_node(32, 4), _node(16, 0)]) == 4
    assert actor_cpus(RunOptions(), gpu_plan, [_node(32, 4), _node(24, 8)]) == 3
    assert actor_cpus(RunOptions(), gpu_plan, [_node(8, 8), _node(4, 8, alive=False)]) == 1
    # no GPU node yet (GPUs from zero), or no GPUs at all: the plan's share
    assert actor_cpus(RunOptions(), gpu_plan, [_node(16, 0)]) == 1.0
    assert actor_cpus(RunOptions(), cpu_plan, [_node(2, 0)]) == 0.5
    # asked for
    assert actor_cpus(RunOptions(cpus_per_device_actor=6), gpu_plan, [_node(32, 4)]) == 6
    # more than any node has would never be placed: the largest node's CPUs
    assert actor_cpus(RunOptions(cpus_per_device_actor=6), cpu_plan, [_node(2, 0)]) == 2


def test_the_device_actors_cpus_reach_the_readers_decode_threads(
    slide_40x, tmp_path, monkeypatch
) -> None:
    from ingest.pipeline.device_stage import DeviceStage
    from ingest.pipeline.engines.base import RunContext
    from ingest.pipeline.engines.device import stage_kwargs
    from ingest.slides.slide import Slide

    config = IngestConfig(stain="none", tiling=TilingConfig(tile_size=128))
    options = RunOptions(progress=False, device="cpu", tiles_per_batch=8, encode_batch=16)
    store = _store(tmp_path, config)
    ctx = RunContext(
        todo=[],
        store=store,
        config=config,
        options=options,
        storage_options=None,
        config_hash=config.config_hash(),
        result=None,
        progress=None,  # type: ignore[arg-type]
        write_ids={},
        collector=None,
    )  # type: ignore[arg-type]
    kwargs = stage_kwargs(ctx, "cpu", read_threads=3)
    kwargs["encoder_kwargs"] = {"encoder": TINY_VIT, "weights": None, "num_threads": 1}
    stage = DeviceStage(**kwargs)
    assert stage.read_threads == 3
    threads: list[int | None] = []
    read = Slide.read_regions_at_mpp

    def recording(self, *args, **kw):
        threads.append(kw.get("threads"))
        return read(self, *args, **kw)

    planned = _plan(slide_40x, "s40", store, config)
    monkeypatch.setattr(Slide, "read_regions_at_mpp", recording)  # the device stage's reads
    rows = list(stage.run(planned))
    assert {r["status"] for r in rows} == {"tiles"}, rows[0].get("error_message")
    assert threads and set(threads) == {3}, threads


def test_cli_device_options_reach_the_run_options(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import slidebank.ingest_api
    from ingest.pipeline.result import IngestResult
    from slidebank.cli import app

    seen = []

    def record(source, store, *, options, **kwargs):
        seen.append(options)  # where the run would start: the options are what we test
        return IngestResult(run_id="r", config_hash="h", encoder="e")

    monkeypatch.setattr(slidebank.ingest_api, "ingest", record)
    args = ["ingest", str(tmp_path / "none.csv"), "--store", str(tmp_path / "store"), "--json"]
    asked = ["--compile", "--fragment-tiles", "1024", "--cpus-per-device-actor", "6"]
    result = CliRunner().invoke(app, [*args, *asked, "--encode-batch", "96"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert CliRunner().invoke(app, args).exit_code == 0
    picked = [
        (o.device_compile, o.device_fragment_tiles, o.cpus_per_device_actor, o.encode_batch)
        for o in seen
    ]
    assert picked == [(True, 1024, 6, 96), (False, 2048, None, None)]
    assert CliRunner().invoke(app, [*args, "--fragment-tiles", "0"]).exit_code == 2
