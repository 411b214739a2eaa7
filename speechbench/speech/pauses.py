"""Where to cut continuous speech: the quietest short window in a span (the best pause).

A re-decoding recognizer's cost per update grows with the utterance it re-decodes, so long continuous speech
is cut into pieces of bounded length. Cutting mid-word loses or doubles that word; cutting in the quietest
``window`` (100 ms by default, about one short pause) of the last part of the allowed span keeps words whole
whenever the speaker paused at all there. Energy, not a VAD: it needs no state and costs one pass over the
span, and the quietest point is what matters, not a speech/non-speech decision.
"""

from __future__ import annotations

import numpy as np

SR = 16000


def best_pause(audio: np.ndarray, lo: int, hi: int, window: int = SR // 10) -> int:
    """The sample in ``[lo, hi]`` at the centre of the quietest ``window`` of ``audio`` (hop window/4).
    Returns ``hi`` when the span is shorter than a window."""
    lo, hi = max(0, lo), min(len(audio), hi)
    if hi - lo < window:
        return hi
    hop = max(1, window // 4)
    seg = audio[lo:hi].astype(np.float64)
    csum = np.concatenate([[0.0], np.cumsum(seg * seg)])
    starts = np.arange(0, len(seg) - window + 1, hop)
    energy = csum[starts + window] - csum[starts]
    # the latest of equally quiet windows: keeps the piece as long as allowed (digital silence ties)
    k = len(energy) - 1 - int(np.argmin(energy[::-1]))
    return lo + int(starts[k]) + window // 2


def split_at_pauses(audio: np.ndarray, max_len: int, search: int | None = None) -> list[np.ndarray]:
    """``audio`` in pieces of at most ``max_len`` samples, each cut at the best pause within the last
    ``search`` samples of its allowed span (default: a third of ``max_len``). Short audio: one piece."""
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    search = max_len // 3 if search is None else min(search, max_len)
    pieces = []
    start = 0
    while len(audio) - start > max_len:
        cut = best_pause(audio, start + max_len - search, start + max_len)
        if cut <= start:
            cut = start + max_len
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces


def compress_pauses(audio: np.ndarray, max_pause_s: float, sr: int = SR, floor_dbfs: float = -45.0,
                    rel_db: float = 35.0) -> np.ndarray:
    """``audio`` with every pause longer than ``max_pause_s`` shortened to it (10 ms frames quieter than
    max(floor, loudest frame - rel_db) count as pause), leading and trailing silence removed: continuous
    speech from a recording with natural pauses, for testing what an endpointer never cuts."""
    hop = sr // 100
    n = len(audio) // hop
    if n == 0:
        return audio.copy()
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = db > max(floor_dbfs, db.max() - rel_db)
    if not loud.any():
        return audio[:0].copy()
    first, last = int(np.argmax(loud)), n - 1 - int(np.argmax(loud[::-1]))
    keep = int(round(max_pause_s * 100))
    out = []
    quiet = 0
    for i in range(first, last + 1):
        quiet = 0 if loud[i] else quiet + 1
        if quiet <= keep:
            out.append(frames[i])
    return np.concatenate(out).astype(audio.dtype)
