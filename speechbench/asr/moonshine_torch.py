"""Moonshine tiny's decoder in PyTorch, its weights read from the bundled ``.ort`` file: greedy decoding of
many utterances at once, whatever their encoder lengths and forced prefixes.

Why not the ONNX decoder: the exported graph (HF Moonshine through optimum) was traced with an all-ones
attention mask, which tracing folded away, so its ``encoder_attention_mask`` input masks nothing (padded
encoder frames change the logits by ~10, measured), and it quantizes activations per tensor (uint8, one
scale for the whole batch), so a row's tokens depend on what it is batched with even at equal lengths (31
of 48 rows identical at batch 16, measured). Neither can serve many streams in one batched call. This
module is the same decoder (the graph's nodes name it: HF ``MoonshineDecoder``) written out with masks:

* weights: the graph's int8 weights dequantized once (exactly the values the ONNX model multiplies by),
  its layer norms, token embedding and rotary frequencies (``moonshine_weights.py`` reads them);
* activations in float32 (no per-batch quantization), so a row's result does not depend on its batch up to
  float summation order (tested: the same tokens batched as alone);
* a static self-attention cache per row with its own length (rows of different prefix lengths share one
  call: rotary positions and the causal mask are per row), and cross-attention K/V of each row's own
  encoder frames padded to the batch's longest with a key mask.

It is not the ONNX model's arithmetic: float32 activations instead of uint8 ones. Its accuracy is measured,
not assumed (Part 3 reports the streaming WER of this decoder next to its own offline WER; the ONNX decoder's
offline WER on the same clips is in the model's record).

Layer (pre-norm, as in the graph): x += SelfAttn(LN(x)) with partial interleaved rotary embedding (the
first ``rotary_dim`` of each head's dims); x += CrossAttn(LN(x), encoder); x += fc2(silu(gate) * up) with
``up, gate = fc1(LN(x)).chunk(2)``; final LN, then the output projection to the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechbench.asr.moonshine_onnx import BOS, EOS
from speechbench.asr.moonshine_weights import decoder_state


@dataclass
class CrossKV:
    """Per layer, each row's cross-attention keys and values over its own encoder frames, padded to the
    longest row; ``mask`` (B, 1, 1, F) is 0 on real frames and -inf on padding."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    mask: torch.Tensor

    def select(self, rows: torch.Tensor) -> CrossKV:
        return CrossKV([k[rows] for k in self.k], [v[rows] for v in self.v], self.mask[rows])

    def rows(self, start: int, stop: int) -> CrossKV:
        """A view of consecutive rows (no copy)."""
        return CrossKV([k[start:stop] for k in self.k], [v[start:stop] for v in self.v], self.mask[start:stop])


