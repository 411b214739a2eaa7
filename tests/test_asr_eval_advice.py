"""The recommendation rule: a cheaper model replaces the lowest-WER one only when it is shown non-inferior (the
95% CI of its WER difference ends within the margin), never merely because a test found no difference.
Hand-made summaries and significance, shaped like the results JSON."""

from __future__ import annotations

from speechbench.asr_eval.advice import make_advice, recommend, routing_heldout, worst_dialect_notes


def _models():
    # base: lowest WER but slowest; tiny: cheaper; moon: much worse, cheapest
    return {
        "base": {"wer": 0.100, "rtf": 0.15, "rtf_median": 0.146, "latency_ms_p95": 1356, "peak_memory_mb": 1147},
        "tiny": {"wer": 0.105, "rtf": 0.09, "rtf_median": 0.088, "latency_ms_p95": 815, "peak_memory_mb": 909},
        "moon": {"wer": 0.232, "rtf": 0.02, "rtf_median": 0.023, "latency_ms_p95": 300, "peak_memory_mb": 600},
    }


def _significance(diffs):
    """significance["pairs"]: (a, b) -> (95% CI of WER(a) - WER(b), MAPSSWE Holm p)."""
    pairs = [{"a": a, "b": b, "wer_diff_ci95": list(ci), "tests": {"mapsswe": {"p_holm": p}}}
             for (a, b), (ci, p) in diffs.items()]
    return {"primary_test": "mapsswe", "alpha": 0.05, "pairs": pairs}


def test_non_inferior_cheaper_model_is_recommended():
    sig = _significance({("tiny", "base"): ((-0.004, 0.009), 0.4), ("base", "moon"): ((-0.15, -0.11), 1e-14),
                         ("tiny", "moon"): ((-0.14, -0.10), 1e-9)})
    out = recommend(_models(), ["base", "tiny", "moon"], sig, alpha=0.05, margin=0.01)
    assert out["lowest_wer_model"] == "base"
    assert out["recommended"] == "tiny"  # moon is cheaper still, but 11-15 points worse
    assert out["recommendation"]["candidates"] == ["base", "tiny"]
    c = out["recommendation"]["comparisons"]
    assert c["tiny"]["diff_ci95"] == [-0.004, 0.009] and c["tiny"]["non_inferior"]
    # the pair was stored as (base, moon): the interval is turned to WER(moon) - WER(base)
    assert c["moon"]["diff_ci95"] == [0.11, 0.15] and not c["moon"]["non_inferior"]
    reason = out["recommended_reason"]
    assert "non-inferior" in reason and "base" in reason and "[-0.4, +0.9]" in reason and "1-point margin" in reason


def test_not_significant_is_not_as_good():
    """p = 0.9 but the interval reaches 6 points: no evidence the cheaper model is as good."""
    sig = _significance({("tiny", "base"): ((-0.02, 0.06), 0.9), ("base", "moon"): ((-0.2, 0.05), 0.9),
                         ("tiny", "moon"): ((-0.2, 0.05), 0.9)})
    out = recommend(_models(), ["base", "tiny", "moon"], sig, margin=0.01)
    assert out["recommended"] == out["lowest_wer_model"] == "base"
    assert "no cheaper model is shown to be within the 1-point margin" in out["recommended_reason"]
    # a wider margin is the user's call, and then it does buy the cheaper model
    assert recommend(_models(), ["base", "tiny", "moon"], sig, margin=0.07)["recommended"] == "tiny"


def test_untested_pair_is_no_candidate():
    sig = _significance({("base", "moon"): ((-0.15, -0.11), 1e-14)})  # tiny vs base refused
    out = recommend(_models(), ["base", "tiny", "moon"], sig)
    assert out["recommended"] == "base"
    t = out["recommendation"]["comparisons"]["tiny"]
    assert not t["tested"] and not t["non_inferior"] and t["diff_ci95"] == [None, None]


def test_cost_is_the_median_rtf_then_latency():
    models = _models()
    models["tiny"]["rtf"] = 0.5  # one slow pass over everything; the timing passes' median says otherwise
    sig = _significance({("tiny", "base"): ((-0.004, 0.009), 0.5), ("base", "moon"): ((-0.15, -0.11), 1e-14),
                         ("tiny", "moon"): ((-0.14, -0.10), 1e-9)})
    assert recommend(models, ["base", "tiny", "moon"], sig)["recommended"] == "tiny"
    del models["tiny"]["rtf_median"]  # without passes the one-pass RTF is all there is
    assert recommend(models, ["base", "tiny", "moon"], sig)["recommended"] == "base"


def _recs(m, wer_by_sentence, dialects=("x", "y"), source="synthetic"):
    return [{"model": m, "id": f"{d}-{k}", "dialect": d, "speaker": d, "sentence": k, "source": source,
             "ref": "a b c d e f g h i j", "errors": e, "ref_words": 10, "duration_s": 1.0, "latency_s": 0.1}
            for d in dialects for k, e in wer_by_sentence.items()]


