"""The Encoder runner: preprocessing on the device, batching, Ray-shaped calls, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from features.encoders import Encoder, EncoderSpec, get_encoder_spec
from features.encoders._torch_backend import preprocess
from infra.errors import ConfigError


def _tiny(name: str) -> EncoderSpec:
    return get_encoder_spec(name).with_timm_overrides(
        f"{name}-tiny", depth=1, embed_dim=96, num_heads=2
    )


def _tiles(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def _normalizers(spec: EncoderSpec) -> tuple[torch.Tensor, torch.Tensor]:
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std), -mean / std


def test_normalization_uses_the_specs_mean_and_std() -> None:
    spec = get_encoder_spec("h-optimus-0")
    tiles = torch.full((1, 224, 224, 3), 180, dtype=torch.uint8)
    x = preprocess(tiles, spec, *_normalizers(spec))
    expected = (180 / 255 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x[0, :, 5, 7].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_resize_and_resize_crop_policies() -> None:
    tiles = torch.from_numpy(_tiles(2, 256))
    uni = get_encoder_spec("uni")
    assert preprocess(tiles, uni, *_normalizers(uni)).shape == (2, 3, 224, 224)

    gigapath = get_encoder_spec("prov-gigapath")  # resize shorter side to 256, crop 224
    small = torch.from_numpy(_tiles(1, 224))
    got = preprocess(small, gigapath, *_normalizers(gigapath))
    up = F.interpolate(small.permute(0, 3, 1, 2).float(), size=(256, 256), mode="bicubic",
                       antialias=True, align_corners=False).clamp(0, 255)  # fmt: skip
    crop = up[..., 16:240, 16:240]
    expected = torch.addcmul(_normalizers(gigapath)[1], crop, _normalizers(gigapath)[0])
    torch.testing.assert_close(got, expected)


def test_batch_size_does_not_change_results() -> None:
    spec = _tiny("virchow2")
    tiles = _tiles(5)
    small = Encoder(spec, weights="random", device="cpu", batch_size=2)(tiles)
    large = Encoder(spec, weights="random", device="cpu", batch_size=16)(tiles)
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-5)
    assert small.shape == (5, 192)


def test_ray_data_style_batch_gets_an_embedding_column() -> None:
    encoder = Encoder(_tiny("uni"), weights="random", device="cpu")
    batch = {"image": _tiles(3), "x": np.array([0, 224, 448]), "slide_id": np.array(["a"] * 3)}
    out = encoder(batch)
    assert set(out) == {"x", "slide_id", "embedding"}  # pixels are dropped after encoding
    assert out["embedding"].shape == (3, 96)
    ragged = np.empty(3, dtype=object)  # how Ray hands a column of per-row arrays
    for i, tile in enumerate(_tiles(3)):
        ragged[i] = tile
    np.testing.assert_array_equal(encoder({"image": ragged})["embedding"], out["embedding"])
    with pytest.raises(ConfigError, match="no 'image' column"):
        encoder({"pixels": _tiles(1)})


def test_input_validation_and_empty_batches() -> None:
    encoder = Encoder(_tiny("uni"), weights="random", device="cpu")
    with pytest.raises(ConfigError, match="uint8"):
        encoder(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ConfigError):
        encoder(np.zeros((1, 224, 224, 4), np.uint8))
    assert encoder(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 96)
    readonly = _tiles(1)
    readonly.flags.writeable = False  # e.g. a zero-copy view of an Arrow buffer
    assert encoder(readonly).shape == (1, 96)
    with pytest.raises(ConfigError):
        Encoder(_tiny("uni"), weights="random", batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_request_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CUDA"):
        Encoder(_tiny("uni"), weights="random", device="cuda")


def test_random_weights_are_seeded_and_leave_global_rng_alone() -> None:
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = Encoder(_tiny("uni"), weights="random", device="cpu", seed=3)(_tiles(2))
    assert torch.equal(torch.get_rng_state(), state)
    b = Encoder(_tiny("uni"), weights="random", device="cpu", seed=3)(_tiles(2))
    np.testing.assert_array_equal(a, b)


def test_provenance_describes_the_run() -> None:
    encoder = Encoder(_tiny("virchow2"), weights="random", device="cpu", num_threads=1)
    prov = encoder.provenance
    assert prov["encoder"] == "virchow2-tiny" and prov["embed_dim"] == 192
    assert prov["pooling"] == "cls+mean" and prov["device"] == "cpu" and prov["dtype"] == "float32"
    assert {"torch", "timm", "spec_fingerprint", "weights"} <= set(prov)
    assert repr(encoder) == "Encoder('virchow2-tiny', dim=192, device='cpu')"


def test_cpu_bf16_autocast_matches_float32() -> None:
    """``cpu_dtype="bfloat16"`` (an opt-in execution choice, as bf16 is on CUDA): the same
    embeddings within a cosine of 0.99, and the provenance says which precision ran."""
    spec = _tiny("uni")
    tiles = _tiles(6)
    fp32 = Encoder(spec, weights="random", device="cpu")(tiles)
    bf16_encoder = Encoder(spec, weights="random", device="cpu", cpu_dtype="bfloat16")
    bf16 = bf16_encoder(tiles)
    assert bf16_encoder.provenance["dtype"] == "bfloat16" and bf16.dtype == np.float32
    assert not np.array_equal(fp32, bf16), "bf16 really ran"
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99
    with pytest.raises(ConfigError, match="cpu_dtype"):
        Encoder(spec, weights="random", device="cpu", cpu_dtype="float16")


@pytest.mark.gpu
def test_gpu_bf16_matches_cpu_float32() -> None:
    spec = _tiny("uni")
    tiles = _tiles(8)
    cpu = Encoder(spec, weights="random", device="cpu")(tiles)
    gpu_encoder = Encoder(spec, weights="random", device="cuda", batch_size=3)
    gpu = gpu_encoder(tiles)
    assert gpu_encoder.provenance["dtype"] == "bfloat16"
    cosine = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cosine.min() > 0.99


@pytest.mark.slow
def test_torch_compile_gives_the_same_embeddings() -> None:
    spec = _tiny("uni")
    tiles = _tiles(2)
    eager = Encoder(spec, weights="random", device="cpu")(tiles)
    compiled = Encoder(spec, weights="random", device="cpu", compile=True)(tiles)
    np.testing.assert_allclose(eager, compiled, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_encoder_runs_as_a_ray_data_actor(ray_local) -> None:
    import ray

    tiles = _tiles(12, 64)
    ds = ray.data.from_items([{"image": t, "i": i} for i, t in enumerate(tiles)])
    out = ds.map_batches(
        Encoder,
        fn_constructor_kwargs={"encoder": "handcrafted-he-v1", "num_threads": 1},
        batch_size=4,
        concurrency=1,
        batch_format="numpy",
    ).take_all()
    got = np.stack([row["embedding"] for row in sorted(out, key=lambda r: r["i"])])
    np.testing.assert_array_equal(got, Encoder()(tiles))
