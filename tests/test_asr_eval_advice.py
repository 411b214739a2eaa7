"""The recommendation guard: a WER lead the primary test cannot tell from noise does not buy a more expensive
model. Hand-made summaries and significance, shaped like the results JSON."""

from __future__ import annotations

from speechbench.asr_eval.advice import make_advice, recommend


def _models():
    # base: lowest WER but slowest; tiny: 2.9 points worse, cheaper; moon: much worse, cheapest
    return {
        "base": {"wer": 0.100, "rtf": 0.15, "rtf_median": 0.146, "latency_ms_p95": 1356, "peak_memory_mb": 1147},
        "tiny": {"wer": 0.129, "rtf": 0.09, "rtf_median": 0.088, "latency_ms_p95": 815, "peak_memory_mb": 909},
        "moon": {"wer": 0.232, "rtf": 0.02, "rtf_median": 0.023, "latency_ms_p95": 300, "peak_memory_mb": 600},
    }


def _significance(p_holm):
    """significance["models"] flat rows: the primary test plus another test that must be ignored."""
    rows = []
    for (a, b), p in p_holm.items():
        rows.append({"a": a, "b": b, "test": "mapsswe", "p_value": p / 2, "p_holm": p, "significant": p < 0.05})
        rows.append({"a": a, "b": b, "test": "wilcoxon", "p_value": 0.9, "p_holm": 0.9, "significant": False})
    return {"primary_test": "mapsswe", "alpha": 0.05, "models": rows}


def test_cheaper_model_not_significantly_worse_is_recommended():
    sig = _significance({("tiny", "base"): 0.117, ("base", "moon"): 1e-14, ("tiny", "moon"): 1e-9})
    out = recommend(_models(), ["base", "tiny", "moon"], sig, alpha=0.05)
    assert out["lowest_wer_model"] == "base"
    assert out["recommended"] == "tiny"  # moon is cheaper still, but significantly worse
    assert out["recommendation"]["candidates"] == ["base", "tiny"]
    assert out["recommendation"]["comparisons"]["moon"]["significantly_worse"]
    reason = out["recommended_reason"]
    assert "base" in reason and "0.117" in reason and "not significantly worse" in reason and "cheapest" in reason


def test_significantly_worse_model_is_not_recommended():
    sig = _significance({("tiny", "base"): 0.01, ("base", "moon"): 1e-14, ("tiny", "moon"): 1e-9})
    out = recommend(_models(), ["base", "tiny", "moon"], sig, alpha=0.05)
    assert out["recommended"] == out["lowest_wer_model"] == "base"
    assert "significantly worse" in out["recommended_reason"]


def test_untested_pair_counts_as_significantly_different():
    sig = _significance({("base", "moon"): 1e-14})  # tiny vs base refused (different utterances)
    out = recommend(_models(), ["base", "tiny", "moon"], sig, alpha=0.05)
    assert out["recommended"] == "base"
    assert out["recommendation"]["comparisons"]["tiny"] == {"wer": 0.129, "p_holm": None, "tested": False,
                                                            "significantly_worse": True}
    assert "not tested" in out["recommended_reason"]


def test_cost_is_the_median_rtf_then_latency():
    models = _models()
    models["tiny"]["rtf"] = 0.5  # one slow pass over everything; the timing passes' median says otherwise
    sig = _significance({("tiny", "base"): 0.5, ("base", "moon"): 1e-14, ("tiny", "moon"): 1e-9})
    assert recommend(models, ["base", "tiny", "moon"], sig)["recommended"] == "tiny"
    del models["tiny"]["rtf_median"]  # without passes the one-pass RTF is all there is
    assert recommend(models, ["base", "tiny", "moon"], sig)["recommended"] == "base"


def test_make_advice_carries_the_reason_and_the_budget_note():
    models = _models()
    summary = {"models": models, "per_dialect": {m: {"x": {"wer": s["wer"], "wer_ci95": [0, 1]}}
                                                 for m, s in models.items()}}
    by_model = {m: [{"id": "u", "dialect": "x", "ref": "a b", "errors": 1, "ref_words": 10, "duration_s": 1.0,
                     "latency_s": s["rtf"]}] for m, s in models.items()}
    sig = _significance({("tiny", "base"): 0.117, ("base", "moon"): 1e-14, ("tiny", "moon"): 1e-9})
    adv = make_advice(by_model, summary, sig, {}, set(), None, None)
    assert adv["recommended"] == "tiny" and adv["lowest_wer_model"] == "base" and adv["recommended_reason"]
    assert "note" not in adv  # the lowest-WER model is within the (absent) budget
    adv = make_advice(by_model, summary, sig, {}, set(), 1000, None)  # base's p95 1356 ms is over budget
    assert adv["lowest_wer_model"] == "tiny" and "base" in adv["note"]


def test_too_few_utterances_for_a_test_recommend_the_lowest_wer():
    """On two clips nothing is significant: the cheapest model must not win by default (it did: 89% WER)."""
    models = _models()
    for m in models.values():
        m["n"] = 2
    sig = _significance({("tiny", "base"): 1.0, ("base", "moon"): 1.0, ("tiny", "moon"): 1.0})
    out = recommend(models, ["base", "tiny", "moon"], sig)
    assert out["recommended"] == "base" and out["recommendation"]["too_few_utterances"] == 2
    assert "lowest WER decides" in out["recommended_reason"]
    for m in models.values():
        m["n"] = 72
    assert recommend(models, ["base", "tiny", "moon"], sig)["recommended"] == "moon"
