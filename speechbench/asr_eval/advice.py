"""Advice derived from the measured numbers: nothing here is written ahead of a run.

* Which model per dialect, under a latency budget (p95 per utterance) and a memory budget (peak RSS):
  the lowest WER among models within budget; when the runner-up is not significantly worse on that
  dialect (Wilcoxon signed-rank on the dialect's utterances, p >= alpha), its WER lies inside the best
  one's 95% CI there, and it is cheaper, the runner-up is named instead.
  Budgets are the user's (flags; none by default); the budget ladders answer for every budget at once:
  at each measured p95 latency (or peak memory) level, the best model overall and per dialect.
* A dynamic selection strategy: route each dialect to its chosen model (a dialect / accent ID or the
  user's locale picks the route) and use the best single model for unknown dialects; its expected WER
  and RTF are computed from the same records and compared with one model for everything.
* The recommended single model: the lowest-WER eligible model is the reference; every eligible model the
  primary paired test (Holm-corrected over the model pairs) does not find significantly worse than it is a
  candidate, and the cheapest candidate (median RTF, then p95 latency, then peak memory) is recommended,
  with the reason. A WER lead the test cannot tell from noise does not buy a more expensive model; on fewer
  than ``MIN_TEST_UTTERANCES`` utterances (a spot check) no test could, and the lowest WER decides.
* The Pareto front over (WER, RTF, peak memory): models no other model beats on all three. RTF here (and
  in every cost comparison) is the median of the repeated timing passes when they ran.
* The worst dialect of the recommended model, with suggestions that follow from its numbers (error
  type mix, a model that does significantly better there, the own models' in-domain gap).
"""

from __future__ import annotations

from typing import Any

from speechbench.asr_eval import stats
from speechbench.asr_eval.analysis import PairingError, group_by, paired_arrays, speed_rtf

# Below this many utterances the recommendation does not lean on significance tests (see ``recommend``).
MIN_TEST_UTTERANCES = 20
TEST_NAMES = {"mapsswe": "MAPSSWE", "wilcoxon": "Wilcoxon", "sign": "sign test", "paired_t": "paired t",
              "mcnemar": "McNemar"}


def _ok(x: Any) -> bool:
    return isinstance(x, (int, float))


def _metric(s: dict[str, Any], key: str) -> Any:
    """A model's value on ``key``; "rtf" reads the median of the timing passes when there is one."""
    return speed_rtf(s) if key == "rtf" else s.get(key)


def pareto_front(models: dict[str, dict[str, Any]], keys: tuple[str, ...] = ("wer", "rtf", "peak_memory_mb")
                 ) -> list[str]:
    """Models not dominated on ``keys`` (lower is better on each); models missing a key are left out."""
    pts = {m: tuple(_metric(s, k) for k in keys) for m, s in models.items()}
    pts = {m: p for m, p in pts.items() if all(_ok(v) for v in p)}
    front = []
    for m, p in pts.items():
        dominated = any(all(q[i] <= p[i] for i in range(len(keys))) and any(q[i] < p[i] for i in range(len(keys)))
                        for o, q in pts.items() if o != m)
        if not dominated:
            front.append(m)
    return sorted(front, key=lambda m: pts[m][0])


def within_budget(models: dict[str, dict[str, Any]], latency_ms: float | None, memory_mb: float | None
                  ) -> dict[str, str | None]:
    """model -> None if within both budgets, else why not."""
    out: dict[str, str | None] = {}
    for m, s in models.items():
        why = []
        lat, mem = s.get("latency_ms_p95"), s.get("peak_memory_mb")
        if latency_ms is not None and _ok(lat) and lat > latency_ms:
            why.append(f"p95 latency {lat:.0f} ms > {latency_ms:.0f} ms")
        if memory_mb is not None and _ok(mem) and mem > memory_mb:
            why.append(f"peak memory {mem:.0f} MB > {memory_mb:.0f} MB")
        out[m] = "; ".join(why) or None
    return out


