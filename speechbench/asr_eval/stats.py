"""Statistics for comparing recognizers on the same utterances.

Every function takes per-utterance numbers (error counts, reference word counts, sentence correctness)
and returns plain dicts, so the results JSON holds the inputs and the outputs and anyone can recompute.

* Bootstrap confidence intervals for a corpus WER (a ratio of sums): resample utterances with replacement
  (Bisani & Ney 2004), or whole blocks (speakers) when the same speaker contributes several utterances,
  since their errors are correlated and utterance resampling would make the interval too narrow. Percentile
  intervals, fixed seed, >= 1000 resamples.
* The two-way (pigeonhole) bootstrap for crossed designs, where every sentence is read by several speakers
  and every speaker reads several sentences (Owen 2007, "The pigeonhole bootstrap"; Brennan, Harris &
  Hays 1990 for generalizability designs): sentences and speakers are resampled independently, so the
  interval carries both the sentence and the speaker variance. Resampling either factor alone (or
  utterances) treats the other as fixed and gives too narrow an interval.
* Paired tests on per-utterance error counts d_i = errors_A,i - errors_B,i (pairing the utterances; the
  reference is the same, so summing d gives the corpus error difference): paired t, Wilcoxon signed-rank
  (zeros dropped, scipy's exact/normal choice), the sign test (exact binomial), NIST's MAPSSWE (matched
  pairs sentence-segment word error; Gillick & Cox 1989), and McNemar's exact test on sentence
  correctness. Holm's step-down correction over a family; effect sizes (Cohen's d_z, matched-pairs
  rank-biserial correlation, odds ratio of the discordant pairs); the paired-bootstrap probability that
  one system has the lower corpus WER (Bisani & Ney's "probability of improvement").
* Friedman's test for k related samples (dialects, blocked by sentence) with Kendall's W.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from speechbench.asr_eval.scoring import MATCH, Alignment

# --- bootstrap -------------------------------------------------------------------------------------------


def _block_sums(values: np.ndarray, groups: Sequence[Any] | None) -> np.ndarray:
    """(n, k) per-utterance values -> (blocks, k) per-block sums (identity when groups is None)."""
    if groups is None:
        return values
    keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    out = np.zeros((len(keys), values.shape[1]))
    np.add.at(out, np.array([keys[g] for g in groups]), values)
    return out


def bootstrap_sums(values: np.ndarray, n_boot: int, seed: int, groups: Sequence[Any] | None = None) -> np.ndarray:
    """Bootstrap replicates of column sums: (n, k) values -> (n_boot, k).

    Each replicate draws as many units (utterances, or blocks when ``groups`` is given) as there are, with
    replacement; drawing counts from a multinomial is the same as drawing indices, and cheaper.
    """
    units = _block_sums(np.asarray(values, dtype=np.float64).reshape(len(values), -1), groups)
    n = units.shape[0]
    if n == 0:
        return np.full((n_boot, units.shape[1]), np.nan)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    return counts @ units


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _percentile_ci(sums: np.ndarray, level: float) -> dict[str, Any]:
    """Percentile interval and bootstrap SE of the ratio column 0 / column 1 of replicate sums."""
    reps = _ratio(sums[:, 0], sums[:, 1])
    reps = reps[np.isfinite(reps)]  # a replicate that drew no reference words has no WER
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return {"lo": float(lo), "hi": float(hi), "se": float(reps.std(ddof=1))}


def bootstrap_ci(errors: Sequence[float], ref_words: Sequence[float], n_boot: int = 2000, seed: int = 0,
                 groups: Sequence[Any] | None = None, level: float = 0.95,
                 method: str | None = None) -> dict[str, Any]:
    """Percentile CI of sum(errors) / sum(ref_words); ``groups`` (e.g. speaker ids) = block bootstrap.
    ``method`` names the blocks in the result (default "speaker-block" with groups, else "utterance")."""
    e = np.asarray(errors, dtype=np.float64)
    r = np.asarray(ref_words, dtype=np.float64)
    point = float(e.sum() / r.sum()) if r.sum() > 0 else float("nan")
    n_units = len(set(groups)) if groups is not None else len(e)
    method = method or ("speaker-block" if groups is not None else "utterance")
    out: dict[str, Any] = {"lo": None, "hi": None, "point": point, "se": None, "n_units": n_units,
                           "method": method, "n_boot": n_boot}
    if len(e) == 0 or n_units < 2:
        return out
    sums = bootstrap_sums(np.stack([e, r], axis=1), n_boot, seed, groups)
    return {**out, **_percentile_ci(sums, level)}


TWO_WAY = "two-way (sentence x speaker)"


def _cell_sums(values: np.ndarray, rows: Sequence[Any], cols: Sequence[Any]) -> np.ndarray:
    """(n, k) per-utterance values -> (R, C, k) sums per (row, column) cell; empty cells hold zeros."""
    ri = {g: i for i, g in enumerate(dict.fromkeys(rows))}
    ci = {g: i for i, g in enumerate(dict.fromkeys(cols))}
    out = np.zeros((len(ri), len(ci), values.shape[1]))
    np.add.at(out, (np.array([ri[g] for g in rows]), np.array([ci[g] for g in cols])), values)
    return out


def bootstrap_sums_two_way(values: np.ndarray, rows: Sequence[Any], cols: Sequence[Any], n_boot: int,
                           seed: int) -> np.ndarray:
    """Pigeonhole bootstrap replicates of column sums: (n, k) values -> (n_boot, k).

    Each replicate draws R rows (sentences) and C columns (speakers) with replacement, independently, and
    takes every (row, column) cell of the drawn pairs, a cell counted (times row r was drawn) x (times column
    c was drawn). A cell nobody recorded adds nothing, so a sparse grid (each sentence read by some of the
    speakers, as in the embedded corpus) works too. As counts: sum_rc w_r * cell_rc * v_c.
    """
    cells = _cell_sums(np.asarray(values, dtype=np.float64).reshape(len(values), -1), rows, cols)
    n_r, n_c, k = cells.shape
    rng = np.random.default_rng(seed)
    w_r = rng.multinomial(n_r, np.full(n_r, 1.0 / n_r), size=n_boot)  # (n_boot, R)
    w_c = rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=n_boot)  # (n_boot, C)
    by_col = (w_r @ cells.reshape(n_r, n_c * k)).reshape(n_boot, n_c, k)  # rows weighted, per column
    return np.einsum("bck,bc->bk", by_col, w_c)


def bootstrap_ci_two_way(errors: Sequence[float], ref_words: Sequence[float], sentences: Sequence[Any],
                         speakers: Sequence[Any], n_boot: int = 2000, seed: int = 0,
                         level: float = 0.95) -> dict[str, Any]:
    """Percentile CI of sum(errors) / sum(ref_words) from the two-way bootstrap over sentences x speakers.

    Needs at least 2 sentences and 2 speakers (else lo / hi are None). The pigeonhole bootstrap is
    slightly conservative (it counts the cell-level noise in both factors; Owen 2007), which is the
    safe side for an interval quoted as a headline.
    """
    e = np.asarray(errors, dtype=np.float64)
    r = np.asarray(ref_words, dtype=np.float64)
    point = float(e.sum() / r.sum()) if r.sum() > 0 else float("nan")
    n_s, n_k = len(set(sentences)), len(set(speakers))
    out: dict[str, Any] = {"lo": None, "hi": None, "point": point, "se": None, "method": TWO_WAY,
                           "n_sentences": n_s, "n_speakers": n_k,
                           "n_cells": len(set(zip(sentences, speakers, strict=True))), "n_boot": n_boot}
    if len(e) == 0 or n_s < 2 or n_k < 2:
        return out
    sums = bootstrap_sums_two_way(np.stack([e, r], axis=1), sentences, speakers, n_boot, seed)
    return {**out, **_percentile_ci(sums, level)}


def paired_bootstrap(errors_a: Sequence[float], errors_b: Sequence[float], ref_words: Sequence[float],
                     n_boot: int = 2000, seed: int = 0, groups: Sequence[Any] | None = None,
                     level: float = 0.95, two_way: tuple[Sequence[Any], Sequence[Any]] | None = None
                     ) -> dict[str, Any]:
    """Resample the *same* units for both systems: P(WER_A < WER_B) and a CI of WER_A - WER_B.

    Units: utterances, blocks (``groups``), or, with ``two_way`` = (sentences, speakers), the two-way
    pigeonhole bootstrap of a crossed design, the same resampling as the headline interval (a
    difference resampled over one factor only would treat the other as fixed and come out too narrow).
    Ties (equal WER in a replicate) count half, so identical systems give 0.5.
    """
    vals = np.stack([np.asarray(errors_a, float), np.asarray(errors_b, float), np.asarray(ref_words, float)], 1)
    if two_way is not None:
        sums = bootstrap_sums_two_way(vals, two_way[0], two_way[1], n_boot, seed)
        method = TWO_WAY
    else:
        sums = bootstrap_sums(vals, n_boot, seed, groups)
        method = "speaker-block" if groups is not None else "utterance"
    wa, wb = _ratio(sums[:, 0], sums[:, 2]), _ratio(sums[:, 1], sums[:, 2])
    ok = np.isfinite(wa) & np.isfinite(wb)
    diff = (wa - wb)[ok]
    if diff.size == 0:
        return {"p_a_better": None, "p_b_better": None, "diff_ci95": [None, None], "n_boot": n_boot}
    p_a = float(np.mean(diff < 0) + 0.5 * np.mean(diff == 0))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diff, [alpha, 1 - alpha])
    return {"p_a_better": p_a, "p_b_better": 1.0 - p_a, "diff_ci95": [float(lo), float(hi)], "n_boot": n_boot,
            "method": method}


# --- what a design can detect --------------------------------------------------------------------------


def min_p_signed_rank(n: int) -> float:
    """The smallest two-sided p of a Wilcoxon signed-rank test on ``n`` pairs: every difference nonzero,
    untied and of the same sign. Exact (2 / 2^n) up to 50 pairs, as ``wilcoxon_method`` uses; beyond, the
    normal approximation's."""
    if n <= 0:
        return 1.0
    if n <= 50:
        return min(1.0, 2.0 / 2.0**n)
    mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return float(2 * sps.norm.sf(mean / sd))


