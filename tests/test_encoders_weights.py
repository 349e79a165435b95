"""Weights: local safetensors reproduce the saver's outputs, code-carrying pickles are refused,
missing gated weights give instructions, and provenance records the checksum."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from features.encoders import (
    Encoder,
    EncoderSpec,
    get_encoder_spec,
    load_state_dict,
    resolve_weights,
    weights_status,
)
from features.encoders._build import build_model
from infra.errors import WeightsError


@pytest.fixture(autouse=True)
def _offline_and_empty(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test here may reach the network or see a real cache or weights folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("SLIDEBANK_WEIGHTS_DIR", raising=False)
    for key in list(os.environ):
        if key.startswith("SLIDEBANK_WEIGHTS_"):
            monkeypatch.delenv(key)


@pytest.fixture
def tiny_uni() -> EncoderSpec:
    return get_encoder_spec("uni").with_timm_overrides(
        "uni-tiny", depth=2, embed_dim=96, num_heads=2
    )


def _saved_model(spec: EncoderSpec, seed: int = 7) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec)


def _reference(model: torch.nn.Module, spec: EncoderSpec, tiles: np.ndarray) -> np.ndarray:
    """The saver's own forward pass, with preprocessing written out independently."""
    x = torch.from_numpy(tiles.copy()).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model.forward_features((x - mean) / std)  # type: ignore[operator]
    return tokens[:, 0].numpy()


def _tiles(n: int = 3, size: int = 224) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3), np.uint8)


def test_safetensors_checkpoint_reproduces_the_savers_outputs(
    tmp_path: Path, tiny_uni: EncoderSpec
) -> None:
    model = _saved_model(tiny_uni)
    path = tmp_path / "uni-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    tiles = _tiles()

    encoder = Encoder(tiny_uni, weights=path, device="cpu")
    np.testing.assert_allclose(
        encoder(tiles), _reference(model, tiny_uni, tiles), rtol=1e-5, atol=1e-5
    )
    again = Encoder(tiny_uni, weights=path, device="cpu")
    np.testing.assert_array_equal(encoder(tiles), again(tiles))

    weights = encoder.provenance["weights"]
    assert weights["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights["origin"] == "explicit"
    assert weights["file"] == "uni-tiny.safetensors"  # a name, never the full path
    assert encoder.provenance["spec_fingerprint"] == tiny_uni.fingerprint()


def test_plain_torch_checkpoint_loads_with_weights_only(
    tmp_path: Path, tiny_uni: EncoderSpec
) -> None:
    model = _saved_model(tiny_uni)
    path = tmp_path / "pytorch_model.bin"
    # DDP-style prefix and a classifier head: both are handled.
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.head.weight"] = torch.zeros(10, 96)
    torch.save({"state_dict": state}, path)
    tiles = _tiles(2)
    encoder = Encoder(tiny_uni, weights=path, device="cpu")
    np.testing.assert_allclose(
        encoder(tiles), _reference(model, tiny_uni, tiles), rtol=1e-5, atol=1e-5
    )


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_carrying_code_is_refused_and_never_runs(
    tmp_path: Path, tiny_uni: EncoderSpec, writer: str
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    payload = {"blocks.0.norm1.weight": torch.ones(96), "x": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)  # what torch.save itself writes

    with pytest.raises(WeightsError, match="refused"):
        load_state_dict(path)
    with pytest.raises(WeightsError):
        Encoder(tiny_uni, weights=path, device="cpu")
    assert not marker.exists()


def test_missing_gated_model_gives_clear_instructions() -> None:
    with pytest.raises(WeightsError) as info:
        Encoder("uni")
    message = str(info.value)
    assert "gated" in message
    assert "https://huggingface.co/MahmoodLab/UNI" in message
    assert "--weights" in message
    assert "SLIDEBANK_WEIGHTS_UNI" in message
    assert "SLIDEBANK_WEIGHTS_DIR" in message
    assert "HF_HUB_OFFLINE" in message
    assert isinstance(info.value, OSError)  # typed error that is also the builtin
    assert weights_status(get_encoder_spec("uni")) == "needs weights"


def test_hub_is_not_contacted_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def forbidden(*args, **kwargs):
        raise AssertionError("hub download attempted while HF_HUB_OFFLINE=1")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        resolve_weights(get_encoder_spec("phikon-v2"))


def test_env_variable_and_weights_dir_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_uni: EncoderSpec
) -> None:
    spec = get_encoder_spec("uni2-h")
    path = tmp_path / "somewhere.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    monkeypatch.setenv("SLIDEBANK_WEIGHTS_UNI2_H", str(path))
    assert resolve_weights(spec).origin == "env"
    assert weights_status(spec) == "local file"

    monkeypatch.setenv("SLIDEBANK_WEIGHTS_UNI2_H", str(tmp_path / "missing.bin"))
    with pytest.raises(WeightsError, match="does not name a file"):
        resolve_weights(spec)

    monkeypatch.delenv("SLIDEBANK_WEIGHTS_UNI2_H")
    folder = tmp_path / "weights"
    (folder / "virchow2").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(folder / "uni2-h.safetensors"))
    save_file({"x": torch.zeros(1)}, str(folder / "virchow2" / "model.safetensors"))
    monkeypatch.setenv("SLIDEBANK_WEIGHTS_DIR", str(folder))
    assert resolve_weights(spec).origin == "weights-dir"
    assert resolve_weights(get_encoder_spec("virchow2")).path.name == "model.safetensors"


