"""The device engine under trouble, on a CPU: an encoder forward that runs out of device
memory (``torch.cuda.OutOfMemoryError`` raised by the real model's forward, as CUDA raises
it), a GPU decode that fails over to the CPU decoder (the cuCIM stand-in made to fail),
and the run options that size the device stage's batches."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from features.encoders import Encoder
from features.encoders.spec import EncoderSpec, frozen_kwargs
from infra import metrics

TINY_VIT = EncoderSpec(
    name="test-robust-vit",
    family="test",
    embed_dim=16,
    pooling="cls",
    input_size=32,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    architecture="vit_tiny_patch16_224",
    timm_kwargs=frozen_kwargs(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2),
    dtype="float32",
)
OOM_RETRIES = "slidebank_encode_oom_retries_total"


def _tiles(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _fits_only(encoder: Encoder, method: str, most: int) -> list[int]:
    """Make the encoder's real forward raise CUDA's out-of-memory error for batches larger
    than ``most`` tiles; returns the batch sizes it was called with."""
    real = getattr(encoder._backend, method)
    sizes: list[int] = []

    def forward(batch):
        sizes.append(len(batch))
        if len(batch) > most:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate for {len(batch)}"
            )
        return real(batch)

    setattr(encoder._backend, method, forward)
    return sizes


@pytest.mark.parametrize("path", ["embed_device", "encode"])
def test_an_oom_halves_the_batch_down_to_what_fits_and_the_embeddings_are_the_unsplit_ones(
    path, caplog
) -> None:
    tiles = _tiles(20)
    whole = getattr(Encoder(TINY_VIT, device="cpu", batch_size=16), path)(tiles)
    encoder = Encoder(TINY_VIT, device="cpu", batch_size=16)
    sizes = _fits_only(encoder, "forward_tensor" if path == "embed_device" else "run", most=5)
    before = metrics.local_count(OOM_RETRIES)
    with caplog.at_level(logging.WARNING, logger="features.encoders.runtime"):
        split = getattr(encoder, path)(tiles)
    # 16 fails, 8 fails, 4 fits (x4); the last 4 tiles: 4 fits. The smaller size is kept.
    assert sizes == [16, 8, 4, 4, 4, 4, 4]
    assert encoder.batch_size == 4
    assert metrics.local_count(OOM_RETRIES) - before == 2
    assert sum("out of device memory" in r.getMessage() for r in caplog.records) == 2
    np.testing.assert_allclose(np.asarray(split), np.asarray(whole), rtol=0, atol=1e-6)


def test_an_oom_on_a_single_tile_and_other_errors_are_raised_not_retried() -> None:
    encoder = Encoder(TINY_VIT, device="cpu", batch_size=4)
    _fits_only(encoder, "forward_tensor", most=0)
    before = metrics.local_count(OOM_RETRIES)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        encoder.embed_device(_tiles(3))
    assert encoder.batch_size == 1 and metrics.local_count(OOM_RETRIES) - before == 2

    other = Encoder(TINY_VIT, device="cpu", batch_size=4)
    sizes: list[int] = []

    def broken(batch):
        sizes.append(len(batch))
        raise RuntimeError("not a memory problem")

    other._backend.forward_tensor = broken  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="not a memory problem"):
        other.embed_device(_tiles(4))
    assert sizes == [4] and other.batch_size == 4


# ---- a GPU decode that fails over to the CPU decoder -------------------------------------


def _gpu_decode_fails():
    from ingest.slides.backends import cucim_standin

    class GpuDecodeFails(cucim_standin.StandInCuImage):
        """The stand-in's GPU decoder refusing every read, as nvJPEG refuses some JPEGs."""

        def read_region(self, location=(0, 0), size=None, level=0, device="cpu", **kwargs):
            if device != "cpu":
                raise RuntimeError("nvJPEG cannot decode this JPEG (injected)")
            return super().read_region(location, size, level, device=device, **kwargs)

    return GpuDecodeFails


