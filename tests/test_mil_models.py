"""MIL models and heads: shapes, attention, gradients, CLAM's instance loss, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infra.errors import ConfigError
from training.mil.heads import make_head
from training.mil.models import CLAM, MILConfig, build_model

MODELS = ["abmil", "clam_sb", "clam_mb", "transmil"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("n_tiles", [1, 5, 37])
def test_shapes_and_attention(name: str, n_tiles: int) -> None:
    torch.manual_seed(0)
    model = build_model(MILConfig(model=name, in_dim=12, n_outputs=3, hidden=16, attn_dim=8))
    out = model(torch.randn(n_tiles, 12), label=1)
    assert out.logits.shape == (3,)
    assert out.attention.shape == (n_tiles,)
    assert torch.all(out.attention >= 0)
    assert float(out.attention.detach().sum()) == pytest.approx(1.0, abs=1e-5)
    if name.startswith("clam"):
        assert out.instance_loss is not None and torch.isfinite(out.instance_loss)
    else:
        assert out.instance_loss is None


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    cfg = MILConfig(
        model=name, in_dim=8, n_outputs=2, hidden=16, attn_dim=8, dropout=0.0, subtyping=True
    )
    model = build_model(cfg)
    out = model(torch.randn(20, 8), label=0)
    loss = out.logits.sum() + (out.instance_loss if out.instance_loss is not None else 0.0)
    loss.backward()
    # The bias of the attention score shifts every tile's logit equally, and softmax is
    # shift-invariant: its gradient is exactly zero (torch >= 2.15 computes it as 0.0;
    # older builds left rounding noise). It must still receive a gradient tensor.
    invariant = {"attention.score.bias"}
    assert all(p.grad is not None for p in model.parameters())
    missing = [
        n for n, p in model.named_parameters() if n not in invariant and not torch.any(p.grad != 0)
    ]
    assert missing == []


def test_clam_instance_loss_uses_top_and_bottom_k() -> None:
    """With attention forced onto known tiles, the label's instance classifier is
    trained on those tiles as positives and the least-attended ones as negatives."""
    cfg = MILConfig(model="clam_sb", in_dim=4, n_outputs=2, hidden=4, k_sample=2)
    model = CLAM(cfg, multi_branch=False)
    h = torch.eye(4).repeat(2, 1)  # 8 tiles
    a = torch.tensor([[0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.01, 0.01]])
    seen: dict[str, torch.Tensor] = {}

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen["x"] = x
        return torch.zeros(len(x), 2)

    model.instance_classifiers[1].forward = spy  # type: ignore[method-assign]
    loss = model.instance_loss(h, a, label=1)
    # top-2 tiles are 0 and 1, bottom-2 are 6 and 7
    assert torch.equal(seen["x"], h[[0, 1, 7, 6]]) or torch.equal(seen["x"], h[[0, 1, 6, 7]])
    assert float(loss.detach()) == pytest.approx(np.log(2), abs=1e-6)  # zero logits: CE = log 2


def test_clam_instance_loss_trains_instance_classifier() -> None:
    torch.manual_seed(0)
    cfg = MILConfig(
        model="clam_mb", in_dim=6, n_outputs=2, hidden=16, attn_dim=8, dropout=0.0, k_sample=4
    )
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(30, 6)
    first = None
    for _ in range(50):
        optimizer.zero_grad()
        loss = model(x, label=1).instance_loss
        first = float(loss.detach()) if first is None else first
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first


def test_bad_configs_raise_typed_errors() -> None:
    with pytest.raises(ConfigError):
        MILConfig(model="nope")
    with pytest.raises(ValueError, match="dropout"):  # ConfigError is a ValueError too
        MILConfig(dropout=1.5)
    with pytest.raises(ConfigError):
        MILConfig(model="transmil", hidden=30, n_heads=4)
    with pytest.raises(ConfigError):
        build_model(MILConfig())(torch.zeros(0, 64))


def test_heads_losses_and_predictions() -> None:
    binary = make_head("binary", np.array([0, 0, 0, 1]))
    assert binary.n_outputs == 2 and binary.weights[1] > binary.weights[0]  # minority weighted up
    logits = torch.tensor([0.0, 2.0], requires_grad=True)
    loss = binary.loss(logits, torch.tensor([1.0]))
    loss.backward()
    assert logits.grad is not None
    assert binary.predict(logits).shape == (1,) and 0.5 < binary.predict(logits)[0] < 1
    multi = make_head("multiclass", np.array([0, 1, 2, 2]))
    assert multi.predict(torch.zeros(3)).sum() == pytest.approx(1.0)
    sigs = make_head("multisignature", np.array([[1, 0], [0, 1], [0, 0]]))
    assert float(sigs.loss(torch.zeros(2), torch.tensor([1.0, 0.0])).detach()) > 0
    reg = make_head("regression", np.array([[1.0, 10.0], [3.0, 30.0]]))
    # Zero standardized output is the training mean on the raw scale.
    np.testing.assert_allclose(reg.predict(torch.zeros(2)), [2.0, 20.0])
    assert float(reg.loss(torch.zeros(2), torch.tensor([2.0, 20.0])).detach()) == pytest.approx(0.0)
    with pytest.raises(ConfigError):
        make_head("binary", np.array([1, 1]))
    with pytest.raises(ConfigError):
        make_head("ranking", np.array([1.0]))