def test_hugging_face_cache_is_used_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub cache layout: models--org--name/{refs/main, snapshots/<revision>/<file>}.
    repo = tmp_path / "hf-home" / "hub" / "models--bioptimus--H-optimus-0"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({"x": torch.zeros(1)}, str(snapshot / "model.safetensors"))
    spec = get_encoder_spec("h-optimus-0")
    assert weights_status(spec) == "hub cache"
    source = resolve_weights(spec)
    assert source.origin == "hub-cache"
    assert source.hub_repo == "bioptimus/H-optimus-0"


def test_checksum_pinning_and_architecture_mismatch_are_errors(
    tmp_path: Path, tiny_uni: EncoderSpec
) -> None:
    path = tmp_path / "w.safetensors"
    save_file(_saved_model(tiny_uni).state_dict(), str(path))
    with pytest.raises(WeightsError, match="sha256"):
        Encoder(tiny_uni, weights=path, expected_sha256="0" * 64)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    Encoder(tiny_uni, weights=path, expected_sha256=digest.upper(), device="cpu")

    deeper = tiny_uni.with_timm_overrides("uni-tiny3", depth=3)
    with pytest.raises(WeightsError, match=r"missing \['blocks\.2"):
        Encoder(deeper, weights=path, device="cpu")
    with pytest.raises(WeightsError, match="does not exist"):
        Encoder(tiny_uni, weights=tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="built in"):
        Encoder("handcrafted-he-v1", weights=path)


def _timm_to_hf_dinov2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write a timm ViT state dict the way transformers' Dinov2Model (4.x) names it."""
    out: dict[str, torch.Tensor] = {}
    names = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    block = {"attn.proj": "attention.output.dense", "ls1.gamma": "layer_scale1.lambda1",
             "ls2.gamma": "layer_scale2.lambda1"}  # fmt: skip
    for key, value in state.items():
        if key in names:
            out[names[key]] = value
            continue
        index, rest = re.match(r"blocks\.(\d+)\.(.+)", key).groups()  # type: ignore[union-attr]
        prefix = f"encoder.layer.{index}."
        if rest.startswith("attn.qkv."):
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[prefix + f"attention.attention.{part}.{rest.rsplit('.', 1)[1]}"] = chunk.clone()
            continue
        for old, new in block.items():
            rest = rest.replace(old, new)
        out[prefix + rest] = value
    out["embeddings.mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return out


def test_phikon_transformers_checkpoint_is_renamed_onto_timm(tmp_path: Path) -> None:
    spec = get_encoder_spec("phikon-v2").with_timm_overrides(
        "phikon-tiny", depth=2, embed_dim=96, num_heads=2
    )
    model = _saved_model(spec, seed=11)
    path = tmp_path / "model.safetensors"
    save_file(
        {k: v.contiguous() for k, v in _timm_to_hf_dinov2(model.state_dict()).items()}, str(path)
    )
    tiles = _tiles(2)
    encoder = Encoder(spec, weights=path, device="cpu")
    np.testing.assert_allclose(encoder(tiles), _reference(model, spec, tiles), rtol=1e-5, atol=1e-5)


def test_explicit_hub_name_uses_the_cache_offline(tmp_path: Path, tiny_uni: EncoderSpec) -> None:
    repo = tmp_path / "hf-home" / "hub" / "models--my-lab--uni-mirror"
    snapshot = repo / "snapshots" / "feedbeef" / "weights"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("feedbeef")
    model = _saved_model(tiny_uni)
    save_file(model.state_dict(), str(snapshot / "uni-tiny.safetensors"))
    encoder = Encoder(tiny_uni, weights="hf-hub:my-lab/uni-mirror/weights/uni-tiny.safetensors")
    assert encoder.provenance["weights"]["origin"] == "hub-cache"
    assert encoder.provenance["weights"]["hub_repo"] == "my-lab/uni-mirror"
    with pytest.raises(WeightsError, match="my-lab/other"):
        Encoder(tiny_uni, weights="hf-hub:my-lab/other")
    with pytest.raises(WeightsError, match="owner/repo"):
        Encoder(tiny_uni, weights="hf-hub:lonely")