def test_each_slide_whose_gpu_decode_falls_back_is_counted_and_warned_once(
    tmp_path, caplog
) -> None:
    from ingest.slides import open_slide
    from ingest.slides.backends import cucim_standin
    from ingest.slides.backends.cucim_reader import CucimReader
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    if not CucimReader.is_available():
        pytest.skip("cuCIM is not installed")
    path = tmp_path / "fallback.svs"
    write_synthetic_slide(
        path, SyntheticSlideSpec(width=1024, height=768, seed=3, downsamples=(1, 4))
    )
    locs = np.array([[0, 0], [256, 128], [512, 384]])
    with open_slide(str(path), device="cpu") as cpu:
        expected = cpu.read_regions_at_mpp(locs, 128, 0.5)
    failing = _gpu_decode_fails()
    before = metrics.local_count("slidebank_decode_fallbacks_total")
    with cucim_standin.installed() as xp, caplog.at_level(logging.WARNING):
        CucimReader.image_type = lambda p: failing(p, xp)
        for _slide in range(2):
            with open_slide(str(path), device="cuda") as slide:
                for _batch in range(2):  # the second batch decodes on the CPU straight away
                    tiles = slide.read_regions_at_mpp(locs, 128, 0.5, xp=xp)
                    np.testing.assert_array_equal(xp.asnumpy(tiles, what="check"), expected)
    assert metrics.local_count("slidebank_decode_fallbacks_total") - before == 2
    warnings = [r.getMessage() for r in caplog.records if "GPU decode failed" in r.getMessage()]
    assert len(warnings) == 2 and all("fallback.svs" in w and "injected" in w for w in warnings)


# ---- the encoder batch, from the command line to the device stage -------------------------


@pytest.mark.parametrize(
    ("encode_batch", "expected"), [(24, 24), (None, 64)]
)  # 64: a CPU's default
def test_the_device_stage_gets_the_runs_encode_batch(tmp_path, encode_batch, expected) -> None:
    from features.store import FeatureStore
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.device_stage import DeviceStage
    from ingest.pipeline.engines.base import RunContext
    from ingest.pipeline.engines.device import stage_kwargs

    config = IngestConfig(stain="none")
    options = RunOptions(progress=False, device="cpu", tiles_per_batch=8, encode_batch=encode_batch)
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
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
    stage = DeviceStage(**stage_kwargs(ctx, "cpu"))
    assert stage.encode_batch == expected and stage._encoder.batch_size == expected


def test_encode_batch_below_one_is_refused() -> None:
    from infra.errors import ConfigError
    from ingest.pipeline.config import RunOptions

    with pytest.raises(ConfigError, match="encode_batch must be >= 1"):
        RunOptions(encode_batch=0)


def test_weights_are_cast_once_to_the_autocast_dtype_on_cuda_only() -> None:
    from features.encoders._torch_backend import weight_dtype

    assert weight_dtype("cuda", torch.bfloat16) is torch.bfloat16
    assert weight_dtype("cuda", torch.float16) is torch.float16
    assert weight_dtype("cuda", None) is None  # a float32 spec keeps float32 weights
    # On CPU bf16 autocast stays autocast: other runtimes export from the fp32 weights.
    assert weight_dtype("cpu", torch.bfloat16) is None
    encoder = Encoder(TINY_VIT, device="cpu", cpu_dtype="bfloat16")
    assert {p.dtype for p in encoder._backend._module.parameters()} == {torch.float32}


@pytest.mark.gpu
def test_a_bf16_encoder_on_cuda_holds_bf16_weights() -> None:
    import dataclasses

    encoder = Encoder(dataclasses.replace(TINY_VIT, dtype="bfloat16"), device="cuda")
    assert {p.dtype for p in encoder._backend._module.parameters()} == {torch.bfloat16}
    out = encoder.encode(_tiles(4))
    assert out.dtype == np.float32 and np.isfinite(out).all()
