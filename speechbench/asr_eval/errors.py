"""Where one model's errors fall (word class, length, training-text frequency, out-of-vocabulary words,
top substitutions/deletions/insertions, WER against duration) and the utterances hardest for every model.

Reads the same scored records as :mod:`speechbench.asr_eval.analysis` and returns plain dicts for the JSON.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import stats as sps

from speechbench.asr_eval.scoring import MATCH, align

FUNCTION_WORDS: frozenset[str] = frozenset("""
a an the this that these those some any each every no all both either neither such what which whose
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs myself
yourself himself herself itself ourselves themselves one ones who whom whoever whatever
in on at by for with about against between into through during before after above below to from up down
out off over under again further of near among upon within without along across around behind beyond
toward towards via per than as like since until till unto
and but or nor so yet because if while although though unless whether whereas
am is are was were be been being have has had having do does did doing will would shall should can could
may might must ought 's not n't
there here then when where why how now just also very too only even still quite rather
""".split())

LENGTH_BINS = ((1, 3, "1-3"), (4, 6, "4-6"), (7, 9, "7-9"), (10, 10**6, "10+"))
FREQ_BANDS = ((0, 0, "unseen"), (1, 9, "1-9"), (10, 99, "10-99"), (100, 10**12, "100+"))


def _band(value: int, bands: tuple[tuple[int, int, str], ...]) -> str:
    for lo, hi, name in bands:
        if lo <= value <= hi:
            return name
    return bands[-1][2]


def word_errors(recs: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """(reference word, recognized?) for every reference word of every record."""
    out = []
    for r in recs:
        a = align(r["ref"].split(), r["hyp"].split())
        for w, st in zip(a.ref, a.ref_word_status(), strict=True):
            out.append((w, st == MATCH))
    return out


def _rate_table(pairs: list[tuple[str, bool]], key) -> dict[str, dict[str, Any]]:
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for w, ok in pairs:
        k = key(w)
        acc[k][0] += 1
        acc[k][1] += 0 if ok else 1
    return {k: {"words": n, "errors": e, "error_rate": e / n if n else None} for k, (n, e) in acc.items()}


def error_analysis(recs: list[dict[str, Any]], vocab_counts: dict[str, int] | None, own_vocab: set[str] | None,
                   top: int = 10) -> dict[str, Any]:
    """Where one model's errors fall. Per reference word: substituted or deleted (insertions have no
    reference word and are listed separately).

    * function vs content words (closed-class list above);
    * word length in letters;
    * frequency band of the word in the reference text vocabulary (``vocab_counts``: the own models'
      training transcripts), "unseen" meaning it never occurs there;
    * out-of-vocabulary for the model itself (``own_vocab``: its training transcripts' words), own models only;
    * most frequent substitution pairs, deleted and inserted words;
    * Spearman correlation of utterance WER with duration.
    """
    pairs = word_errors(recs)
    subs: Counter[tuple[str, str]] = Counter()
    dels: Counter[str] = Counter()
    inss: Counter[str] = Counter()
    for r in recs:
        a = align(r["ref"].split(), r["hyp"].split())
        subs.update(a.substitution_pairs())
        for o, i, j in a.ops:
            if o == "D":
                dels[a.ref[i]] += 1  # type: ignore[index]
            elif o == "I":
                inss[a.hyp[j]] += 1  # type: ignore[index]
    out: dict[str, Any] = {
        "word_class": _rate_table(pairs, lambda w: "function" if w in FUNCTION_WORDS else "content"),
        "word_length": _rate_table(pairs, lambda w: _band(len(w.replace("'", "")), LENGTH_BINS)),
        "top_substitutions": [{"ref": a, "hyp": b, "count": c} for (a, b), c in subs.most_common(top)],
        "top_deletions": [{"word": w, "count": c} for w, c in dels.most_common(top)],
        "top_insertions": [{"word": w, "count": c} for w, c in inss.most_common(top)],
    }
    if vocab_counts is not None:
        out["frequency_band"] = _rate_table(pairs, lambda w: _band(vocab_counts.get(w, 0), FREQ_BANDS))
    if own_vocab is not None:
        out["oov"] = _rate_table(pairs, lambda w: "in vocabulary" if w in own_vocab else "out of vocabulary")
        n_oov = sum(1 for w, _ in pairs if w not in own_vocab)
        out["oov_rate"] = n_oov / len(pairs) if pairs else None
    durs = [r["duration_s"] for r in recs]
    wers = [r["wer"] for r in recs]
    if len(recs) >= 3 and np.std(durs) > 0 and np.std(wers) > 0:
        rho, p = sps.spearmanr(durs, wers)
        out["wer_vs_duration"] = {"spearman_rho": float(rho), "p_value": float(p), "n": len(recs)}
    else:
        out["wer_vs_duration"] = {"spearman_rho": None, "p_value": None, "n": len(recs),
                                  "note": "constant WER or duration"}
    return out


def hardest_utterances(by_model: dict[str, list[dict[str, Any]]], top: int = 10) -> list[dict[str, Any]]:
    """Utterances with the highest mean WER across models (each model's hypothesis shown)."""
    acc: dict[str, dict[str, Any]] = {}
    for model, recs in by_model.items():
        for r in recs:
            e = acc.setdefault(r["id"], {"id": r["id"], "dialect": r["dialect"], "ref": r["ref"],
                                         "duration_s": r["duration_s"], "wers": {}, "hyps": {}})
            e["wers"][model] = r["wer"]
            e["hyps"][model] = r["hyp"]
    rows = []
    for e in acc.values():
        e["mean_wer"] = float(np.mean(list(e["wers"].values())))
        rows.append(e)
    rows.sort(key=lambda e: (-e["mean_wer"], e["id"]))
    return rows[:top]


def vocabulary_from_texts(texts: Iterable[str]) -> dict[str, int]:
    from speechbench.asr_eval.normalize import normalize_text

    c: Counter[str] = Counter()
    for t in texts:
        c.update(normalize_text(t).split())
    return dict(c)
