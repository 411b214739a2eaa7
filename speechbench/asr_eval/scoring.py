"""Word alignment with substitutions, deletions and insertions; WER and CER.

The aligner is a plain Levenshtein dynamic programme with unit costs (as sclite and jiwer use), so the
error count of an utterance is the edit distance and corpus WER = total errors / total reference words
equals jiwer's on the same strings. Among alignments of equal cost, the backtrace prefers a match, then a
substitution, then a deletion, then an insertion (deterministic, and it pairs words up as substitutions
rather than splitting them into a deletion plus an insertion, which is what a reader expects).

CER is the character edit distance over the normalized strings, spaces included (jiwer's convention),
divided by the number of reference characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import Levenshtein

from speechbench.asr_eval.normalize import normalize_text

MATCH, SUB, DEL, INS = "C", "S", "D", "I"


@dataclass
class Alignment:
    """ops: (op, ref index or None, hyp index or None), in order along the reference."""

    ref: list[str]
    hyp: list[str]
    ops: list[tuple[str, int | None, int | None]] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return sum(1 for o, _, _ in self.ops if o == MATCH)

    @property
    def subs(self) -> int:
        return sum(1 for o, _, _ in self.ops if o == SUB)

    @property
    def dels(self) -> int:
        return sum(1 for o, _, _ in self.ops if o == DEL)

    @property
    def ins(self) -> int:
        return sum(1 for o, _, _ in self.ops if o == INS)

    @property
    def errors(self) -> int:
        return self.subs + self.dels + self.ins

    def substitution_pairs(self) -> list[tuple[str, str]]:
        return [(self.ref[i], self.hyp[j]) for o, i, j in self.ops if o == SUB]  # type: ignore[index]

    def ref_word_status(self) -> list[str]:
        """Per reference word: "C" (recognized), "S" or "D"."""
        out = [""] * len(self.ref)
        for o, i, _ in self.ops:
            if i is not None:
                out[i] = o
        return out

    def insertions_by_gap(self) -> list[int]:
        """Insertions in each of the len(ref)+1 gaps: before word 0, between words, after the last."""
        gaps = [0] * (len(self.ref) + 1)
        pos = 0  # gap index = number of reference words consumed so far
        for o, i, _ in self.ops:
            if o == INS:
                gaps[pos] += 1
            elif i is not None:
                pos = i + 1
        return gaps

    def pretty(self) -> str:
        """Three aligned lines (REF / HYP / ops), sclite style: *** marks a gap."""
        r, h, e = [], [], []
        for o, i, j in self.ops:
            rw = self.ref[i] if i is not None else "***"
            hw = self.hyp[j] if j is not None else "***"
            w = max(len(rw), len(hw))
            if o != MATCH:
                rw, hw = rw.upper(), hw.upper()
            r.append(rw.ljust(w))
            h.append(hw.ljust(w))
            e.append((" " if o == MATCH else o).ljust(w))
        return "REF: " + " ".join(r) + "\nHYP: " + " ".join(h) + "\nOPS: " + " ".join(e)


def align(ref: list[str], hyp: list[str]) -> Alignment:
    """Minimum-edit-distance alignment of two word lists (unit costs)."""
    n, m = len(ref), len(hyp)
    # dist[i][j]: cost of aligning ref[:i] with hyp[:j]
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        dist[i][0] = i
    for j in range(1, m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        ri = ref[i - 1]
        row, prev = dist[i], dist[i - 1]
        for j in range(1, m + 1):
            sub = prev[j - 1] + (ri != hyp[j - 1])
            dele = prev[j] + 1
            ins = row[j - 1] + 1
            row[j] = sub if sub <= dele and sub <= ins else (dele if dele <= ins else ins)
    ops: list[tuple[str, int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and dist[i][j] == dist[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append((MATCH if ref[i - 1] == hyp[j - 1] else SUB, i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and dist[i][j] == dist[i - 1][j] + 1:
            ops.append((DEL, i - 1, None))
            i -= 1
        else:
            ops.append((INS, None, j - 1))
            j -= 1
    ops.reverse()
    return Alignment(list(ref), list(hyp), ops)


def char_errors(ref: str, hyp: str) -> int:
    """Character edit distance between two (normalized) strings, spaces included."""
    return Levenshtein.distance(ref, hyp)


@dataclass
class UtteranceScore:
    ref: str  # scored (normalized) strings
    hyp: str
    ref_words: int
    hits: int
    sub: int
    dele: int
    ins: int
    ref_chars: int
    char_errors: int

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    def to_json(self) -> dict:
        return {"ref": self.ref, "hyp": self.hyp, "ref_words": self.ref_words, "errors": self.errors,
                "hits": self.hits, "sub": self.sub, "del": self.dele, "ins": self.ins,
                "ref_chars": self.ref_chars, "char_errors": self.char_errors,
                "wer": self.errors / self.ref_words if self.ref_words else None,
                "correct": self.errors == 0}


def score_normalized(ref: str, hyp: str) -> UtteranceScore:
    a = align(ref.split(), hyp.split())
    return UtteranceScore(ref, hyp, len(a.ref), a.hits, a.subs, a.dels, a.ins, len(ref), char_errors(ref, hyp))


def score(ref_raw: str, hyp_raw: str) -> UtteranceScore:
    """Normalize both sides with the one normalizer, then align."""
    return score_normalized(normalize_text(ref_raw), normalize_text(hyp_raw))


def corpus_wer(errors: list[int] | tuple[int, ...], ref_words: list[int] | tuple[int, ...]) -> float:
    """Total errors / total reference words (not the mean of per-utterance WERs)."""
    total = sum(ref_words)
    return sum(errors) / total if total else float("nan")
