"""Issue 28 #1: encoder runtimes. Each runtime agrees with eager PyTorch float32 on a fixed
batch (max abs, cosine), exports are cached, ``auto`` measures once and keeps the
fastest that agrees, and a missing or failing runtime falls back to eager with a warning.

OpenVINO and ONNX Runtime come from the ``runtimes`` extra: their tests skip, saying so,
where it is not installed. ``torch.compile`` compiles for tens of seconds even for a tiny
model on CPU, so its tolerance test is marked slow.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from features.encoders import Encoder
from features.encoders.runtimes import RUNTIMES, _backends, prepare
from infra.errors import ConfigError
from tests._support.runtimes import tiny_vit

# exports and compiled models go to each test's own folder (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("runtime_cache")

FP32_MAX_ABS = 1e-4


def _tiles(n: int = 5, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), np.uint8)


def _encoder(runtime: str, **kwargs) -> Encoder:
    return Encoder(
        tiny_vit(),
        weights="random",
        device="cpu",
        batch_size=4,
        num_threads=1,
        runtime=runtime,
        **kwargs,
    )


def _metrics(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    cosine = np.sum(out * ref, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    return float(np.max(np.abs(out - ref))), float(np.min(cosine))


def _needs(runtime: str) -> None:
    if _backends.runtime_version(runtime) is None:
        pytest.skip(f"{runtime} is not installed (pip install 'slidebank[runtimes]')")


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_exported_runtime_matches_eager_fp32_and_is_cached(runtime, runtime_cache) -> None:
    _needs(runtime)
    tiles = _tiles()  # 5 tiles in batches of 4: the dynamic batch axis serves 4 and 1
    ref = _encoder("torch")(tiles)
    encoder = _encoder(runtime)
    assert encoder.provenance["runtime"] == runtime, encoder.provenance.get("runtime_fallback")
    assert encoder.provenance["runtime_cache"] == "built"
    max_abs, cosine = _metrics(encoder(tiles), ref)
    assert max_abs <= FP32_MAX_ABS and cosine >= 0.99999
    check = encoder.provenance["runtime_check"]  # the check made at export time
    assert check["max_abs"] <= FP32_MAX_ABS and check["min_cosine"] >= 0.99999
    again = _encoder(runtime)  # a second process on the node: the export is reused
    assert again.provenance["runtime_cache"] == "hit"
    np.testing.assert_array_equal(again(tiles), encoder(tiles))
    assert len([p for p in runtime_cache.iterdir() if p.name.startswith(runtime)]) == 1
    assert not list(runtime_cache.glob(".*partial"))  # nothing half-written left behind


@pytest.mark.slow
def test_compile_matches_eager_fp32() -> None:
    tiles = _tiles()
    ref = _encoder("torch")(tiles)
    encoder = _encoder("compile")
    assert encoder.provenance["runtime"] == "compile", encoder.provenance.get("runtime_fallback")
    max_abs, cosine = _metrics(encoder(tiles), ref)
    assert max_abs <= FP32_MAX_ABS and cosine >= 0.99999


def test_openvino_bfloat16_is_opt_in_and_close() -> None:
    _needs("openvino")
    tiles = _tiles()
    ref = _encoder("torch")(tiles)
    encoder = _encoder("openvino", cpu_dtype="bfloat16")
    assert encoder.provenance["runtime"] == "openvino"
    assert encoder.provenance["dtype"] == "bfloat16"
    assert _metrics(encoder(tiles), ref)[1] >= 0.999


def test_auto_measures_once_and_keeps_the_fastest_that_agrees(runtime_cache) -> None:
    tiles = _tiles()
    ref = _encoder("torch")(tiles)
    encoder = _encoder("auto")
    chosen = encoder.provenance["runtime"]
    assert encoder.provenance["runtime_requested"] == "auto"
    assert "runtime_fallback" not in encoder.provenance
    assert _metrics(encoder(tiles), ref)[0] <= FP32_MAX_ABS
    installed = [r for r in ("openvino", "onnxruntime") if _backends.runtime_version(r)]
    if not installed:  # nothing to choose from: eager, no measurement, nothing written
        assert chosen == "torch" and not runtime_cache.exists()
        return
    measured = encoder.provenance["runtime_choice"]
    assert set(measured) == {"torch", *installed}
    agreeing = {
        r: m["tiles_per_s"]
        for r, m in measured.items()
        if "tiles_per_s" in m and (r == "torch" or m["max_abs"] <= FP32_MAX_ABS)
    }
    assert chosen == max(agreeing, key=agreeing.__getitem__)
    (choice,) = (runtime_cache / "choices").iterdir()
    written = choice.stat().st_mtime_ns
    again = _encoder("auto")
    assert again.provenance["runtime"] == chosen and again.provenance["runtime_choice"] == measured
    assert choice.stat().st_mtime_ns == written  # read, not measured again


def test_a_missing_runtime_falls_back_to_eager_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setitem(_backends.PACKAGES, "openvino", "slidebank-no-such-package")
    tiles = _tiles(2)
    with caplog.at_level(logging.WARNING, logger="features.encoders.runtimes"):
        encoder = _encoder("openvino")
    assert encoder.provenance["runtime"] == "torch"
    assert "not installed" in encoder.provenance["runtime_fallback"]
    assert any("running eager PyTorch instead" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(encoder(tiles), _encoder("torch")(tiles))


def test_an_export_that_fails_falls_back_to_eager_with_a_warning(runtime_cache, caplog) -> None:
    _needs("onnxruntime")
    runtime_cache.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="features.encoders.runtimes"):
        explicit = _encoder("onnxruntime")
        auto = _encoder("auto")
    assert explicit.provenance["runtime"] == "torch" and auto.provenance["runtime"] == "torch"
    assert "could not run this model" in explicit.provenance["runtime_fallback"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) >= 2


def test_runtime_names_are_checked_and_gpus_stay_on_torch() -> None:
    with pytest.raises(ConfigError, match="runtime must be one of"):
        _encoder("tensorflow")
    assert RUNTIMES == ("auto", "torch", "compile", "openvino", "onnxruntime")
    import torch

    module = torch.nn.Linear(4, 2)
    for runtime in ("auto", "torch", "openvino"):  # decided without touching a GPU
        assert prepare(runtime, module, tiny_vit(), device="cuda").runtime == "torch"
