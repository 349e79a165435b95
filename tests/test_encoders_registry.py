"""Encoder registry and specs: every entry builds at its declared dimension."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from features.encoders import (
    DEFAULT_ENCODER,
    Encoder,
    EncoderSpec,
    get_encoder_spec,
    list_encoders,
    register_encoder,
)
from features.encoders import registry as registry_module
from infra.errors import ConfigError

# Published output dimensions (model cards), independent of the spec modules.
DECLARED = {
    "handcrafted-he-v1": 64,
    "uni": 1024,
    "uni2-h": 1536,
    "virchow": 2560,
    "virchow2": 2560,
    "h-optimus-0": 1536,
    "h-optimus-1": 1536,
    "prov-gigapath": 1536,
    "phikon-v2": 1024,
}
NEURAL = sorted(name for name in DECLARED if name != DEFAULT_ENCODER)


def tiny(spec: EncoderSpec) -> EncoderSpec:
    """Same family, one block, width 96 (96 keeps SwiGLU hidden sizes even)."""
    return spec.with_timm_overrides(f"{spec.name}-tiny", depth=1, embed_dim=96, num_heads=2)


def test_registry_lists_every_family_with_the_default_first() -> None:
    names = [spec.name for spec in list_encoders()]
    assert names[0] == DEFAULT_ENCODER
    assert set(DECLARED) <= set(names)
    for name, dim in DECLARED.items():
        assert get_encoder_spec(name).embed_dim == dim, name


def test_default_is_returned_without_a_name() -> None:
    assert get_encoder_spec().name == DEFAULT_ENCODER
    assert get_encoder_spec(None).is_builtin


@pytest.mark.parametrize("name", NEURAL)
def test_full_size_spec_produces_its_declared_dim_on_meta_device(name: str) -> None:
    from features.encoders._build import measure_embed_dim

    spec = get_encoder_spec(name)
    assert measure_embed_dim(spec) == DECLARED[name]


@pytest.mark.parametrize("name", NEURAL)
def test_tiny_variant_builds_with_random_weights_and_runs(name: str) -> None:
    spec = tiny(get_encoder_spec(name))
    encoder = Encoder(spec, weights="random", device="cpu")
    tiles = np.random.default_rng(0).integers(
        0, 256, (2, spec.input_size, spec.input_size, 3), np.uint8
    )
    out = encoder(tiles)
    assert out.shape == (2, 96 * get_encoder_spec(name).pool_factor)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert encoder.provenance["weights"]["origin"] == "random"


@pytest.mark.slow
@pytest.mark.parametrize("name", NEURAL)
def test_full_size_model_runs_with_random_weights(name: str) -> None:
    spec = get_encoder_spec(name)
    encoder = Encoder(spec, weights="random", device="cpu", batch_size=1)
    tiles = np.full((1, spec.input_size, spec.input_size, 3), 200, np.uint8)
    assert encoder(tiles).shape == (1, DECLARED[name])


def test_any_timm_architecture_resolves_by_name() -> None:
    spec = get_encoder_spec("timm:resnet18")
    assert spec.pooling == "head"
    assert spec.embed_dim == 512
    assert spec.weights is not None and spec.weights.hub_repo
    encoder = Encoder(spec, weights="random", device="cpu")
    tiles = np.zeros((2, 96, 96, 3), np.uint8)  # resized to the architecture's 224
    assert encoder(tiles).shape == (2, 512)


def test_unknown_names_are_config_errors_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="virchow2"):
        get_encoder_spec("virchow3")
    with pytest.raises(ValueError, match="timm has no architecture"):
        get_encoder_spec("timm:definitely_not_a_model")


def test_spec_is_frozen_hashable_and_picklable() -> None:
    spec = get_encoder_spec("virchow2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.embed_dim = 3  # type: ignore[misc]
    assert hash(spec) == hash(pickle.loads(pickle.dumps(spec)))
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert json.loads(json.dumps(spec.to_dict()))["timm_kwargs"]["reg_tokens"] == 4


def test_fingerprint_tracks_what_changes_the_embedding_only() -> None:
    spec = get_encoder_spec("uni")
    assert spec.fingerprint() == dataclasses.replace(spec, description="x").fingerprint()
    assert spec.fingerprint() != dataclasses.replace(spec, mean=(0.5, 0.5, 0.5)).fingerprint()
    assert spec.fingerprint() != dataclasses.replace(spec, pooling="cls+mean").fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"pooling": "max"},
        {"std": (0.2, 0.0, 0.2)},
        {"embed_dim": 0},
        {"name": "Bad Name"},
        {"resize_policy": "resize_crop", "resize_size": 100},
        {"timm_kwargs": {"depth": 2}},
    ],
)
def test_invalid_specs_are_rejected(change: dict) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(get_encoder_spec("uni"), **change)


def test_registering_a_conflicting_spec_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_SPECS", dict(registry_module._SPECS))
    base = dataclasses.replace(get_encoder_spec("uni"), name="test-conflict")
    register_encoder(lambda: base)
    register_encoder(lambda: base)  # the same spec again is fine (re-import)
    with pytest.raises(ConfigError, match="already registered"):
        register_encoder(lambda: dataclasses.replace(base, embed_dim=5))


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, features.encoders; print('torch' in sys.modules, 'timm' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def _cli() -> typer.Typer:
    from slidebank._cli_encoders import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def test_cli_lists_the_registry(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("SLIDEBANK_WEIGHTS_DIR", raising=False)
    result = CliRunner().invoke(_cli(), ["encoders", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {name: rows[name]["dim"] for name in DECLARED} == DECLARED
    assert rows[DEFAULT_ENCODER]["weights"] == "built-in"
    assert rows["uni"]["weights"] == "needs weights"
    assert rows["uni"]["env_var"] == "SLIDEBANK_WEIGHTS_UNI"
    table = CliRunner().invoke(_cli(), ["encoders"])
    assert table.exit_code == 0
    assert "virchow2" in table.output and "2560" in table.output
    assert "Example" in CliRunner().invoke(_cli(), ["encoders", "--help"]).output