def min_p_binomial(n: int) -> float:
    """The smallest two-sided p of an exact sign / McNemar test on ``n`` discordant pairs: 2 / 2^n."""
    return 1.0 if n <= 0 else min(1.0, 2.0 / 2.0**n)


def min_p_friedman(blocks: int, k: int) -> float:
    """The smallest p of Friedman's test: every block ranks the k treatments the same way (W = 1)."""
    if blocks < 2 or k < 3:
        return 1.0
    return float(sps.chi2.sf(blocks * (k - 1), k - 1))


def family_reach(family: str, test: str, unit: str, units: int, hypotheses: int, min_p: float,
                 alpha: float) -> dict[str, Any]:
    """Whether a Holm-corrected family of ``hypotheses`` tests can reject at all: Holm's first step
    multiplies the smallest p by the family size, so the best any test in it can do is m x min_p. A
    family that cannot reach alpha says nothing by finding nothing."""
    best = min(1.0, hypotheses * min_p)
    return {"family": family, "test": test, "unit": unit, "units": units, "hypotheses": hypotheses,
            "min_p": min_p, "min_p_holm": best, "can_reject": bool(hypotheses > 0 and best < alpha)}


# --- paired tests ----------------------------------------------------------------------------------------


def _result(test: str, statistic: float | None, p: float | None, n: int, **extra: Any) -> dict[str, Any]:
    stat = None if statistic is None or not math.isfinite(statistic) else float(statistic)
    pv = None if p is None or not math.isfinite(p) else float(min(1.0, max(0.0, p)))
    return {"test": test, "statistic": stat, "p_value": pv, "n": int(n), **extra}


