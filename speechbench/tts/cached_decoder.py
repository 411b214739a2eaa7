"""A KV-cached re-implementation of the seed's decoder that loads the *same* weights.

``nn.TransformerDecoderLayer`` cannot take a cache, so each layer is re-written with plain ``nn.Linear``
/ ``nn.LayerNorm`` modules (so ``quantize_dynamic`` can swap them for int8) and a functional attention:

* self-attention: ``in_proj_weight`` is split into one fused q/k/v projection; the new frame's K/V are
  written into a preallocated cache at each sequence's own position, and the query attends to positions
  ``<= pos`` (the causal mask, expressed as a length mask).
* cross-attention: K/V of the encoder output are computed once per request at prefill ("recomputing
  static components" was the seed's other waste) and masked to each request's text length.
* post-norm residual blocks exactly as ``nn.TransformerDecoderLayer(norm_first=False)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechbench.tts.model import SimpleTTSModel


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` over the seed model's own weight storage (a view, not a copy): building an engine
    then costs no weight copies (it used to copy 100 MB, ~0.5 s, per engine, and the benchmark builds a
    dozen), and fp32 engines add no weight memory. Nothing here writes to weights; int8 quantization makes
    its own packed copies and drops these."""
    lin = nn.Linear(weight.size(1), weight.size(0), bias=bias is not None, device="meta")  # no init, no storage
    lin.weight = nn.Parameter(weight.detach(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return lin


def _layernorm_from(ln: nn.LayerNorm) -> nn.LayerNorm:
    new = nn.LayerNorm(ln.normalized_shape, eps=ln.eps)
    new.load_state_dict(ln.state_dict())
    return new


class CachedDecoderLayer(nn.Module):
    def __init__(self, layer: nn.TransformerDecoderLayer):
        super().__init__()
        if layer.norm_first:
            raise ValueError("only post-norm decoder layers (the seed's) are supported")
        sa, ca = layer.self_attn, layer.multihead_attn
        self.num_heads = sa.num_heads
        self.hidden = sa.embed_dim
        self.head_dim = self.hidden // self.num_heads
        h = self.hidden
        self.sa_qkv = _linear_from(sa.in_proj_weight, sa.in_proj_bias)
        self.sa_out = _linear_from(sa.out_proj.weight, sa.out_proj.bias)
        self.ca_q = _linear_from(ca.in_proj_weight[:h], ca.in_proj_bias[:h])
        self.ca_kv = _linear_from(ca.in_proj_weight[h:], ca.in_proj_bias[h:])
        self.ca_out = _linear_from(ca.out_proj.weight, ca.out_proj.bias)
        self.ff1 = _linear_from(layer.linear1.weight, layer.linear1.bias)
        self.ff2 = _linear_from(layer.linear2.weight, layer.linear2.bias)
        self.norm1 = _layernorm_from(layer.norm1)
        self.norm2 = _layernorm_from(layer.norm2)
        self.norm3 = _layernorm_from(layer.norm3)
        if layer.activation is not F.relu:
            raise ValueError("only the ReLU feed-forward (the seed's default) is supported")

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, S, H) encoder output -> K, V each (m, heads, S, head_dim); done once per request."""
        m, s, _ = memory.shape
        kv = self.ca_kv(memory).view(m, s, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(
        self,
        x: torch.Tensor,  # (n, 1, H): the newest frame of each active sequence
        k_cache: torch.Tensor,  # (slots, heads, Tmax, hd), this layer's self-attention cache
        v_cache: torch.Tensor,
        rows: torch.Tensor,  # (n,) = arange(n): active sequences occupy slots 0..n-1
        pos: torch.Tensor,  # (n,) position of the new frame in each sequence
        # Row groups (first row, end row, keys read, additive mask or None when all are visible): rows
        # r0..r1-1 read keys 0..t-1 (max of their positions + 1, or Tmax for static shapes).
        self_attn: list[tuple[int, int, int, torch.Tensor | None]],
        cross_k: torch.Tensor,  # (n, heads, S, hd)
        cross_v: torch.Tensor,
        cross_mask: torch.Tensor | None,  # (n, 1, 1, S) True at real text positions; None: no pads
    ) -> torch.Tensor:
        n = x.size(0)
        nh, hd, h = self.num_heads, self.head_dim, self.hidden
        q, k, v = self.sa_qkv(x).view(n, 3, nh, hd).unbind(1)  # each (n, nh, hd)
        # Write this step's K/V at each sequence's own position (sequences may be at different steps).
        k_cache[rows, :, pos] = k.to(k_cache.dtype)
        v_cache[rows, :, pos] = v.to(v_cache.dtype)
        q = q.unsqueeze(2)
        parts = [
            F.scaled_dot_product_attention(q[r0:r1], k_cache[r0:r1, :, :t], v_cache[r0:r1, :, :t], attn_mask=mask)
            for r0, r1, t, mask in self_attn
        ]
        a = parts[0] if len(parts) == 1 else torch.cat(parts)
        x = self.norm1(x + self.sa_out(a.reshape(n, 1, h)))
        q = self.ca_q(x).view(n, nh, 1, hd)
        a = F.scaled_dot_product_attention(q, cross_k, cross_v, attn_mask=cross_mask)
        x = self.norm2(x + self.ca_out(a.reshape(n, 1, h)))
        return self.norm3(x + self.ff2(F.relu(self.ff1(x))))


class CachedDecoder(nn.Module):
    """The decoder stack plus the mel embedding / projection and stop head, as cache-friendly modules."""

    def __init__(self, model: SimpleTTSModel):
        super().__init__()
        self.mel_dim = model.mel_dim
        self.mel_embedding = _linear_from(model.mel_embedding.weight, model.mel_embedding.bias)
        self.layers = nn.ModuleList(CachedDecoderLayer(layer) for layer in model.decoder.layers)
        if model.decoder.norm is not None:  # the seed's TransformerDecoder has none; support it anyway
            self.final_norm: nn.Module = _layernorm_from(model.decoder.norm)
        else:
            self.final_norm = nn.Identity()
        self.mel_projection = _linear_from(model.mel_projection.weight, model.mel_projection.bias)
        self.stop_token = _linear_from(model.stop_token.weight, model.stop_token.bias)
        first = self.layers[0]
        self.num_layers, self.num_heads, self.head_dim = len(self.layers), first.num_heads, first.head_dim

    def decode_weight_bytes(self) -> int:
        """Bytes of weights one decode step reads (everything but the once-per-request cross K/V proj)."""
        total = 0
        for name, mod in self.named_modules():
            if name.endswith("ca_kv"):
                continue
            total += _module_weight_bytes(mod)
        return total


def _module_weight_bytes(mod: nn.Module) -> int:
    """Own (non-recursive) weight bytes of a module, float or dynamically quantized int8."""
    if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear):  # int8 weight (packed), fp32 bias
        w, b = mod.weight(), mod.bias()
        n = w.numel() * w.element_size()
        if b is not None:
            n += b.numel() * b.element_size()
        # per-channel or per-tensor scales are negligible next to the weights
        return n
    return sum(p.numel() * p.element_size() for p in mod.parameters(recurse=False))
