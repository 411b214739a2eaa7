"""Streaming accuracy by what the streams replayed (real, synthetic, continuous speech), with 95% CIs.

A level's headline WER is computed on each stream's transcript (``loadgen.score_tracks`` says why). Per
source, this module scores each completed utterance on its own (the finals its characters fall in), so that
utterances can be resampled: the 95% interval is a cluster bootstrap over the distinct pool utterances (all
replays of one recording move together, since streams replay the same pool), pooled over the levels given.
Each utterance is scored three ways on the same words: its streaming final, the text that had been
committed (shown as stable) when its final came (re-decoding models), and the same recognizer offline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from speechbench.streaming.loadgen import wer_counts


def _errors(d: dict[str, Any]) -> int:
    return d.get("substitutions", 0) + d.get("deletions", 0) + d.get("insertions", 0)


def utterance_scores(rows: list[dict[str, Any]], refs: dict[str, str], offline: dict[str, str]
                     ) -> list[list[Any]]:
    """One compact record per scored utterance: [utt, kind, words, errors, offline errors, committed errors
    or None]."""
    out = []
    for r in rows:
        ref = refs[r["utt"]]
        w = wer_counts([ref], [r.get("hyp", "")])
        o = wer_counts([ref], [offline.get(r["utt"], "")])
        c = wer_counts([ref], [r["committed"]]) if r.get("committed") is not None else None
        out.append([r["utt"], r.get("kind", "all"), w["words"], _errors(w), _errors(o),
                    None if c is None else _errors(c)])
    return out


def cluster_ci(units: dict[str, tuple[int, int]], draws: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """95% percentile interval of sum(errors) / sum(words) resampling the units (utterance ids) with
    replacement; ``units`` maps an id to its (errors, words) summed over its replays."""
    if len(units) < 2:
        return None
    e = np.array([v[0] for v in units.values()], dtype=np.float64)
    w = np.array([v[1] for v in units.values()], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), size=(draws, len(e)))
    ws = w[idx].sum(1)
    rates = np.where(ws > 0, e[idx].sum(1) / np.maximum(ws, 1), np.nan)
    lo, hi = np.nanpercentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def by_source(levels: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stream kind, pooled over ``levels`` (their ``utt_scores``): WER of the finals, of the committed
    text at the endpoint, and offline, each with its CI; words and utterances behind them."""
    acc: dict[str, dict[str, list[Any]]] = {}
    for lv in levels:
        for utt, kind, words, err, off, com in lv.get("utt_scores") or []:
            d = acc.setdefault(kind, {"final": {}, "offline": {}, "committed": {}, "n": [0, 0]})
            d["n"][0] += 1
            d["n"][1] += words
            for key, val in (("final", err), ("offline", off), ("committed", com)):
                if val is None:
                    continue
                e0, w0 = d[key].get(utt, (0, 0))
                d[key][utt] = (e0 + val, w0 + words)
    out: dict[str, dict[str, Any]] = {}
    for kind, d in acc.items():
        row: dict[str, Any] = {"utterances": d["n"][0], "words": d["n"][1], "distinct_utterances": len(d["final"])}
        for key in ("final", "offline", "committed"):
            units = d[key]
            words = sum(w for _, w in units.values())
            if not words:
                continue
            row[f"wer_{key}"] = sum(e for e, _ in units.values()) / words
            row[f"wer_{key}_ci95"] = cluster_ci(units)
        if "wer_final" in row and "wer_offline" in row:
            row["gap_points"] = 100 * (row["wer_final"] - row["wer_offline"])
        out[kind] = row
    return out
