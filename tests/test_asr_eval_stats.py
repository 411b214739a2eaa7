"""Each statistical test against scipy or a hand-worked example; bootstrap coverage by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import stats as sps

from speechbench.asr_eval import stats
from speechbench.asr_eval.advice import budget_ladder, pareto_front
from speechbench.asr_eval.analysis import aggregate, dialect_effects, domain_gap, significance_between_models
from speechbench.asr_eval.scoring import align


@pytest.fixture
def pairs():
    rng = np.random.default_rng(3)
    a = rng.poisson(2.0, 60).astype(float)
    b = np.clip(a + rng.integers(-2, 3, 60), 0, None)
    return a, b


def test_paired_t_matches_scipy(pairs):
    a, b = pairs
    ours = stats.paired_t(a, b)
    ref = sps.ttest_rel(a, b)
    assert ours["statistic"] == pytest.approx(ref.statistic)
    assert ours["p_value"] == pytest.approx(ref.pvalue)
    d = a - b
    assert ours["cohen_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert stats.paired_t([1, 2, 3], [1, 2, 3])["p_value"] == 1.0


def test_wilcoxon_matches_scipy(pairs):
    a, b = pairs
    ours = stats.wilcoxon(a, b)  # tied error counts: normal approximation with tie correction
    ref = sps.wilcoxon(a, b, zero_method="wilcox", method="asymptotic")
    assert ours["method"] == "asymptotic"
    assert ours["p_value"] == pytest.approx(ref.pvalue)
    assert ours["statistic"] == pytest.approx(ref.statistic)
    x, y = np.array([1.5, 2.25, 0.1, 4.0, 3.3, 0.7, 2.9]), np.array([0.2, 0.0, 0.3, 1.1, 3.0, 0.0, 0.6])
    ours = stats.wilcoxon(x, y)  # untied, small: exact
    assert ours["method"] == "exact"
    assert ours["p_value"] == pytest.approx(sps.wilcoxon(x, y, method="exact").pvalue)
    # rank-biserial by hand: d = (+1, +2, -3) -> ranks 1, 2, 3 -> (3 - 3) / 6 = 0
    assert stats.wilcoxon([1, 2, 0], [0, 0, 3])["rank_biserial"] == pytest.approx(0.0)
    assert stats.wilcoxon([1, 2], [1, 2])["p_value"] == 1.0


def test_sign_test_matches_binomtest(pairs):
    a, b = pairs
    ours = stats.sign_test(a, b)
    pos, neg = int((a > b).sum()), int((a < b).sum())
    assert ours["p_value"] == pytest.approx(sps.binomtest(pos, pos + neg, 0.5).pvalue)
    for k, n in [(0, 5), (3, 10), (9, 12), (50, 80)]:
        assert stats.binom_two_sided(k, n) == pytest.approx(sps.binomtest(k, n, 0.5).pvalue)


def test_mcnemar_on_a_known_table():
    # A right & B wrong: 10, A wrong & B right: 2, both right: 5, both wrong: 3
    ca = [True] * 10 + [False] * 2 + [True] * 5 + [False] * 3
    cb = [False] * 10 + [True] * 2 + [True] * 5 + [False] * 3
    r = stats.mcnemar(ca, cb)
    assert (r["a_only_correct"], r["b_only_correct"], r["both_correct"], r["both_wrong"]) == (10, 2, 5, 3)
    # exact: 2 * P(X <= 2 | n=12, p=1/2) = 2 * (1 + 12 + 66) / 4096
    assert r["p_value"] == pytest.approx(2 * 79 / 4096)
    assert r["chi2_cc"] == pytest.approx((abs(10 - 2) - 1) ** 2 / 12)
    assert r["odds_ratio"] == pytest.approx(5.0)
    assert stats.mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_mapsswe_segmentation_by_hand():
    # A substitutes w1, B deletes w5; good runs of >= 2 words: w2-w4 and w6-w7 (w0 alone is too short)
    ref = "a b c d e f g h".split()
    a = align(ref, "a x c d e f g h".split())
    b = align(ref, "a b c d e g h".split())
    assert stats.mapsswe_segments(a, b) == [(1, 0), (0, 1)]
    # an insertion inside a run of correct words splits the run; the insertion is its own segment
    ref = "a b c d".split()
    assert stats.mapsswe_segments(align(ref, "a b z c d".split()), align(ref, ref)) == [(1, 0)]
    # a single good word between errors does not bound a segment (min_good = 2)
    ref = "a b c d e".split()
    assert stats.mapsswe_segments(align(ref, "x b y d e".split()), align(ref, ref)) == [(2, 0)]
    assert stats.mapsswe_segments(align(ref, "x b y d e".split()), align(ref, ref), min_good=1) == [(1, 0), (1, 0)]


def test_mapsswe_statistic_by_hand():
    segs = [(2, 0), (1, 0), (0, 1), (3, 1), (1, 1), (2, 0)]  # d = 2, 1, -1, 2, 0, 2: mean 1, var 8/5
    r = stats.mapsswe(segs)
    z = 1 / math.sqrt(1.6 / 6)
    assert r["statistic"] == pytest.approx(z)
    assert r["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert r["segments"] == 6 and "note" in r  # fewer than 10 segments flagged
    assert stats.mapsswe([])["p_value"] == 1.0


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.01, None]) == [0.01, None]
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1.0, then monotone


def test_friedman_matches_scipy():
    rng = np.random.default_rng(7)
    m = rng.integers(0, 4, size=(15, 5)).astype(float)  # integers: plenty of ties
    m[:, 3] += 1
    ours = stats.friedman(m)
    ref = sps.friedmanchisquare(*m.T)
    assert ours["statistic"] == pytest.approx(ref.statistic)
    assert ours["p_value"] == pytest.approx(ref.pvalue)
    assert 0 <= ours["kendall_w"] <= 1
    assert stats.friedman(np.ones((4, 3)))["p_value"] == 1.0


def _population(rng, n, speaker_sd=0.0, n_speakers=None):
    ref = rng.integers(5, 25, n)
    if n_speakers:
        spk = rng.integers(0, n_speakers, n)
        logit = -1.4 + rng.normal(0, speaker_sd, n_speakers)[spk] + rng.normal(0, 0.5, n)
    else:
        spk = np.zeros(n, int)
        logit = -1.4 + rng.normal(0, 0.8, n)
    p = 1 / (1 + np.exp(-logit))
    return rng.binomial(ref, p), ref, spk


def test_bootstrap_ci_covers_true_wer_at_about_the_nominal_rate():
    rng = np.random.default_rng(11)
    errors, ref, _ = _population(rng, 50_000)
    true = errors.sum() / ref.sum()
    hits, reps = 0, 300
    for r in range(reps):
        idx = rng.choice(errors.size, 150, replace=False)
        ci = stats.bootstrap_ci(errors[idx], ref[idx], n_boot=1000, seed=r)
        hits += ci["lo"] <= true <= ci["hi"]
    assert 0.91 <= hits / reps <= 0.98


def test_speaker_block_bootstrap_covers_when_speakers_are_correlated():
    """With strong speaker effects, resampling utterances is overconfident; resampling speakers is not."""
    rng = np.random.default_rng(5)
    errors, ref, spk = _population(rng, 200_000, speaker_sd=1.0, n_speakers=2000)
    true = errors.sum() / ref.sum()
    block = utt = 0
    reps = 150
    for r in range(reps):
        speakers = rng.choice(2000, 25, replace=False)
        idx = np.concatenate([np.flatnonzero(spk == s)[:8] for s in speakers])
        b = stats.bootstrap_ci(errors[idx], ref[idx], n_boot=1000, seed=r, groups=spk[idx].tolist())
        u = stats.bootstrap_ci(errors[idx], ref[idx], n_boot=1000, seed=r)
        block += b["lo"] <= true <= b["hi"]
        utt += u["lo"] <= true <= u["hi"]
    assert block / reps >= 0.87
    assert utt / reps < block / reps - 0.08


def _crossed_population_wer(mu: float, sd: float) -> float:
    """E[sigmoid(mu + sd Z)]: the population WER when every sentence has the same expected length and the
    sentence and speaker logit effects are independent normals (their sum has sd = hypot of the two)."""
    x, w = hermegauss(80)
    return float((w / (1 + np.exp(-(mu + sd * x)))).sum() / w.sum())


def _crossed_dataset(rng, n_sent, n_spk, mu, sd_sent, sd_spk):
    """Every sentence read by every speaker; logit error rate = mu + sentence effect + speaker effect."""
    a, b = rng.normal(0, sd_sent, n_sent), rng.normal(0, sd_spk, n_spk)
    words = np.broadcast_to(rng.integers(8, 17, n_sent)[:, None], (n_sent, n_spk))
    errors = rng.binomial(words, 1 / (1 + np.exp(-(mu + a[:, None] + b[None, :]))))
    sentences, speakers = np.repeat(np.arange(n_sent), n_spk), np.tile(np.arange(n_spk), n_sent)
    return errors.ravel(), words.ravel(), sentences, speakers


def test_two_way_bootstrap_covers_a_crossed_population_and_utterances_do_not():
    """10 sentences x 9 speakers, as the default corpus: the sentence and speaker effects are shared by
    the cells of a row / column, so the utterance bootstrap is overconfident; the two-way one is not."""
    mu, sd_sent, sd_spk = -2.0, 0.6, 0.6
    true = _crossed_population_wer(mu, math.hypot(sd_sent, sd_spk))
    rng = np.random.default_rng(1)
    two_way = utt = 0
    reps = 150
    for r in range(reps):
        e, n, sent, spk = _crossed_dataset(rng, 10, 9, mu, sd_sent, sd_spk)
        tw = stats.bootstrap_ci_two_way(e, n, sent, spk, n_boot=1000, seed=r)
        u = stats.bootstrap_ci(e, n, n_boot=1000, seed=r)
        two_way += tw["lo"] <= true <= tw["hi"]
        utt += u["lo"] <= true <= u["hi"]
    assert two_way / reps >= 0.85
    assert utt / reps < two_way / reps - 0.15


def test_two_way_bootstrap_on_a_sparse_grid():
    # each sentence read by one speaker of each of 3 voices (like the corpus' s0/s1/s2): 6 of 12 cells
    sent = [0, 0, 1, 1, 2, 2, 3, 3]
    spk = ["a0", "b0", "a1", "b1", "a0", "b0", "a1", "b1"]
    e = np.array([1, 2, 0, 3, 1, 1, 2, 0], float)
    n = np.full(8, 10.0)
    sums = stats.bootstrap_sums_two_way(np.stack([e, n], 1), sent, spk, 4000, 0)
    # E[w_r] = E[w_c] = 1 and the two draws are independent: replicate sums are unbiased for the totals
    assert sums.mean(axis=0) == pytest.approx([e.sum(), n.sum()], rel=0.03)
    ci = stats.bootstrap_ci_two_way(e, n, sent, spk, 1000, 0)
    assert ci["method"] == stats.TWO_WAY and (ci["n_sentences"], ci["n_speakers"], ci["n_cells"]) == (4, 4, 8)
    assert ci["point"] == pytest.approx(0.125) and ci["lo"] <= ci["point"] <= ci["hi"]
    assert stats.bootstrap_ci_two_way(e, n, [0] * 8, spk)["lo"] is None  # one sentence: nothing to resample


def _crossed_recs(model, errors_by_cell, words=10):
    """Records of a full sentences x voices grid; errors_by_cell[s][v]."""
    return [{"model": model, "id": f"v{v}-s{s:02d}", "dialect": f"v{v}", "speaker": f"v{v}", "sentence": f"s{s:02d}",
             "condition": "clean", "errors": int(e), "ref_words": words, "sub": int(e), "del": 0, "ins": 0,
             "char_errors": int(e), "ref_chars": 5 * words, "wer": e / words, "ref": "x " * words, "hyp": "x " * words,
             "duration_s": 1.0, "latency_s": 0.1}
            for s, row in enumerate(errors_by_cell) for v, e in enumerate(row)]


def test_aggregate_headline_ci_follows_the_design():
    rng = np.random.default_rng(4)
    recs = _crossed_recs("m", rng.integers(0, 4, (6, 5)))
    agg = aggregate(recs, 1000, 0)
    assert agg["wer_ci95_method"] == stats.TWO_WAY and agg["wer_ci95"] == agg["wer_ci95_two_way"]
    assert agg["two_way_units"] == {"n_sentences": 6, "n_speakers": 5, "n_cells": 30}
    assert {"wer_ci95_utterance", "wer_ci95_speaker", "wer_ci95_sentence"} <= set(agg)
    # one voice (a dialect's row): no crossing, sentence blocks are the headline
    one = aggregate([r for r in recs if r["speaker"] == "v0"], 1000, 0, within_dialect=True)
    assert one["wer_ci95_method"] == "sentence-block" and one["wer_ci95"] == one["wer_ci95_sentence"]
    assert aggregate([r for r in recs if r["speaker"] == "v0"], 1000, 0)["wer_ci95_method"] == "utterance"


def test_sentence_level_tests_pair_per_sentence_totals():
    rng = np.random.default_rng(8)
    base = rng.integers(0, 3, (12, 4))
    worse = base + rng.integers(0, 3, (12, 4))  # B never better, often worse
    by_model = {"A": _crossed_recs("A", base), "B": _crossed_recs("B", worse), "C": _crossed_recs("C", base)}
    sig = significance_between_models(by_model, 1000, 0)
    pair = next(p for p in sig["pairs"] if (p["a"], p["b"]) == ("A", "B"))
    sl = pair["sentence_level"]
    ta, tb = base.sum(axis=1), worse.sum(axis=1)
    assert sl["n_sentences"] == 12 and sl["errors_a"] == ta.tolist() and sl["errors_b"] == tb.tolist()
    nz = (ta - tb)[ta != tb]
    assert sl["wilcoxon"]["p_value"] == pytest.approx(
        sps.wilcoxon(nz, method=sl["wilcoxon"]["method"]).pvalue)
    assert sl["paired_t"]["p_value"] == pytest.approx(sps.ttest_rel(ta, tb).pvalue)
    # Holm over the 3 model pairs; the compact entry rides on every flat row of the pair
    ps = [p["sentence_level"]["wilcoxon"]["p_value"] for p in sig["pairs"]]
    assert [p["sentence_level"]["wilcoxon"]["p_holm"] for p in sig["pairs"]] == pytest.approx(stats.holm(ps))
    rows = [r for r in sig["models"] if (r["a"], r["b"]) == ("A", "B")]
    assert len(rows) == 5 and all(r["sentence_level"]["test"] == "wilcoxon" for r in rows)
    assert rows[0]["sentence_level"]["p_holm"] == sl["wilcoxon"]["p_holm"]
    assert rows[0]["sentence_level"]["significant"] and rows[0]["sentence_level"]["n_sentences"] == 12
    same = next(p for p in sig["pairs"] if (p["a"], p["b"]) == ("A", "C"))["sentence_level"]["wilcoxon"]
    assert same["p_value"] == 1.0 and not same["significant"]


def test_paired_bootstrap_probability():
    e = np.array([1, 0, 2, 1, 0, 3, 1, 0, 0, 2], float)
    n = np.full(10, 10.0)
    same = stats.paired_bootstrap(e, e, n, 1000, 0)
    assert same["p_a_better"] == pytest.approx(0.5)
    better = stats.paired_bootstrap(e * 0, e, n, 1000, 0)
    assert better["p_a_better"] == 1.0 and better["diff_ci95"][1] < 0


def _rec(model, dialect, sentence, errors, words=10, speaker=None):
    return {"model": model, "id": f"{dialect}-{sentence}", "dialect": dialect, "sentence": str(sentence),
            "condition": "clean", "speaker": speaker or dialect, "errors": errors, "ref_words": words,
            "wer": errors / words, "ref": "x", "hyp": "x", "duration_s": 1.0, "latency_s": 0.1}


def test_dialect_effects_are_blocked_by_sentence():
    rng = np.random.default_rng(2)
    recs = []
    for s in range(12):
        base = rng.integers(0, 3)
        for d, extra in (("en-us", 0), ("en", 0), ("en-029", 3)):
            recs.append(_rec("m", d, s, int(base + extra + rng.integers(0, 2))))
    recs.append(_rec("m", "en-us", 99, 1))  # a sentence missing in other dialects: left out
    out = dialect_effects(recs)
    assert out["blocks"] == 12 and out["blocks_incomplete"] == 1
    m = np.array([[next(r["wer"] for r in recs if r["sentence"] == str(s) and r["dialect"] == d)
                   for d in out["dialects"]] for s in range(12)])
    assert out["friedman"]["p_value"] == pytest.approx(sps.friedmanchisquare(*m.T).pvalue)
    worst = {(p["a"], p["b"]): p for p in out["pairwise"]}
    assert worst[("en", "en-029")]["significant"]


def test_dialect_effects_pool_several_speakers_of_one_cell():
    # two speakers of en-029 read each sentence: both count (pooled), neither overwrites the other
    recs = []
    for s in range(6):
        recs += [_rec("m", "en-us", s, 1), _rec("m", "en", s, 1),
                 _rec("m", "en-029", s, 0, speaker="a"), _rec("m", "en-029", s, 4, speaker="b")]
    out = dialect_effects(recs)
    assert out["blocks"] == 6
    assert out["mean_wer_by_dialect"]["en-029"] == pytest.approx(0.2)  # (0 + 4) / (10 + 10)


def test_domain_gap_with_control():
    recs, ctrl = [], []
    for s in range(10):
        for d in ("en-us", "en", "en-029", "en-gb-scotland"):
            held = d in ("en-029", "en-gb-scotland")
            recs.append(_rec("own", d, s, 4 if held else 1))
            ctrl.append(_rec("ctrl", d, s, 2 if held else 1))
    g = domain_gap(recs, ["en-us", "en", "piper"], 1000, 0, control=ctrl)
    assert g["gap"] == pytest.approx(0.3) and g["control_gap"] == pytest.approx(0.1)
    assert g["gap_minus_control"] == pytest.approx(0.2)
    assert g["held_out"] == ["en-029", "en-gb-scotland"]


def test_pareto_and_budget_ladder():
    models = {"a": {"wer": 0.1, "rtf": 0.5, "peak_memory_mb": 500, "latency_ms_p95": 900},
              "b": {"wer": 0.2, "rtf": 0.1, "peak_memory_mb": 300, "latency_ms_p95": 200},
              "c": {"wer": 0.3, "rtf": 0.2, "peak_memory_mb": 400, "latency_ms_p95": 300}}
    assert pareto_front(models) == ["a", "b"]
    summary = {"models": models, "per_dialect": {m: {"x": {"wer": v["wer"]}} for m, v in models.items()}}
    ladder = budget_ladder({}, summary)
    assert [(r["budget"], r["best"]) for r in ladder] == [(200, "b"), (900, "a")]


def test_pareto_uses_the_median_rtf_of_the_timing_passes():
    # on one pass b looked fastest; over the timing passes its median is slower than a's
    models = {"a": {"wer": 0.1, "rtf": 0.5, "rtf_median": 0.2, "peak_memory_mb": 500},
              "b": {"wer": 0.2, "rtf": 0.3, "rtf_median": 0.4, "peak_memory_mb": 500}}
    assert pareto_front(models) == ["a"]
    assert pareto_front({m: {k: v for k, v in s.items() if k != "rtf_median"} for m, s in models.items()}) == ["a", "b"]


def test_paired_difference_interval_resamples_like_the_headline():
    """On a crossed design the CI of a WER difference is two-way, as the headline interval is: with a
    speaker effect on the difference, resampling one factor only would leave that variance out."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 4, (8, 6))
    worse = base + (np.arange(6) % 2)[None, :] * rng.integers(0, 3, (8, 6))  # worse for half the speakers
    sig = significance_between_models({"A": _crossed_recs("A", base), "B": _crossed_recs("B", worse)}, 1000, 0)
    pair = sig["pairs"][0]
    assert pair["bootstrap_method"] == stats.TWO_WAY
    e_a, e_b = base.ravel().astype(float), worse.ravel().astype(float)
    sent = [s for s in range(8) for _ in range(6)]
    spk = [v for _ in range(8) for v in range(6)]
    tw = stats.paired_bootstrap(e_a, e_b, np.full(48, 10.0), 1000, 0, two_way=(sent, spk))
    utt = stats.paired_bootstrap(e_a, e_b, np.full(48, 10.0), 1000, 0)
    assert pair["wer_diff_ci95"] == pytest.approx(tw["diff_ci95"])
    assert tw["diff_ci95"][1] - tw["diff_ci95"][0] > utt["diff_ci95"][1] - utt["diff_ci95"][0]