def _dialect_test(recs_a: list[dict], recs_b: list[dict]) -> float | None:
    try:
        a, b = paired_arrays(recs_a, recs_b)
    except PairingError:
        return None
    return stats.wilcoxon([r["errors"] for r in a], [r["errors"] for r in b])["p_value"]


def _cost(s: dict[str, Any]) -> tuple[float, float, float]:
    """What "cheaper" means everywhere in the advice: median RTF (compute per second of audio, the cost
    that scales with traffic), then p95 latency, then peak memory; a missing figure counts as infinite."""
    return tuple(v if _ok(v) else float("inf")  # type: ignore[return-value]
                 for v in (speed_rtf(s), s.get("latency_ms_p95"), s.get("peak_memory_mb")))


def best_per_dialect(by_model: dict[str, list[dict]], summary: dict[str, Any], eligible: list[str],
                     alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    per_dialect = summary["per_dialect"]
    models = summary["models"]
    dialects = sorted({d for m in eligible for d in per_dialect.get(m, {})})
    out: dict[str, dict[str, Any]] = {}
    for d in dialects:
        ranked = sorted((m for m in eligible if per_dialect.get(m, {}).get(d, {}).get("wer") is not None),
                        key=lambda m: (per_dialect[m][d]["wer"], _cost(models[m])))
        if not ranked:
            continue
        best = ranked[0]
        row: dict[str, Any] = {"best": best, "wer": per_dialect[best][d]["wer"],
                               "wer_ci95": per_dialect[best][d].get("wer_ci95"), "choice": best,
                               "reason": "lowest WER"}
        if len(ranked) > 1:
            second = ranked[1]
            ra = [r for r in by_model[best] if r["dialect"] == d]
            rb = [r for r in by_model[second] if r["dialect"] == d]
            p = _dialect_test(ra, rb)
            row.update({"runner_up": second, "runner_up_wer": per_dialect[second][d]["wer"], "p_value": p})
            hi = (per_dialect[best][d].get("wer_ci95") or [None, None])[1]
            within_ci = hi is not None and per_dialect[second][d]["wer"] <= hi
            if p is not None and p >= alpha and within_ci and _cost(models[second]) < _cost(models[best]):
                row["choice"] = second
                row["reason"] = (f"{second} is not significantly worse than {best} here (Wilcoxon p = {p:.2g}, "
                                 f"its WER inside {best}'s 95% CI) and is cheaper (median RTF, p95 latency, "
                                 "memory)")
        out[d] = row
    return out


def routing(by_model: dict[str, list[dict]], choice: dict[str, str], fallback: str) -> dict[str, Any]:
    """Expected WER and RTF when each dialect goes to its chosen model (pooled over the same utterances)."""
    err = words = audio = compute = 0.0
    for d, m in choice.items():
        for r in by_model[m]:
            if r["dialect"] == d:
                err += r["errors"]
                words += r["ref_words"]
                audio += r["duration_s"]
                compute += r["latency_s"]
    single = by_model[fallback]
    s_err, s_words = sum(r["errors"] for r in single), sum(r["ref_words"] for r in single)
    s_rtf = sum(r["latency_s"] for r in single) / max(1e-12, sum(r["duration_s"] for r in single))
    return {
        "routes": choice, "fallback_for_unknown_dialect": fallback,
        "models_used": sorted(set(choice.values())),
        "wer": err / words if words else None, "rtf": compute / audio if audio else None,
        "single_model": fallback, "single_model_wer": s_err / s_words if s_words else None,
        "single_model_rtf": s_rtf,
    }


def worst_dialect_notes(model: str, by_model: dict[str, list[dict]], summary: dict[str, Any],
                        significance_dialect: dict[str, Any], gaps: dict[str, Any], own: set[str],
                        eligible: list[str], alpha: float = 0.05) -> dict[str, Any] | None:
    pd = summary["per_dialect"].get(model) or {}
    if len(pd) < 2:
        return None
    worst = max(pd, key=lambda d: pd[d]["wer"] if pd[d]["wer"] is not None else -1)
    best = min((d for d in pd if d != worst), key=lambda d: pd[d]["wer"] if pd[d]["wer"] is not None else 2)
    w = pd[worst]
    errs = max(1, w["sub"] + w["del"] + w["ins"])
    mix = {"substitutions": w["sub"] / errs, "deletions": w["del"] / errs, "insertions": w["ins"] / errs}
    notes: list[str] = []
    dominant = max(mix, key=mix.get)  # type: ignore[arg-type]
    notes.append(f"{worst} has the highest WER for {model}: {100 * w['wer']:.1f}% vs {100 * pd[best]['wer']:.1f}% "
                 f"on {best}; {100 * mix[dominant]:.0f}% of its errors are {dominant}.")
    if dominant == "substitutions":
        notes.append("Substitutions dominate: the words are heard but mapped to the wrong word, the signature of "
                     "unfamiliar vowel qualities. Adaptation data in this accent (or pronunciation variants in a "
                     "lexicon-based recognizer) targets exactly this.")
    elif dominant == "deletions":
        notes.append("Deletions dominate: words are dropped, which points at speaking rate, reduced function words "
                     "or segmentation; check the deleted-word list and the speaking rate of this accent.")
    else:
        notes.append("Insertions dominate: the recognizer adds words (hallucinated or split words); a stronger "
                     "language-model weight or insertion penalty is the first knob to try.")
    # a model that does significantly better on this dialect
    recs = [r for r in by_model[model] if r["dialect"] == worst]
    better = []
    for other in eligible:
        if other == model or worst not in summary["per_dialect"].get(other, {}):
            continue
        ow = summary["per_dialect"][other][worst]["wer"]
        if ow is None or ow >= w["wer"]:
            continue
        p = _dialect_test(recs, [r for r in by_model[other] if r["dialect"] == worst])
        if p is not None and p < alpha:
            better.append((ow, other, p))
    if better:
        ow, other, p = min(better)
        notes.append(f"{other} is significantly better on {worst} ({100 * ow:.1f}% WER, Wilcoxon p = {p:.2g}): "
                     f"route {worst} to it when the accent is known.")
    gap = gaps.get(model)
    if model in own and gap and worst in gap.get("held_out", []):
        lo = gap["gap_ci95"][0]
        notes.append(f"{worst} was not in {model}'s training accents; its held-out accents are "
                     f"{100 * gap['gap']:+.1f} points WER vs in-domain (95% CI {100 * lo:+.1f} to "
                     f"{100 * gap['gap_ci95'][1]:+.1f}). Adding {worst} speech to training is the direct fix.")
    sig = (significance_dialect or {}).get(model, {})
    if sig.get("pairwise"):
        n_sig = sum(1 for p in sig["pairwise"] if p["significant"] and worst in (p["a"], p["b"]))
        others = len(sig["dialects"]) - 1
        notes.append(f"{worst} differs significantly (Wilcoxon, Holm) from {n_sig} of the {others} other dialects "
                     f"for {model}.")
    return {"model": model, "dialect": worst, "wer": w["wer"], "error_mix": mix, "notes": notes}


def budget_ladder(by_model: dict[str, list[dict]], summary: dict[str, Any], key: str = "latency_ms_p95"
                  ) -> list[dict[str, Any]]:
    """For each budget level that changes the answer (each model's own ``key`` value, ascending): the
    models within it, the lowest-WER one overall and the lowest-WER one per dialect.

    This answers "which model under a budget of X" for every X at once, from the measured costs.
    """
    models = summary["models"]
    pd = summary["per_dialect"]
    levels = sorted({models[m][key] for m in models if _ok(models[m].get(key)) and models[m].get("wer") is not None})
    rows = []
    for level in levels:
        ok = [m for m in models if _ok(models[m].get(key)) and models[m][key] <= level
              and models[m].get("wer") is not None]
        best = min(ok, key=lambda m: (models[m]["wer"], _cost(models[m])))
        per = {}
        for d in sorted({d for m in ok for d in pd.get(m, {})}):
            cands = [m for m in ok if pd.get(m, {}).get(d, {}).get("wer") is not None]
            if cands:
                b = min(cands, key=lambda m: (pd[m][d]["wer"], _cost(models[m])))
                per[d] = {"model": b, "wer": pd[b][d]["wer"]}
        rows.append({"budget": level, "models_within": sorted(ok), "best": best, "wer": models[best]["wer"],
                     "per_dialect": per})
    # keep only the levels where the overall or a per-dialect choice changes
    out: list[dict[str, Any]] = []
    for r in rows:
        sig = (r["best"], tuple((d, v["model"]) for d, v in r["per_dialect"].items()))
        if not out or sig != out[-1]["_sig"]:
            out.append({**r, "_sig": sig})
    for r in out:
        r.pop("_sig")
    return out


def _primary_p_holm(significance: dict[str, Any], a: str, b: str) -> float | None:
    """The Holm-corrected p of the primary test for the pair {a, b}; None when the pair was not tested
    (refused, or the significance section did not run) or the test gave no p-value."""
    primary = significance.get("primary_test")
    for row in significance.get("models") or []:
        if row.get("test") == primary and {row.get("a"), row.get("b")} == {a, b}:
            return row.get("p_holm")
    return None


def _rtf_text(s: dict[str, Any]) -> str:
    r = speed_rtf(s)
    kind = "median RTF" if _ok(s.get("rtf_median")) else "RTF"  # older results: one pass only
    return f"{kind} {r:.3f}" if _ok(r) else "RTF n/a"


def recommend(models: dict[str, dict[str, Any]], eligible: list[str], significance: dict[str, Any],
              alpha: float = 0.05) -> dict[str, Any]:
    """The cheapest eligible model that is not significantly worse than the lowest-WER eligible one.

    The reference is the lowest-WER eligible model; a model is a candidate when the primary paired test's
    Holm-adjusted p against the reference is >= alpha. A pair without a p-value (not tested) counts as
    significantly different: no evidence that it is as good. Among the candidates (the reference
    included) the one with the lowest ``_cost`` is recommended.
    """
    ref = min(eligible, key=lambda m: (models[m]["wer"], _cost(models[m])))
    test = TEST_NAMES.get(significance.get("primary_test") or "", significance.get("primary_test") or "paired test")
    n = models[ref].get("n")
    if n is not None and n < MIN_TEST_UTTERANCES:
        # On a handful of utterances no paired test can find anything significant, so "not significantly
        # worse" would recommend the cheapest model whatever its WER (89% against 2% on the two recorded
        # clips): without the evidence, the lowest WER decides.
        return {"recommended": ref, "lowest_wer_model": ref,
                "recommended_reason": (f"{ref} has the lowest WER ({100 * models[ref]['wer']:.1f}%); with {n} "
                                       f"utterances (< {MIN_TEST_UTTERANCES}) a paired test cannot tell models "
                                       "apart, so the lowest WER decides"),
                "recommendation": {"test": None, "alpha": alpha, "cost": None, "candidates": [ref],
                                   "comparisons": {}, "too_few_utterances": n}}
    comparisons: dict[str, dict[str, Any]] = {}
    for m in eligible:
        if m != ref:
            p = _primary_p_holm(significance, ref, m)
            comparisons[m] = {"wer": models[m]["wer"], "p_holm": p, "tested": p is not None,
                              "significantly_worse": p is None or p < alpha}
    candidates = [ref] + [m for m, c in comparisons.items() if not c["significantly_worse"]]
    choice = min(candidates, key=lambda m: (_cost(models[m]), models[m]["wer"]))
    return {"recommended": choice, "lowest_wer_model": ref,
            "recommended_reason": _recommend_reason(models, choice, ref, candidates, comparisons, test, alpha),
            "recommendation": {"test": significance.get("primary_test"), "alpha": alpha,
                               "cost": "median RTF, then p95 latency, then peak memory",
                               "candidates": candidates, "comparisons": comparisons}}


def _recommend_reason(models: dict[str, dict[str, Any]], choice: str, ref: str, candidates: list[str],
                      comparisons: dict[str, dict[str, Any]], test: str, alpha: float) -> str:
    """One sentence naming the lowest-WER model, the p-value and why ``choice`` won."""
    wer = {m: f"{100 * models[m]['wer']:.1f}%" for m in candidates}
    others = [m for m in candidates if m != ref]
    if choice != ref:
        return (f"{choice} ({wer[choice]} WER) is not significantly worse than the lowest-WER model {ref} "
                f"({wer[ref]}): {test} Holm p = {comparisons[choice]['p_holm']:.3g} >= {alpha:g}; it is the "
                f"cheapest of {ref} and the {len(others)} model(s) not significantly worse than it "
                f"({_rtf_text(models[choice])} vs {_rtf_text(models[ref])})")
    if others:
        return (f"{ref} has the lowest WER ({wer[ref]}) and is also cheaper than the model(s) not significantly "
                f"worse than it ({test}, Holm, alpha {alpha:g}): {', '.join(others)}")
    if comparisons:
        untested = [m for m, c in comparisons.items() if not c["tested"]]
        return (f"{ref} has the lowest WER ({wer[ref]}) and every other eligible model is significantly worse "
                f"({test} Holm p < {alpha:g})" + (f" or was not tested against it ({', '.join(untested)})"
                                                  if untested else ""))
    return f"{ref} is the only eligible model"


def make_advice(by_model: dict[str, list[dict]], summary: dict[str, Any], significance: dict[str, Any],
                gaps: dict[str, Any], own: set[str], latency_budget_ms: float | None,
                memory_budget_mb: float | None, alpha: float = 0.05) -> dict[str, Any]:
    models = summary["models"]
    budget = within_budget(models, latency_budget_ms, memory_budget_mb)
    eligible = [m for m, why in budget.items() if why is None and models[m].get("wer") is not None]
    out: dict[str, Any] = {
        "latency_budget_ms": latency_budget_ms, "memory_budget_mb": memory_budget_mb,
        "excluded_by_budget": {m: why for m, why in budget.items() if why},
        "eligible": eligible,
        "pareto_front": pareto_front(models),
        "pareto_front_wer_rtf": pareto_front(models, ("wer", "rtf")),
    }
    out["latency_ladder"] = budget_ladder(by_model, summary, "latency_ms_p95")
    out["memory_ladder"] = budget_ladder(by_model, summary, "peak_memory_mb")
    ranked_all = sorted((m for m in models if models[m].get("wer") is not None), key=lambda m: models[m]["wer"])
    if ranked_all:
        out["best_overall"] = ranked_all[0]
    if not eligible:
        out["note"] = "no model meets both budgets"
        return out
    out.update(recommend(models, eligible, significance, alpha))
    best = out["recommended"]
    per_d = best_per_dialect(by_model, summary, eligible, alpha)
    out["per_dialect"] = per_d
    if per_d:
        out["routing"] = routing(by_model, {d: r["choice"] for d, r in per_d.items()}, best)
        # the fastest (lowest-RTF) model within the budget, for when speed matters more than the last WER point
        fastest = min(eligible, key=lambda m: _cost(models[m]))
        out["fastest_eligible"] = fastest
    out["worst_dialect"] = worst_dialect_notes(best, by_model, summary, significance.get("dialects", {}), gaps,
                                               own, eligible, alpha)
    if ranked_all and ranked_all[0] != out["lowest_wer_model"]:
        out["note"] = (f"the lowest-WER model overall, {ranked_all[0]}, is outside the budget "
                       f"({out['excluded_by_budget'].get(ranked_all[0])})")
    return out


__all__ = ["best_per_dialect", "budget_ladder", "group_by", "make_advice", "pareto_front", "recommend",
           "routing", "within_budget"]
