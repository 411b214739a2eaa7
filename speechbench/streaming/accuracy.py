"""Streaming accuracy by what the streams replayed (real, synthetic, continuous speech), with 95% CIs.

Each stream of a level replays one kind of speech, and its transcript (the finals of its completed
utterances, in order) is scored against the same utterances' references, as the level's headline WER is
(``loadgen.score_tracks`` says why: when an endpointer merges two utterances across a short pause, or a
re-decoding model's step takes both at once under load, a stream's transcript stays right where
per-utterance scoring would count every moved word twice). A stream is the unit: per kind, WER = total
errors / total reference words over the streams of every sustained run of the model, and the 95% interval
is a percentile bootstrap over those streams. Each stream is scored three ways on the same words: its
finals, the text that had been committed (shown as stable) when each final came (re-decoding models), and
the same recognizer offline on the same utterances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from speechbench.streaming.loadgen import wer_counts


def _errors(d: dict[str, Any]) -> int:
    return d.get("substitutions", 0) + d.get("deletions", 0) + d.get("insertions", 0)


def stream_scores(streams: list[dict[str, Any]], refs: list[str], offline: dict[str, str]) -> list[list[Any]]:
    """One compact record per scored stream: [kind, words, errors, offline errors, committed errors or None,
    its utterance ids]."""
    out = []
    for s, ref in zip(streams, refs, strict=True):
        w = wer_counts([ref], [s["hyp"]])
        o = wer_counts([ref], [" ".join(offline.get(u, "") for u in s["utts"])])
        c = wer_counts([ref], [s["committed"]]) if s.get("committed") is not None else None
        out.append([s.get("kind", "all"), w["words"], _errors(w), _errors(o), None if c is None else _errors(c),
                    list(s["utts"])])
    return out


def bootstrap_ci(errors: np.ndarray, words: np.ndarray, draws: int = 1000, seed: int = 0
                 ) -> tuple[float, float] | None:
    """95% percentile interval of sum(errors) / sum(words), resampling the units with replacement."""
    if len(errors) < 2 or words.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(errors), size=(draws, len(errors)))
    ws = words[idx].sum(1)
    rates = np.where(ws > 0, errors[idx].sum(1) / np.maximum(ws, 1), np.nan)
    lo, hi = np.nanpercentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def by_source(levels: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stream kind, pooled over ``levels`` (their ``stream_scores``): WER of the finals, of the committed
    text at the endpoint, and offline, each with its CI; the streams, words and recordings behind them."""
    acc: dict[str, list[list[Any]]] = {}
    for lv in levels:
        for rec in lv.get("stream_scores") or []:
            acc.setdefault(rec[0], []).append(rec)
    out: dict[str, dict[str, Any]] = {}
    for kind, recs in acc.items():
        words = np.array([r[1] for r in recs], dtype=np.float64)
        if not words.sum():
            continue
        row: dict[str, Any] = {"streams": len(recs), "words": int(words.sum()),
                               "distinct_utterances": len({u for r in recs for u in r[5]})}
        for key, col in (("final", 2), ("offline", 3), ("committed", 4)):
            have = [r for r in recs if r[col] is not None]
            if not have:
                continue
            e = np.array([r[col] for r in have], dtype=np.float64)
            w = np.array([r[1] for r in have], dtype=np.float64)
            row[f"wer_{key}"] = float(e.sum() / max(1.0, w.sum()))
            # one recording replayed by every stream: nothing to resample but the same errors
            row[f"wer_{key}_ci95"] = bootstrap_ci(e, w) if row["distinct_utterances"] > 1 else None
        if "wer_final" in row and "wer_offline" in row:
            row["gap_points"] = 100 * (row["wer_final"] - row["wer_offline"])
        out[kind] = row
    return out