def paired_t(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Paired t-test on x - y (two-sided). All differences equal to zero: no evidence, p = 1."""
    d = np.asarray(x, float) - np.asarray(y, float)
    n = d.size
    if n < 2:
        return _result("paired_t", None, None, n, note="fewer than 2 pairs")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return _result("paired_t", 0.0 if mean == 0 else math.copysign(math.inf, mean),
                       1.0 if mean == 0 else 0.0, n, mean_diff=mean, cohen_dz=0.0 if mean == 0 else None,
                       note="all differences identical")
    t = mean / (sd / math.sqrt(n))
    p = 2 * sps.t.sf(abs(t), n - 1)
    return _result("paired_t", t, p, n, df=n - 1, mean_diff=mean, cohen_dz=mean / sd)


def wilcoxon(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank on x - y, zero differences dropped (Wilcoxon's convention), two-sided.

    Exact for small untied samples, normal approximation with tie correction otherwise (``wilcoxon_method``).
    Effect size: the matched-pairs rank-biserial correlation r = (W+ - W-) / (W+ + W-), positive when x
    tends to be larger.
    """
    d = np.asarray(x, float) - np.asarray(y, float)
    nz = d[d != 0]
    if nz.size == 0:
        return _result("wilcoxon", 0.0, 1.0, 0, rank_biserial=0.0, note="all differences are zero")
    ranks = sps.rankdata(np.abs(nz))
    w_pos, w_neg = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    method = wilcoxon_method(nz)
    res = sps.wilcoxon(nz, alternative="two-sided", method=method)
    return _result("wilcoxon", float(res.statistic), float(res.pvalue), int(nz.size), w_plus=w_pos,
                   w_minus=w_neg, rank_biserial=(w_pos - w_neg) / (w_pos + w_neg), method=method)


def wilcoxon_method(nonzero_diffs: np.ndarray) -> str:
    """Exact null distribution for up to 50 untied differences, else the normal approximation with tie
    correction. (scipy's "auto" would run a random permutation test on small tied samples: slow and not
    repeatable. Error counts tie a lot, so the approximation is the usual case here.)"""
    a = np.abs(np.asarray(nonzero_diffs, float))
    return "exact" if a.size <= 50 and np.unique(a).size == a.size else "asymptotic"


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test against p = 1/2 (symmetric: twice the smaller tail)."""
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * sps.binom.cdf(min(k, n - k), n, 0.5)))


def sign_test(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """How often x > y among the pairs that differ, against 50/50 (exact binomial, two-sided)."""
    d = np.asarray(x, float) - np.asarray(y, float)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    return _result("sign", float(pos), binom_two_sided(pos, pos + neg), pos + neg, positive=pos, negative=neg)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test on sentence correctness: only the discordant pairs carry information.

    n01 = A right and B wrong, n10 = A wrong and B right; under H0 each discordant pair is a fair coin.
    Also reports the continuity-corrected chi-square and the discordant odds ratio n01 / n10.
    """
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    n = n01 + n10
    chi2 = (abs(n01 - n10) - 1) ** 2 / n if n else 0.0
    odds = (n01 / n10) if n10 else (math.inf if n01 else None)
    return _result("mcnemar", float(min(n01, n10)), binom_two_sided(n01, n), len(a), a_only_correct=n01,
                   b_only_correct=n10, both_correct=int((a & b).sum()), both_wrong=int((~a & ~b).sum()),
                   chi2_cc=chi2, p_chi2_cc=float(sps.chi2.sf(chi2, 1)) if n else 1.0,
                   odds_ratio=None if odds is None or not math.isfinite(odds) else odds)


def mapsswe_segments(a: Alignment, b: Alignment, min_good: int = 2) -> list[tuple[int, int]]:
    """Split one utterance into segments whose errors can be taken as independent (Gillick & Cox 1989).

    Both alignments are against the same reference. A segment boundary is a run of at least ``min_good``
    consecutive reference words that *both* systems recognized, with no insertion by either system
    inside the run; segments are what lies between boundaries (or the utterance ends). Returns
    (errors_A, errors_B) for every segment where at least one system made an error; each insertion counts
    in the segment holding its gap.
    """
    if a.ref != b.ref:
        raise ValueError("MAPSSWE needs both alignments against the same reference")
    n = len(a.ref)
    st_a, st_b = a.ref_word_status(), b.ref_word_status()
    ins_a, ins_b = a.insertions_by_gap(), b.insertions_by_gap()
    good = [st_a[j] == MATCH and st_b[j] == MATCH for j in range(n)]
    boundary = [False] * n
    j = 0
    while j < n:
        if not good[j]:
            j += 1
            continue
        k = j  # extend the run while the next word is good and the gap before it is clean in both
        while k + 1 < n and good[k + 1] and ins_a[k + 1] == 0 and ins_b[k + 1] == 0:
            k += 1
        if k - j + 1 >= min_good:
            for t in range(j, k + 1):
                boundary[t] = True
        j = k + 1
    segments: list[tuple[int, int]] = []
    ea = eb = 0

    def close() -> None:
        nonlocal ea, eb
        if ea or eb:
            segments.append((ea, eb))
        ea = eb = 0

    for j in range(n + 1):
        # the gap before word j: inside a boundary run it is clean by construction; between two runs it
        # forms a segment of its own (closed by the next boundary word)
        ea += ins_a[j]
        eb += ins_b[j]
        if j == n:
            break
        if boundary[j]:
            close()
            continue
        ea += st_a[j] != MATCH
        eb += st_b[j] != MATCH
    close()
    return segments


def mapsswe(segments: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """NIST's matched-pairs sentence-segment word error test on segment error differences.

    Z = mean(d) / (sd(d) / sqrt(m)) over the m segments, two-sided normal p-value (the test is meant for
    m large enough that the normal approximation holds; with fewer than 10 segments it is flagged).
    """
    d = np.array([x - y for x, y in segments], dtype=float)
    m = d.size
    extra: dict[str, Any] = {"segments": m, "mean_diff": float(d.mean()) if m else 0.0}
    if m < 10:
        extra["note"] = "fewer than 10 segments: normal approximation doubtful"
    if m < 2:
        return _result("mapsswe", None, 1.0 if m == 0 else None, m, **extra)
    sd = float(d.std(ddof=1))
    if sd == 0:
        if d.mean() == 0:
            return _result("mapsswe", 0.0, 1.0, m, **extra)
        extra["note"] = "every segment differs by the same amount: variance zero, Z undefined"
        return _result("mapsswe", None, None, m, **extra)
    z = float(d.mean()) / (sd / math.sqrt(m))
    return _result("mapsswe", z, 2 * sps.norm.sf(abs(z)), m, **extra)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error control). None entries stay None and are
    not counted in the family."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    m = len(idx)
    order = sorted(idx, key=lambda i: p_values[i])  # type: ignore[arg-type, return-value]
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        adj = min(1.0, (m - rank) * float(p_values[i]))  # type: ignore[arg-type]
        running = max(running, adj)
        out[i] = running
    return out


# --- k related samples -----------------------------------------------------------------------------------


def friedman(matrix: np.ndarray) -> dict[str, Any]:
    """Friedman's test: rows = blocks (sentences), columns = treatments (dialects); ranks within rows
    (ties averaged), tie-corrected chi-square with k - 1 degrees of freedom, and Kendall's W."""
    x = np.asarray(matrix, float)
    n, k = x.shape
    if n < 2 or k < 3:
        return _result("friedman", None, None, n, k=k, note="needs at least 2 blocks and 3 treatments")
    ranks = np.apply_along_axis(sps.rankdata, 1, x)
    r_sum = ranks.sum(axis=0)
    ties = 0.0
    for row in x:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts**3 - counts).sum())
    c = 1 - ties / (n * k * (k**2 - 1))
    if c <= 0:
        return _result("friedman", 0.0, 1.0, n, k=k, kendall_w=0.0, note="every block is fully tied")
    chi2 = (12.0 / (n * k * (k + 1)) * float((r_sum**2).sum()) - 3 * n * (k + 1)) / c
    return _result("friedman", chi2, float(sps.chi2.sf(chi2, k - 1)), n, k=k, df=k - 1,
                   kendall_w=chi2 / (n * (k - 1)), mean_ranks=(r_sum / n).tolist())