def test_make_advice_uses_real_speech_when_present_and_budget_note():
    models = _models()
    for m in models.values():
        m["n"] = 40
    summary = {"models": models, "per_dialect": {},
               "per_source": {"base": {"real": {"wer": 0.30, "n": 40}}, "tiny": {"real": {"wer": 0.20, "n": 40}},
                              "moon": {"real": {"wer": 0.25, "n": 40}}}}
    by_model = {m: [] for m in models}
    sig = _significance({("tiny", "base"): ((-0.004, 0.009), 0.4), ("base", "moon"): ((-0.15, -0.11), 1e-14),
                         ("tiny", "moon"): ((-0.14, -0.10), 1e-9)})
    sig["by_source"] = {"real": _significance({("tiny", "base"): ((-0.15, -0.05), 1e-3),
                                               ("base", "moon"): ((0.0, 0.1), 0.2),
                                               ("tiny", "moon"): ((-0.09, -0.01), 0.01)})}
    adv = make_advice(by_model, summary, sig, {}, set(), None, None)
    # on real speech tiny has the lowest WER, and is cheaper than base: the overall rows do not decide
    assert adv["scope"] == "real" and adv["lowest_wer_model"] == "tiny" and adv["recommended"] == "tiny"
    assert "on real speech" in adv["recommended_reason"] and "note" not in adv
    adv = make_advice(by_model, summary, sig, {}, set(), 500, None)  # only moon's p95 fits
    assert adv["recommended"] == "moon" and "base" in adv["note"]


def test_too_few_utterances_recommend_the_lowest_wer():
    """On two clips nothing can be shown: the cheapest model must not win by default (it did: 89% WER)."""
    models = _models()
    for m in models.values():
        m["n"] = 2
    sig = _significance({("tiny", "base"): ((-0.5, 0.5), 1.0), ("base", "moon"): ((-0.5, 0.5), 1.0),
                         ("tiny", "moon"): ((-0.5, 0.5), 1.0)})
    out = recommend(models, ["base", "tiny", "moon"], sig)
    assert out["recommended"] == "base" and out["recommendation"]["too_few_utterances"] == 2
    assert "lowest WER decides" in out["recommended_reason"]
    for m in models.values():
        m["n"] = 72
    # the old rule ("not significantly worse", p = 1.0) recommended moon at 23% here
    assert recommend(models, ["base", "tiny", "moon"], sig)["recommended"] == "base"


def test_worst_dialect_is_named_only_when_separated():
    summary = {"per_dialect": {"m": {"a": {"wer": 0.30, "sub": 5, "del": 1, "ins": 0},
                                     "b": {"wer": 0.29, "sub": 5, "del": 1, "ins": 0},
                                     "c": {"wer": 0.10, "sub": 1, "del": 0, "ins": 0}}}}
    pw = [{"a": "a", "b": "b", "p_holm": 0.8, "significant": False},
          {"a": "a", "b": "c", "p_holm": 0.01, "significant": True},
          {"a": "b", "b": "c", "p_holm": 0.02, "significant": True}]
    out = worst_dialect_notes("m", {"m": []}, summary, {"m": {"pairwise": pw, "dialects": ["a", "b", "c"]}}, {},
                              set(), ["m"])
    assert out["dialect"] is None and out["tied"] == ["a", "b"] and not out["separated"]
    assert "No single worst dialect" in out["notes"][0] and "c" in out["notes"][0]
    pw[0].update(p_holm=0.01, significant=True)
    out = worst_dialect_notes("m", {"m": []}, summary, {"m": {"pairwise": pw, "dialects": ["a", "b", "c"]}}, {},
                              set(), ["m"])
    assert out["dialect"] == "a" and out["separated"]


def test_routing_gain_is_estimated_on_held_out_sentences():
    """A model that wins one dialect only by chance on some sentences: in-sample routing would count
    that luck as gain; choosing on half the sentences and scoring on the other half does not."""
    sentences = [f"s{k}" for k in range(8)]
    base = _recs("base", {s: 2 for s in sentences})
    # 'lucky' beats base on dialect x in even sentences only, and loses on the odd ones
    lucky = [dict(r, model="lucky", errors=(0 if int(r["sentence"][1:]) % 2 == 0 else 4) if r["dialect"] == "x"
                  else 5) for r in base]
    models = {"base": {"wer": 0.2, "rtf_median": 0.2}, "lucky": {"wer": 0.35, "rtf_median": 0.1}}
    out = routing_heldout({"base": base, "lucky": lucky}, models, ["base", "lucky"], "base", margin=0.01, n_boot=200)
    assert out["single_model_wer"] == 0.2
    assert out["wer"] > out["single_model_wer"] and out["gain"] < 0  # the luck does not carry over
    assert [f["chosen_on"] for f in out["folds"]] == [0, 1]
