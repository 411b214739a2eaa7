"""CTC decoding: greedy (batched and streaming) and a prefix beam search with a character n-gram LM.

Greedy: take the best symbol per frame, collapse repeats, drop blanks. A repeat is only collapsed when
the two frames are adjacent ("a a" -> "a", "a _ a" -> "aa"), so the streaming decoder carries the last
*frame's* symbol (blank included) across chunks, not the last emitted character.

Beam search: torchaudio's ``ctc_decoder`` needs flashlight-text and pyctcdecode/kenlm are not installed
(checked for this project, and no dependency is added), so this is a plain prefix beam search (Hannun et
al., 2014) in Python, with an interpolated Witten-Bell character n-gram LM trained on the training
transcripts. Cheap enough for CPU evaluation: frames where blank is near-certain are skipped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from speechbench.asr.ctc.tokenizer import BLANK, CHARS

NEG_INF = float("-inf")


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None, blank: int = BLANK
                  ) -> list[list[int]]:
    """(B, T, V) scores + valid lengths -> one id list per utterance (repeats collapsed, blanks dropped)."""
    if log_probs.dim() == 2:
        log_probs = log_probs.unsqueeze(0)
    b, t, _ = log_probs.shape
    if t == 0:
        return [[] for _ in range(b)]
    ids = log_probs.argmax(-1)
    prev = torch.cat([torch.full((b, 1), -1, dtype=ids.dtype, device=ids.device), ids[:, :-1]], dim=1)
    keep = (ids != blank) & (ids != prev)
    if lengths is not None:
        keep &= torch.arange(t, device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
    ids, keep = ids.cpu(), keep.cpu()
    return [ids[i][keep[i]].tolist() for i in range(b)]


def greedy_chunk(log_probs: torch.Tensor, prev: torch.Tensor, blank: int = BLANK
                 ) -> tuple[list[list[int]], torch.Tensor]:
    """One chunk of B streams: (B, t, V) scores + each stream's last frame symbol (B,) -> (new ids per
    stream, updated last frame symbols). Start ``prev`` at ``blank`` for a new stream."""
    b, t, _ = log_probs.shape
    if t == 0:
        return [[] for _ in range(b)], prev
    ids = log_probs.argmax(-1)
    before = torch.cat([prev.to(ids.device, ids.dtype)[:, None], ids[:, :-1]], dim=1)
    keep = ((ids != blank) & (ids != before)).cpu()
    ids_cpu = ids.cpu()
    return [ids_cpu[i][keep[i]].tolist() for i in range(b)], ids[:, -1].clone()


class StreamingGreedyDecoder:
    """Greedy decoding of B streams fed chunk by chunk; ``ids[i]`` holds stream i's emitted ids so far."""

    def __init__(self, batch_size: int = 1, blank: int = BLANK) -> None:
        self.blank = blank
        self.prev = torch.full((batch_size,), blank, dtype=torch.long)
        self.ids: list[list[int]] = [[] for _ in range(batch_size)]

    def step(self, log_probs: torch.Tensor) -> list[list[int]]:
        """Feed (B, t, V) scores; returns the ids newly emitted per stream (also appended to ``ids``)."""
        new, self.prev = greedy_chunk(log_probs, self.prev, self.blank)
        for acc, n in zip(self.ids, new, strict=True):
            acc.extend(n)
        return new

    def reset(self, index: int) -> None:
        """Start stream ``index`` over (a new utterance in that slot)."""
        self.prev[index] = self.blank
        self.ids[index] = []


# --- character n-gram LM -----------------------------------------------------------------------------------

BOS, EOS = "<", ">"


