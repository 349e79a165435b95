"""Issue 28 #3: the work before a run's first tile is not done twice or thrown away.

A model loaded from a weights file is built without drawing a random initialisation the
file then overwrites, with exactly the embeddings of the usual build; a model with state no
file holds (non-persistent buffers) still gets the usual build. OpenVINO keeps its
compiled model beside the cached export, so a later process imports it instead of
compiling again, with the same embeddings (not the exporting process: the blob cache is
keyed by the IR's path, and the export's folder is renamed when it is published). A
process forked while Ctrl-C's exception holds the last encoder reaches its exec.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from features.encoders import Encoder, EncoderSpec
from features.encoders._build import build_model
from features.encoders._torch_backend import _has_unsaved_state
from features.encoders.runtimes import _backends
from tests._support.runtimes import tiny_vit

# exports and compiled models go to each test's own folder (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("runtime_cache")


def _tiles(n: int = 5) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 224, 224, 3), np.uint8)


def _seed_zero_weights(folder: Path, spec: EncoderSpec) -> Path:
    """The weights ``Encoder(spec, weights="random", seed=0)`` draws, as a file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(spec)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _encoder(spec: EncoderSpec, weights: str, runtime: str = "torch") -> Encoder:
    return Encoder(
        spec, weights=weights, device="cpu", batch_size=4, num_threads=1, runtime=runtime
    )


def _count_random_draws(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of the real (not meta) tensors filled by the random initialisers."""
    drawn: list[tuple[int, ...]] = []
    for name in ("uniform_", "normal_"):
        real = getattr(torch.Tensor, name)

        def spy(self, *args, _real=real, **kwargs):
            if self.device.type != "meta":
                drawn.append(tuple(self.shape))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return drawn


def test_a_weights_file_is_loaded_without_a_random_init_and_the_same_embeddings(
    tmp_path, monkeypatch
) -> None:
    spec = tiny_vit()
    path = _seed_zero_weights(tmp_path, spec)
    ref = _encoder(spec, "random")(_tiles())  # the usual build: random init, seed 0
    drawn = _count_random_draws(monkeypatch)
    from_file = _encoder(spec, str(path))
    assert drawn == []
    np.testing.assert_array_equal(from_file(_tiles()), ref)
    _encoder(spec, "random")  # the spy sees a random init where one is drawn
    assert drawn


def test_a_model_with_state_no_file_holds_gets_the_usual_build() -> None:
    class Rotary(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.arange(4.0), persistent=False)

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.ones(3)  # a plain tensor attribute: not in a state dict

    assert _has_unsaved_state(nn.Sequential(nn.Linear(2, 2), Rotary()))
    assert _has_unsaved_state(nn.Sequential(Scaled()))
    assert not _has_unsaved_state(build_model(tiny_vit(), device="meta"))


def test_openvino_keeps_its_compiled_model_beside_the_export(tmp_path, runtime_cache) -> None:
    if _backends.runtime_version("openvino") is None:
        pytest.skip("openvino is not installed (pip install 'slidebank[runtimes]')")
    spec = tiny_vit()
    path = str(_seed_zero_weights(tmp_path, spec))
    first = _encoder(spec, path, "openvino")  # exports: compiled outside the blob cache
    assert first.provenance["runtime"] == "openvino", first.provenance.get("runtime_fallback")
    assert not list(runtime_cache.glob("openvino-*/compiled/*.blob"))
    second = _encoder(spec, path, "openvino")  # the next process compiles into the cache
    assert second.provenance["runtime_cache"] == "hit"
    blobs = list(runtime_cache.glob("openvino-*/compiled/*.blob"))
    assert len(blobs) == 1
    third = _encoder(spec, path, "openvino")  # and later ones import that blob
    assert list(runtime_cache.glob("openvino-*/compiled/*.blob")) == blobs
    tiles = _tiles()
    np.testing.assert_array_equal(second(tiles), first(tiles))
    np.testing.assert_array_equal(third(tiles), first(tiles))


def test_a_fork_while_an_exception_holds_the_last_encoder_does_not_hang() -> None:
    """Ray boots in a thread during the head start and starts its processes with a
    ``preexec_fn`` (Python runs in the child before its exec). Ctrl-C meanwhile leaves
    the exception holding the in-process encoder; the child must not destroy its
    OpenVINO objects (their destructors wait on threads that were not forked)."""
    if _backends.runtime_version("openvino") is None:
        pytest.skip("openvino is not installed (pip install 'slidebank[runtimes]')")
    go, forked = threading.Event(), threading.Event()

    def fork() -> None:
        go.wait()
        subprocess.run(["true"], preexec_fn=lambda: None, check=True, stdout=subprocess.DEVNULL)
        forked.set()

    threading.Thread(target=fork, daemon=True).start()

    def encode_then_stop() -> None:
        encoder = Encoder(
            tiny_vit(),
            weights="random",
            device="cpu",
            batch_size=4,
            num_threads=2,
            runtime="openvino",
        )
        assert encoder.provenance["runtime"] == "openvino"
        encoder(_tiles(4))
        raise KeyboardInterrupt  # its traceback holds the only reference to the encoder

    try:
        encode_then_stop()
    except KeyboardInterrupt:
        go.set()
        assert forked.wait(60), "the forked child hung before its exec"
