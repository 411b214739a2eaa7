"""Widening a trained CTC model (grow.py) must not change what it computes, and the new units must learn."""

from __future__ import annotations

import pytest
import torch

from speechbench.asr.ctc.model import SIZES, CTCModel, ModelConfig
from speechbench.asr.ctc.training.grow import can_grow, grow

SMALL = ModelConfig(name="s", conv_channels=(4, 6), proj=12, hidden=10, layers=2)
WIDE = ModelConfig(name="w", conv_channels=(4, 9), proj=16, hidden=14, layers=2)


def trained_like(cfg: ModelConfig, seed: int) -> CTCModel:
    """Random weights everywhere, feature statistics included (zero biases would hide index mix-ups)."""
    torch.manual_seed(seed)
    m = CTCModel(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    m.set_feature_stats(torch.randn(80), torch.rand(80) + 0.5)
    return m.eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_grown_offline_model_computes_the_same_log_probs(seed):
    small = trained_like(SMALL, seed)
    wide = grow(small, WIDE, seed=seed)
    assert wide.num_params > small.num_params and not wide.training
    feats = torch.randn(3, 57, 80)
    lengths = torch.tensor([57, 40, 9])  # padding must stay invisible in both
    with torch.no_grad():
        a, la = small(feats, lengths)
        b, lb = wide(feats, lengths)
    assert torch.equal(la, lb)
    for i, n in enumerate(la.tolist()):
        torch.testing.assert_close(b[i, :n], a[i, :n], atol=1e-5, rtol=0)


def test_grown_streaming_model_streams_the_same():
    small_cfg = ModelConfig(name="s", conv_channels=(4, 4), proj=8, hidden=8, layers=2, bidirectional=False,
                            causal=True)  # hidden == proj: an identity skip, grown into a matrix one
    wide_cfg = ModelConfig(name="w", conv_channels=(6, 8), proj=12, hidden=16, layers=2, bidirectional=False,
                           causal=True)
    small = trained_like(small_cfg, 3)
    wide = grow(small, wide_cfg)
    feats = torch.randn(1, 48, 80)
    with torch.no_grad():
        whole, _ = small(feats, torch.tensor([48]))
        state, outs = wide.init_state(1), []
        for chunk in feats.split(8, dim=1):
            out, state = wide.forward_chunk(chunk, state)
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=1e-5, rtol=0)


def test_new_units_get_gradients():
    """Zero fan-out must not freeze the new units: the head's weights from them get a gradient at once."""
    wide = grow(trained_like(SMALL, 0), WIDE).train()
    log_probs, _ = wide(torch.randn(2, 40, 80), torch.tensor([40, 40]))
    (log_probs[..., 1:].exp().sum()).backward()
    new_cols = torch.cat([torch.arange(SMALL.hidden, WIDE.hidden),
                          WIDE.hidden + torch.arange(SMALL.hidden, WIDE.hidden)])
    assert wide.head.weight.grad[:, new_cols].abs().sum() > 0
    assert wide.head.weight[:, new_cols].abs().sum() == 0  # ... though they start at zero


def test_only_widening_is_offered():
    assert can_grow(SIZES["medium"], SIZES["large"]) is None  # the documented use
    assert "layers" in can_grow(SIZES["small"], SIZES["medium"])
    assert "bidirectional" in can_grow(SIZES["streaming"], SIZES["large"])
    assert "shrink" in can_grow(WIDE, SMALL)
    with pytest.raises(ValueError, match="cannot grow"):
        grow(trained_like(SMALL, 0), SIZES["medium"])