class MoonshineTorchDecoder(nn.Module):
    def __init__(self, state: dict[str, torch.Tensor], cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.nl, self.h, self.hd, self.rd = cfg["layers"], cfg["heads"], cfg["head_dim"], cfg["rotary_dim"]
        self.eps = cfg["eps"]
        self.state = state  # the float32 weights by HF name (kept for tests and inspection)
        self.scale = self.hd ** -0.5
        self.shortlist: torch.Tensor | None = None  # bfloat16 vocabulary projection (next_tokens), if faster
        self.logits_path = "float32"
        self.draft_stats = [0, 0]  # draft tokens offered, accepted (generate's speculative prefill)
        g = state.get
        # Per layer, in the order a step uses them; q, k and v of the self-attention fused into one matrix.
        self.layers = []
        for i in range(self.nl):
            p = f"layers.{i}"
            qkv = torch.cat([state[f"{p}.self_attn.{n}_proj.weight"] for n in ("q", "k", "v")])
            self.layers.append((state[f"{p}.input_layernorm.weight"], qkv, state[f"{p}.self_attn.o_proj.weight"],
                                state[f"{p}.post_attention_layernorm.weight"],
                                state[f"{p}.encoder_attn.q_proj.weight"], state[f"{p}.encoder_attn.o_proj.weight"],
                                state[f"{p}.final_layernorm.weight"], state[f"{p}.mlp.fc1.weight"],
                                g(f"{p}.mlp.fc1.bias"), state[f"{p}.mlp.fc2.weight"], g(f"{p}.mlp.fc2.bias")))
        # The interleaved rotation as a matrix on each head's dims: (x @ R)[2i] = -x[2i+1], (x @ R)[2i+1] = x[2i]
        # for the rotary dims, 0 for the rest; so rotating is x * cos + (x @ R) * sin with cos = 1, sin = 0 there.
        rot = torch.zeros(self.hd, self.hd)
        for i in range(0, self.rd, 2):
            rot[i + 1, i] = -1.0
            rot[i, i + 1] = 1.0
        self.rot = rot
        self.kv_w_f32 = [torch.cat([state[f"layers.{i}.encoder_attn.k_proj.weight"],
                                    state[f"layers.{i}.encoder_attn.v_proj.weight"]]) for i in range(self.nl)]
        self.kv_w = self.kv_w_f32  # in cross_dtype (choose_cross_dtype)
        self.cross_dtype = torch.float32
        self.cross_timings_ms: dict[str, float] = {}

    def w(self, name: str) -> torch.Tensor:
        return self.state[name]

    @classmethod
    def from_ort(cls, path: str | Path, heads: int) -> MoonshineTorchDecoder:
        state, cfg = decoder_state(path, heads)
        dec = cls(state, cfg).eval()
        dec.choose_logits_path()
        dec.choose_cross_dtype()
        return dec

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, hd)
        return x.view(x.shape[0], x.shape[1], self.h, self.hd).transpose(1, 2)

    @torch.no_grad()
    def cross_kv(self, hidden: list[torch.Tensor]) -> CrossKV:
        """Cross-attention K/V of each row's encoder output (rows of any lengths)."""
        b, fmax = len(hidden), max(h.shape[0] for h in hidden)
        lens = torch.tensor([h.shape[0] for h in hidden])
        mask = torch.full((b, 1, 1, fmax), float("-inf"))
        for i, n in enumerate(lens.tolist()):
            mask[i, ..., :n] = 0.0
        # Project the rows' frames back to back (no padding: rows of 1 s and 20 s are common in one step), and
        # write each row into its block of a contiguous (B, H, F, hd) tensor (attention over a transposed view
        # ran ~6x slower, measured); only the padding is zeroed (it is masked, but must be finite).
        x = torch.cat(hidden)
        rows = torch.repeat_interleave(torch.arange(b), lens)
        cols = torch.cat([torch.arange(n) for n in lens.tolist()])
        ks, vs = [], []
        xb = x.to(self.cross_dtype)
        for i in range(self.nl):
            kv = F.linear(xb, self.kv_w[i]).float().view(-1, 2, self.h, self.hd)  # K and V projections fused
            for j, out in ((0, ks), (1, vs)):
                y = x.new_empty(b, self.h, fmax, self.hd)
                for r, n in enumerate(lens.tolist()):
                    if n < fmax:
                        y[r, :, n:] = 0.0
                y.permute(0, 2, 1, 3)[rows, cols] = kv[:, j]
                out.append(y)
        return CrossKV(ks, vs, mask)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, cache_k: list[torch.Tensor],
                cache_v: list[torch.Tensor], self_mask: torch.Tensor, cross: CrossKV) -> torch.Tensor:
        """``tokens``/``pos`` (B, T): new tokens and their positions; their K/V are written into the caches
        (L x (B, H, Tmax, hd)) at ``pos``; ``self_mask`` (B, 1, T, S) over the first S cache positions.
        Returns the final hidden states (B, T, D)."""
        b, t = tokens.shape
        d = self.cfg["dim"]
        x = F.embedding(tokens, self.state["embed_tokens.weight"])
        freqs = pos.to(torch.float32)[..., None] * self.state["inv_freq"]  # (B, T, rd/2)
        pad = self.hd - self.rd
        cos = torch.cat([freqs.cos().repeat_interleave(2, dim=-1), freqs.new_ones(b, t, pad)], -1)[:, None]
        sin = torch.cat([freqs.sin().repeat_interleave(2, dim=-1), freqs.new_zeros(b, t, pad)], -1)[:, None]
        s = self_mask.shape[-1]
        rows = torch.arange(b)[:, None]
        eps = self.eps
        # float32 throughout: bfloat16 layer weights were no faster in a whole step on an AVX512-BF16 core
        # (12.6 vs 13.0 ms at 16 rows, measured), though a bare bfloat16 product is 2-3x faster
        for i, (ln1, qkv_w, o_w, ln2, cq_w, co_w, ln3, fc1_w, fc1_b, fc2_w, fc2_b) in enumerate(self.layers):
            y = F.layer_norm(x, (d,), ln1, None, eps)
            qkv = F.linear(y, qkv_w).view(b, t, 3 * self.h, self.hd).transpose(1, 2)  # (B, 3H, T, hd)
            qk = qkv[:, : 2 * self.h]
            qk = qk * cos + torch.matmul(qk, self.rot) * sin
            q, k, v = qk[:, : self.h], qk[:, self.h:], qkv[:, 2 * self.h:]
            cache_k[i][rows, :, pos] = k.transpose(1, 2)
            cache_v[i][rows, :, pos] = v.transpose(1, 2)
            a = F.scaled_dot_product_attention(q, cache_k[i][:, :, :s], cache_v[i][:, :, :s], attn_mask=self_mask,
                                               scale=self.scale)
            x = x + F.linear(a.transpose(1, 2).reshape(b, t, d), o_w)
            y = F.layer_norm(x, (d,), ln2, None, eps)
            q = F.linear(y, cq_w).view(b, t, self.h, self.hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, cross.k[i], cross.v[i], attn_mask=cross.mask, scale=self.scale)
            x = x + F.linear(a.transpose(1, 2).reshape(b, t, d), co_w)
            y = F.layer_norm(x, (d,), ln3, None, eps)
            up, gate = F.linear(y, fc1_w, fc1_b).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, fc2_w, fc2_b)
        return F.layer_norm(x, (d,), self.state["norm.weight"], None, eps)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.w("proj_out.weight"))

    def next_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """argmax of the float32 logits of each row of ``h`` (B, D). The vocabulary projection is the largest
        matrix of the step (32768 x 288: 38 MB in float32, read once per step whatever the batch). Where a
        bfloat16 copy multiplies faster (``shortlist``, decided by timing at load), the bfloat16 logits pick
        each row's ``SHORTLIST`` best candidates and float32 decides among them: the same token as the full
        float32 argmax unless it is outside the bfloat16 top 16 (tested: identical tokens on the real clips)."""
        if self.shortlist is None:
            return self.logits(h).argmax(-1)
        cand = F.linear(h.to(torch.bfloat16), self.shortlist).topk(self.SHORTLIST, dim=-1).indices  # (B, k)
        w = self.w("proj_out.weight")[cand]  # (B, k, D)
        exact = torch.einsum("bkd,bd->bk", w, h)
        return cand.gather(1, exact.argmax(-1, keepdim=True)).squeeze(1)

    SHORTLIST = 16

    def choose_cross_dtype(self, frames: int = 2000, repeats: int = 5) -> str:
        """The cross-attention K/V projections of every encoder frame of a step are one large matrix product
        (thousands of rows): in bfloat16 it ran 2x faster on an AVX512-BF16 core (measured), far slower
        without native support. Time both here; keep bfloat16 only when it is faster by 30%. Either way the
        K and V are float32 tensors (bfloat16 rounds the frames and weights going in; each row's K/V still
        depend on that row alone)."""
        import time

        x = torch.randn(frames, self.cfg["dim"])
        full = self.kv_w
        timings = {}
        for dtype in (torch.float32, torch.bfloat16):
            w = full[0].to(dtype)
            F.linear(x.to(dtype), w)
            t0 = time.perf_counter()
            for _ in range(repeats):
                F.linear(x.to(dtype), w).float()
            timings[str(dtype).removeprefix("torch.")] = 1e3 * (time.perf_counter() - t0) / repeats
        self.cross_dtype = torch.bfloat16 if timings["bfloat16"] < 0.7 * timings["float32"] else torch.float32
        self.kv_w = [w.to(self.cross_dtype) for w in self.kv_w_f32]
        self.cross_timings_ms = timings
        return str(self.cross_dtype).removeprefix("torch.")

    def choose_logits_path(self, rows: int = 16, repeats: int = 20) -> str:
        """Time the float32 projection against the bfloat16 shortlist on this CPU; keep the faster."""
        import time

        self.shortlist = None
        h = torch.randn(rows, self.cfg["dim"])
        timings = {}
        for kind in ("float32", "bfloat16"):
            if kind == "bfloat16":
                self.shortlist = self.w("proj_out.weight").to(torch.bfloat16)
            self.next_tokens(h)
            t0 = time.perf_counter()
            for _ in range(repeats):
                self.next_tokens(h)
            timings[kind] = time.perf_counter() - t0
        if timings["bfloat16"] >= 0.8 * timings["float32"]:
            self.shortlist = None
        self.logits_path = "bfloat16 shortlist" if self.shortlist is not None else "float32"
        self.logits_timings_ms = {k: 1e3 * v / repeats for k, v in timings.items()}
        return self.logits_path

    @torch.no_grad()
    def generate(self, hidden: list[torch.Tensor], prefixes: list[list[int]], max_new: list[int],
                 drafts: list[list[int]] | None = None, extra: list[int | None] | None = None) -> list[list[int]]:
        """Greedy continuation of each row (encoder output ``hidden[i]``, (frames, dim), any lengths) after
        ``[BOS] + prefix`` (forced), until its end token or ``max_new`` new tokens: one batched prefill of
        the rows' prompts, then one batched call per new token.

        ``drafts``: a guess of each row's continuation (a streaming model's last tentative tokens), checked in
        the prefill: the prompt is ``[BOS] + prefix + draft`` and the logits at the draft's positions say how
        many of its tokens greedy decoding would have produced itself; those are kept and decoding goes on
        from the first disagreement. The result is greedy decoding's (speculative decoding with the previous
        hypothesis as the draft model), in one call for the agreed tokens instead of one call each.
        ``extra[i]``: row ``i`` stops after at most this many tokens beyond the draft tokens it kept (a
        streaming partial needs the words of its new audio, not a decoding loop's)."""
        b = len(prefixes)
        drafts = [list(d)[: max(0, m - 1)] for d, m in zip(drafts, max_new, strict=True)] if drafts else [[]] * b
        extra = list(extra) if extra is not None else [None] * b
        prompts = [[BOS] + list(p) + d for p, d in zip(prefixes, drafts, strict=True)]
        groups = _length_groups([len(p) for p in prompts])
        order = [i for g in groups for i in g]  # rows sorted by prompt length, in prefill groups
        cross = self.cross_kv([hidden[i] for i in order])
        tmax = max(len(p) for p in prompts) + max(max_new) + 1
        ck = [torch.zeros(b, self.h, tmax, self.hd) for _ in range(self.nl)]
        cv = [torch.zeros(b, self.h, tmax, self.hd) for _ in range(self.nl)]
        out: list[list[int]] = [[] for _ in range(b)]
        nxt = torch.empty(b, dtype=torch.long)
        length = torch.empty(b, dtype=torch.long)  # tokens in each row's cache that the next call may read
        caps = [0] * b
        k = 0
        for g in groups:
            rows = [order[k + j] for j in range(len(g))]
            preds = self._prefill([prompts[i] for i in rows], [len(prefixes[i]) for i in rows], ck, cv,
                                  cross, k, k + len(g))
            for j, (i, p) in enumerate(zip(rows, preds, strict=True)):
                d = drafts[i]
                m = 0
                while m < len(d) and p[m] == d[m]:
                    m += 1
                out[k + j] = d[:m]
                nxt[k + j] = p[m]  # greedy's token after the agreed draft (EOS included)
                length[k + j] = 1 + len(prefixes[i]) + m
                caps[k + j] = max_new[i] if extra[i] is None else min(max_new[i], m + extra[i])
            k += len(g)
        self.draft_stats[0] += sum(len(d) for d in drafts)
        self.draft_stats[1] += sum(len(o) for o in out)
        self._decode(out, nxt, length, caps, ck, cv, cross)
        result: list[list[int]] = [[] for _ in range(b)]
        for k, i in enumerate(order):
            result[i] = out[k]
        return result

    def _prefill(self, prompts: list[list[int]], forced: list[int], ck: list[torch.Tensor], cv: list[torch.Tensor],
                 cross: CrossKV, start: int, stop: int) -> list[list[int]]:
        """One call over the prompts of cache rows ``start:stop`` (right-padded, causal, masked); per row the
        greedy token after its forced part and after each later (draft) token."""
        n = len(prompts)
        plen = torch.tensor([len(p) for p in prompts])
        t0 = int(plen.max())
        tokens = torch.zeros(n, t0, dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = torch.tensor(p)
        pos = torch.arange(t0).expand(n, t0).clone()
        # causal over each row's own prompt; padded query positions see position 0 only (output unused)
        j = torch.arange(t0)
        allowed = (j[None, None, :] <= j[None, :, None]) & (j[None, None, :] < plen[:, None, None])
        mask = torch.where(allowed, 0.0, float("-inf"))[:, None]
        h = self.forward(tokens, pos, [c[start:stop] for c in ck], [c[start:stop] for c in cv], mask,
                         cross.rows(start, stop))  # the cache slices are views: the prefill fills those rows
        counts = [len(p) - f for p, f in zip(prompts, forced, strict=True)]  # = 1 + draft length
        sel_r = torch.repeat_interleave(torch.arange(n), torch.tensor(counts))
        sel_c = torch.cat([torch.arange(f, f + c) for f, c in zip(forced, counts, strict=True)])
        flat = self.next_tokens(h[sel_r, sel_c]).tolist()
        preds, k = [], 0
        for c in counts:
            preds.append(flat[k: k + c])
            k += c
        return preds

    def _decode(self, out: list[list[int]], nxt: torch.Tensor, length: torch.Tensor, caps: list[int],
                ck: list[torch.Tensor], cv: list[torch.Tensor], cross: CrossKV) -> None:
        """Append ``nxt`` and go on greedily, one batched call per token, until each row's end token or cap."""
        alive = torch.arange(len(out))
        done = torch.zeros(len(out), dtype=torch.bool)  # rows still in the batch that have finished
        while True:
            keep = []
            for r, row in enumerate(alive.tolist()):
                tok = int(nxt[r])
                if done[r] or tok == EOS or len(out[row]) >= caps[row]:
                    continue
                out[row].append(tok)
                if len(out[row]) < caps[row]:
                    keep.append(r)
            if not keep:
                return
            # Finished rows leave the batch only once a quarter of it has finished: dropping a row copies every
            # cache, so dropping each row as it ends cost more than decoding the finished rows on (measured).
            if len(keep) <= 0.75 * len(alive):
                kt = torch.tensor(keep)
                alive, nxt, length = alive[kt], nxt[kt], length[kt]
                ck = [c[kt] for c in ck]
                cv = [c[kt] for c in cv]
                cross = cross.select(kt)
                done = torch.zeros(len(keep), dtype=torch.bool)
            else:
                done = torch.ones(len(alive), dtype=torch.bool)
                done[keep] = False
            s = int(length.max()) + 1
            step_mask = torch.where(torch.arange(s)[None, :] <= length[:, None], 0.0, float("-inf"))[:, None, None]
            h = self.forward(nxt[:, None], length[:, None], ck, cv, step_mask, cross)
            nxt = self.next_tokens(h[:, 0])
            length = length + 1


def _length_groups(lengths: list[int]) -> list[list[int]]:
    """Row indices by length, in groups whose longest is at most 1.25x + 4 the shortest: each group is one
    prefill call, padded to its longest (one call for prompts of 2 and 60 tokens spent most of it on padding)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and lengths[i] <= 1.25 * lengths[groups[-1][0]] + 4:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