class CharNgramLM:
    """Interpolated Witten-Bell character n-gram model over normalized text; natural-log probabilities.

    P(c | h) = (C(h c) + N1+(h .) * P(c | h')) / (C(h) + N1+(h .)), down to a uniform distribution.
    """

    def __init__(self, order: int = 6, chars: str = CHARS) -> None:
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order = order
        self.vocab = list(chars) + [EOS]
        self.counts: dict[str, dict[str, int]] = defaultdict(dict)
        self._cache: dict[tuple[str, str], float] = {}

    def fit(self, texts: Iterable[str]) -> CharNgramLM:
        for text in texts:
            s = BOS * (self.order - 1) + text + EOS
            for i in range(self.order - 1, len(s)):
                for k in range(self.order):  # contexts of length 0 .. order-1
                    ctx = s[i - k: i]
                    d = self.counts[ctx]
                    d[s[i]] = d.get(s[i], 0) + 1
        self._totals = {h: (sum(d.values()), len(d)) for h, d in self.counts.items()}
        self._cache.clear()
        return self

    def _prob(self, history: str, c: str) -> float:
        if history == "" and "" not in self.counts:
            return 1.0 / len(self.vocab)
        lower = 1.0 / len(self.vocab) if history == "" else self._prob(history[1:], c)
        if history not in self.counts:
            return lower
        total, types = self._totals[history]
        return (self.counts[history].get(c, 0) + types * lower) / (total + types)

    def log_prob(self, history: str, c: str) -> float:
        """ln P(c | last order-1 characters of history); history is the text so far (no BOS needed)."""
        h = (BOS * (self.order - 1) + history)[-(self.order - 1):] if self.order > 1 else ""
        key = (h, c)
        lp = self._cache.get(key)
        if lp is None:
            lp = math.log(self._prob(h, c))
            if len(self._cache) < 2_000_000:
                self._cache[key] = lp
        return lp

    def score(self, text: str) -> float:
        return sum(self.log_prob(text[:i], c) for i, c in enumerate(text + EOS))


# --- prefix beam search ------------------------------------------------------------------------------------


def _logadd(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@dataclass(frozen=True)
class BeamConfig:
    beam_size: int = 8
    lm_weight: float = 0.5  # alpha: weight of ln P_lm per character
    char_bonus: float = 0.5  # beta: per emitted character, offsets the LM's pull towards short outputs
    top_k: int = 6  # symbols tried per frame (after blank)
    blank_skip: float = 0.999  # frames whose blank probability exceeds this only extend with blank


def prefix_beam_search(log_probs: torch.Tensor, lm: CharNgramLM | None = None, cfg: BeamConfig = BeamConfig(),
                       chars: str = CHARS, blank: int = BLANK) -> str:
    """One utterance's (T, V) log-probs -> best text. Without ``lm`` it is a plain CTC beam search."""
    lp = log_probs.detach().float().cpu()
    alpha = cfg.lm_weight if lm is not None else 0.0
    beta = cfg.char_bonus if lm is not None else 0.0
    skip = math.log(cfg.blank_skip)
    # prefix (str) -> (log P ending in blank, log P ending in non-blank)
    beams: dict[str, tuple[float, float]] = {"": (0.0, NEG_INF)}
    for frame in lp:
        lb = float(frame[blank])
        if lb > skip:
            beams = {p: (_logadd(pb, pnb) + lb, NEG_INF) for p, (pb, pnb) in beams.items()}
            continue
        k = min(cfg.top_k + 1, frame.numel())
        top = [int(i) for i in torch.topk(frame, k).indices if int(i) != blank][: cfg.top_k]
        new: dict[str, list[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
        for prefix, (pb, pnb) in beams.items():
            total = _logadd(pb, pnb)
            cell = new[prefix]
            cell[0] = _logadd(cell[0], total + lb)
            last = prefix[-1] if prefix else None
            for i in top:
                c = chars[i - 1]
                lpc = float(frame[i])
                ext = prefix + c
                lm_score = alpha * lm.log_prob(prefix, c) + beta if lm is not None else 0.0
                if c == last:
                    cell[1] = _logadd(cell[1], pnb + lpc)  # the same character continuing
                    new[ext][1] = _logadd(new[ext][1], pb + lpc + lm_score)  # a new one after a blank
                else:
                    new[ext][1] = _logadd(new[ext][1], total + lpc + lm_score)
        ranked = sorted(new.items(), key=lambda kv: _logadd(*kv[1]), reverse=True)[: cfg.beam_size]
        beams = {p: (v[0], v[1]) for p, v in ranked}

    def final(item: tuple[str, tuple[float, float]]) -> float:
        prefix, (pb, pnb) = item
        return _logadd(pb, pnb) + (alpha * lm.log_prob(prefix, EOS) if lm is not None else 0.0)

    best = max(beams.items(), key=final)[0]
    return " ".join(best.split())