def test_smallest_reachable_p_and_family_reach():
    assert stats.min_p_signed_rank(8) == 2 / 256 and stats.min_p_binomial(5) == 2 / 32
    # the exact floor is what scipy's exact signed-rank test gives when all 8 differences share a sign
    assert stats.min_p_signed_rank(8) == pytest.approx(sps.wilcoxon(np.arange(1, 9), method="exact").pvalue)
    assert stats.min_p_signed_rank(60) == pytest.approx(
        sps.wilcoxon(np.arange(1, 61), method="asymptotic", correction=False).pvalue, rel=1e-6)
    # issue 29: 36 model pairs, 8 sentences: the sentence-level family could never reject
    f = stats.family_reach("model pairs, sentence level", "wilcoxon", "sentences", 8, 36,
                           stats.min_p_signed_rank(8), 0.05)
    assert f["min_p_holm"] == pytest.approx(0.28125) and not f["can_reject"]
    f = stats.family_reach("dialect pairs", "wilcoxon", "blocks", 11, 36, stats.min_p_signed_rank(11), 0.05)
    assert f["min_p_holm"] == pytest.approx(36 * 2 / 2048) and f["can_reject"]
    # Friedman: W = 1 on n blocks of k treatments gives chi2 = n (k - 1)
    m = np.tile(np.arange(4.0), (5, 1))
    assert stats.min_p_friedman(5, 4) == pytest.approx(stats.friedman(m)["p_value"])


def test_dialect_records_keep_the_sets_that_compare_dialects():
    from speechbench.asr_eval.analysis import dialect_records

    accents = [dict(_rec("m", d, s, 1), source="synthetic") for d in ("a", "b") for s in range(3)]
    people = [dict(_rec("m", "real", f"r{k}", 2), source="real") for k in range(4)]
    assert dialect_records(accents + people) == accents
    assert dialect_records(people) == people  # no set compares dialects: everything
