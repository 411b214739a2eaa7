"""Grow a trained CTC model into a wider one of the same depth without changing what it computes.

Why: steps, not size, limit these models on a 2-core CPU. ctc-medium got 4,666 steps over two sessions;
ctc-large, at 3.2 s a step on one thread (ctc-medium: 2.9 s), would need over four hours to match them
from scratch. Widening the trained ctc-medium instead (Net2Net, Chen et al. 2016: "Net2WiderNet", here
with zero fan-out rather than split units) starts ctc-large exactly where ctc-medium ended, and every
further step is spent on the larger model.

How: every unit (conv channel, projection output, LSTM cell per direction) of the small model keeps its
index in its layer of the wide model, and its weights. The new units get the wide model's fresh
initialization for their inputs (so they differ from each other and learn), but the old units' weights
from new units are zero, and so are the head's: the new units compute something, nothing old reads it
until training makes it useful. So the grown model's log-probs equal the small model's (a test checks it).

Only widening: the same number of LSTM layers, the same direction(s), the same conv geometry, the same
vocabulary. (An LSTM layer cannot be inserted as an identity, so small 2-layer -> medium 3-layer is not
offered.)
"""

from __future__ import annotations

import torch

from speechbench.asr.ctc.model import CTCModel, ModelConfig, conv_out_len

_SAME = ("n_mels", "vocab_size", "layers", "bidirectional", "causal", "time_strides", "residual", "layer_norm")


def can_grow(small: ModelConfig, wide: ModelConfig) -> str | None:
    """None when ``small`` can be grown into ``wide``, else the reason it cannot."""
    for key in _SAME:
        if getattr(small, key) != getattr(wide, key):
            return f"{key} differs ({getattr(small, key)!r} vs {getattr(wide, key)!r}); only widening is supported"
    for key in ("proj", "hidden"):
        if getattr(wide, key) < getattr(small, key):
            return f"{key} would shrink ({getattr(small, key)} -> {getattr(wide, key)})"
    if any(w < s for s, w in zip(small.conv_channels, wide.conv_channels, strict=True)):
        return f"conv channels would shrink ({small.conv_channels} -> {wide.conv_channels})"

    def skip_is_matrix(c: ModelConfig) -> bool:
        return c.hidden * (2 if c.bidirectional else 1) != c.proj

    if small.residual and skip_is_matrix(small) and not skip_is_matrix(wide):
        return "the small model's skip connection is a matrix and the wide model's an identity"
    if small.layer_norm:
        return "LayerNorm statistics change with width; growing a layer_norm model is not supported"
    return None


def start_problem(init: ModelConfig, target: ModelConfig) -> str | None:
    """None when a checkpoint of config ``init`` can start training of ``target`` (same config: loaded
    as is; a narrower one: grown), else why not."""
    return None if init == target else can_grow(init, target)


def _embed(fresh: torch.Tensor, old: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
    """``fresh`` with the old units' rows replaced: old weights at the mapped columns, zero elsewhere
    (an old unit must not read a new one). Rows not in ``rows`` (new units) keep their fresh values."""
    out = fresh.detach().clone()
    if cols is None:  # a bias, or a conv weight whose input channels did not change in number
        if out.dim() == 1 or old.shape[1:] == out.shape[1:]:
            out[rows] = old
            return out
        raise ValueError(f"column map needed for {tuple(old.shape)} -> {tuple(out.shape)}")
    out[rows] = 0
    block = out[rows]
    block[:, cols] = old
    out[rows] = block
    return out


def _gates(units: torch.Tensor, hidden: int) -> torch.Tensor:
    """Rows of an LSTM weight (gates i, f, g, o, each ``hidden`` rows) that belong to ``units``."""
    return torch.cat([k * hidden + units for k in range(4)])


def grow(small: CTCModel, wide_cfg: ModelConfig, seed: int = 0) -> CTCModel:
    """A ``wide_cfg`` model computing what ``small`` computes; new units initialized with ``seed``."""
    s, w = small.cfg, wide_cfg
    reason = can_grow(s, w)
    if reason:
        raise ValueError(f"cannot grow {s.name!r} into {w.name!r}: {reason}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        wide = CTCModel(w)
    old = small.state_dict()
    new = wide.state_dict()
    ar = torch.arange

    # Feature statistics and conv1 (input channel 1): old channels are the first ones.
    new["feat_mean"], new["feat_std"] = old["feat_mean"].clone(), old["feat_std"].clone()
    c1 = ar(s.conv_channels[0])
    new["conv1.weight"] = _embed(new["conv1.weight"], old["conv1.weight"], c1, None)
    new["conv1.bias"] = _embed(new["conv1.bias"], old["conv1.bias"], c1, None)
    c2 = ar(s.conv_channels[1])
    new["conv2.weight"] = _embed(new["conv2.weight"], old["conv2.weight"], c2, c1)
    new["conv2.bias"] = _embed(new["conv2.bias"], old["conv2.bias"], c2, None)

    # The projection reads the conv map flattened channel-major (index = channel * freq + bin), so the old
    # channels' columns are a prefix.
    freq = conv_out_len(conv_out_len(s.n_mels))
    proj_cols = ar(s.conv_channels[1] * freq)
    proj_units = ar(s.proj)
    new["proj.weight"] = _embed(new["proj.weight"], old["proj.weight"], proj_units, proj_cols)
    new["proj.bias"] = _embed(new["proj.bias"], old["proj.bias"], proj_units, None)

    # LSTM layers. Layer outputs: one direction -> [h]; two -> [h_fw | h_bw], each block ``hidden`` wide.
    units = ar(s.hidden)
    directions = 2 if s.bidirectional else 1
    out_map = torch.cat([d * w.hidden + units for d in range(directions)])  # old output index -> new
    for layer in range(s.layers):
        in_cols = proj_units if layer == 0 else out_map
        if s.bidirectional:
            names = [(f"lstm.{d}.{layer}.", "l0") for d in ("fw", "bw")]
        else:
            names = [("lstm.", f"l{layer}")]
        for prefix, suffix in names:
            rows = _gates(units, w.hidden)
            for kind, cols in (("ih", in_cols), ("hh", units)):
                key = f"{prefix}weight_{kind}_{suffix}"
                new[key] = _embed(new[key], old[key], rows, cols)
                key = f"{prefix}bias_{kind}_{suffix}"
                new[key] = _embed(new[key], old[key], rows, None)

    # Skip (LSTM input -> output space) and head: the old outputs read only old inputs.
    if s.residual:
        if "skip.weight" in old:
            new["skip.weight"] = _embed(new["skip.weight"], old["skip.weight"], out_map, proj_units)
        elif "skip.weight" in new:  # the small model's skip was an identity; the wide one's is a matrix
            identity = torch.eye(len(out_map), len(proj_units))
            new["skip.weight"] = _embed(new["skip.weight"], identity, out_map, proj_units)
    vocab = ar(s.vocab_size)
    new["head.weight"] = _embed(new["head.weight"], old["head.weight"], vocab, out_map)
    new["head.bias"] = old["head.bias"].clone()
    wide.load_state_dict(new)
    return wide.train(small.training)
