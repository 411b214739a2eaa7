"""Advice derived from the measured numbers: nothing here is written ahead of a run.

* Which model per dialect, under a latency budget (p95 per utterance) and a memory budget (peak RSS):
  the lowest WER among models within budget, unless a cheaper model is non-inferior there: the upper end
  of the 95% CI of its WER difference (paired bootstrap over the dialect's sentences) is within the
  margin (``--margin``, default 1 point). "Not significantly worse" is not "as good": on a small test set
  every model passes a significance test.
  Budgets are the user's (flags; none by default); the budget ladders answer for every budget at once:
  at each measured p95 latency (or peak memory) level, the best model overall and per dialect.
* A dynamic selection strategy: route each dialect to its chosen model (a dialect / accent ID or the
  user's locale picks the route) and use the best single model for unknown dialects. Its gain is
  estimated on held-out sentences: routes chosen on half of the sentences are scored on the other half,
  both ways (choosing and scoring on the same utterances flatters routing). The in-sample figure is kept.
* The recommended single model, on real speech when the run has a real-speech set (people first), else on
  every utterance: the lowest-WER eligible model is the reference; a model is a candidate when the 95% CI
  of its WER difference from the reference (paired bootstrap, the headline interval's resampling) lies
  below the non-inferiority margin, and the cheapest candidate (median RTF, then p95 latency, then peak
  memory) is recommended, with the reason; otherwise the reference. On fewer than
  ``MIN_TEST_UTTERANCES`` utterances (a spot check) the lowest WER decides.
* The Pareto front over (WER, RTF, peak memory): models no other model beats on all three. RTF here (and
  in every cost comparison) is the median of the repeated timing passes when they ran.
* The worst dialect of the recommended model, only when it is separated from the next worst (their
  pairwise Wilcoxon over sentences, Holm over the dialect pairs, p < alpha); otherwise the tied group is
  named. With suggestions that follow from its numbers (error type mix, a model that does significantly
  better there, the own models' in-domain gap).
"""

from __future__ import annotations

from typing import Any

from speechbench.asr_eval import stats
from speechbench.asr_eval.analysis import PairingError, group_by, paired_arrays, speed_rtf
from speechbench.asr_eval.config import DEFAULT_MARGIN
from speechbench.asr_eval.dialect_choice import _cost, best_per_dialect, routing, routing_heldout

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


def worst_dialect_notes(model: str, by_model: dict[str, list[dict]], summary: dict[str, Any],
                        significance_dialect: dict[str, Any], gaps: dict[str, Any], own: set[str],
                        eligible: list[str], alpha: float = 0.05) -> dict[str, Any] | None:
    pd = summary["per_dialect"].get(model) or {}
    if len(pd) < 2:
        return None
    order = sorted(pd, key=lambda d: -(pd[d]["wer"] if pd[d]["wer"] is not None else -1))
    worst = order[0]
    best = min((d for d in pd if d != worst), key=lambda d: pd[d]["wer"] if pd[d]["wer"] is not None else 2)
    # named only when separated from the next worst: a WER lead within the noise is not "the worst dialect"
    pairwise = {frozenset((p["a"], p["b"])): p for p in ((significance_dialect or {}).get(model) or {}).get(
        "pairwise") or []}
    tied = [d for d in order[1:] if not (pairwise.get(frozenset((worst, d))) or {}).get("significant")]
    if order[1] in tied:
        p_next = (pairwise.get(frozenset((worst, order[1]))) or {}).get("p_holm")
        group = [worst] + tied
        return {"model": model, "dialect": None, "tied": group, "wer": pd[worst]["wer"], "separated": False,
                "p_holm_next": p_next,
                "notes": [f"No single worst dialect for {model}: {worst} has the highest WER "
                          f"({100 * pd[worst]['wer']:.1f}%) but is not separated from {order[1]} "
                          f"({100 * pd[order[1]]['wer']:.1f}%; Wilcoxon over sentences, Holm p = "
                          + (f"{p_next:.2g}" if p_next is not None else "n/a") + f" >= {alpha:g}). Not separated "
                          f"from {worst} either: {', '.join(tied)}; dialects significantly better than it: "
                          f"{', '.join(d for d in order[1:] if d not in tied) or 'none'}."]}
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
    return {"model": model, "dialect": worst, "wer": w["wer"], "error_mix": mix, "notes": notes, "separated": True,
            "p_holm_next": (pairwise.get(frozenset((worst, order[1]))) or {}).get("p_holm")}


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


def _pair(significance: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """The paired comparison of {a, b} in ``significance["pairs"]`` (None when the pair was not tested)."""
    return next((p for p in significance.get("pairs") or [] if {p.get("a"), p.get("b")} == {a, b}), None)


def _diff_vs(pair: dict[str, Any], m: str) -> list[float | None]:
    """The 95% CI of WER(m) - WER(other) from a pair whose interval is for WER(a) - WER(b)."""
    lo, hi = pair.get("wer_diff_ci95") or [None, None]
    if pair["a"] == m or lo is None or hi is None:
        return [lo, hi]
    return [-hi, -lo]


def primary_scope(summary: dict[str, Any], significance: dict[str, Any], eligible: list[str]
                  ) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
    """What the recommendation rests on: (scope, WER rows per model, its significance section). Real speech
    when the run scored a real-speech set of at least MIN_TEST_UTTERANCES utterances (people first; the
    synthetic accents drive the per-dialect advice); otherwise every utterance."""
    ps = summary.get("per_source") or {}
    real_sig = (significance.get("by_source") or {}).get("real")
    if real_sig and all(((ps.get(m) or {}).get("real") or {}).get("n", 0) >= MIN_TEST_UTTERANCES for m in eligible):
        return "real", {m: ps[m]["real"] for m in eligible}, real_sig
    return "all", {m: summary["models"][m] for m in eligible}, significance


def _rtf_text(s: dict[str, Any]) -> str:
    r = speed_rtf(s)
    kind = "median RTF" if _ok(s.get("rtf_median")) else "RTF"  # older results: one pass only
    return f"{kind} {r:.3f}" if _ok(r) else "RTF n/a"


def recommend(models: dict[str, dict[str, Any]], eligible: list[str], significance: dict[str, Any],
              alpha: float = 0.05, margin: float = DEFAULT_MARGIN, scope_rows: dict[str, dict[str, Any]] | None = None,
              scope: str = "all") -> dict[str, Any]:
    """The cheapest eligible model that is non-inferior to the lowest-WER eligible one.

    ``scope_rows`` (default ``models``) hold the WERs of the scope the choice rests on and ``significance``
    its paired comparisons. The reference is the lowest-WER eligible model; another model is a candidate
    when the 95% CI of WER(model) - WER(reference) (paired bootstrap) ends at or below ``margin``. A pair
    without an interval (not tested) is no candidate. Among the candidates (the reference included) the one
    with the lowest ``_cost`` is recommended.
    """
    rows = scope_rows or models
    ref = min(eligible, key=lambda m: (rows[m]["wer"], _cost(models[m])))
    test = TEST_NAMES.get(significance.get("primary_test") or "", significance.get("primary_test") or "paired test")
    n = rows[ref].get("n")
    base = {"lowest_wer_model": ref, "scope": scope}
    if n is not None and n < MIN_TEST_UTTERANCES:
        # On a handful of utterances no interval is narrow enough to show anything non-inferior (or
        # different), so the lowest WER decides (89% against 2% on two recorded clips was "not different").
        return {"recommended": ref, **base,
                "recommended_reason": (f"{ref} has the lowest WER ({100 * rows[ref]['wer']:.1f}%); with {n} "
                                       f"utterances (< {MIN_TEST_UTTERANCES}) no paired comparison can tell "
                                       "models apart, so the lowest WER decides"),
                "recommendation": {"test": None, "alpha": alpha, "margin": margin, "cost": None,
                                   "candidates": [ref], "comparisons": {}, "too_few_utterances": n}}
    primary = significance.get("primary_test")
    comparisons: dict[str, dict[str, Any]] = {}
    for m in eligible:
        if m == ref:
            continue
        pair = _pair(significance, ref, m)
        ci = _diff_vs(pair, m) if pair else [None, None]
        p = ((pair or {}).get("tests") or {}).get(primary, {}).get("p_holm")
        comparisons[m] = {"wer": rows[m]["wer"], "diff_ci95": ci, "p_holm": p, "tested": pair is not None,
                          "significantly_worse": p is None or p < alpha,
                          "non_inferior": ci[1] is not None and ci[1] <= margin}
    candidates = [ref] + [m for m, c in comparisons.items() if c["non_inferior"]]
    choice = min(candidates, key=lambda m: (_cost(models[m]), rows[m]["wer"]))
    return {"recommended": choice, **base,
            "recommended_reason": _recommend_reason(models, rows, choice, ref, comparisons, test, margin, scope),
            "recommendation": {"test": primary, "alpha": alpha, "margin": margin,
                               "rule": "non-inferiority: upper end of the 95% CI of WER(model) - WER(lowest) <= "
                                       "margin, then the lowest cost",
                               "cost": "median RTF, then p95 latency, then peak memory",
                               "candidates": candidates, "comparisons": comparisons}}


def _recommend_reason(models: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]], choice: str, ref: str,
                      comparisons: dict[str, dict[str, Any]], test: str, margin: float, scope: str) -> str:
    """One sentence naming the lowest-WER model, the interval and why ``choice`` won."""
    where = "on real speech" if scope == "real" else "over every utterance"
    pts = f"{100 * margin:g}-point"

    def ci(m: str) -> str:
        lo, hi = comparisons[m]["diff_ci95"]
        return "n/a" if lo is None else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"

    if choice != ref:
        return (f"{choice} ({100 * rows[choice]['wer']:.1f}% WER {where}) is non-inferior to the lowest-WER model "
                f"{ref} ({100 * rows[ref]['wer']:.1f}%): the 95% CI of its WER difference, {ci(choice)} points, "
                f"ends within the {pts} margin, and it is cheaper ({_rtf_text(models[choice])} vs "
                f"{_rtf_text(models[ref])})")
    cheaper = [m for m in comparisons if _cost(models[m]) < _cost(models[ref])]
    if not comparisons:
        return f"{ref} is the only eligible model"
    if not cheaper:
        return f"{ref} has the lowest WER {where} ({100 * rows[ref]['wer']:.1f}%) and is also the cheapest"
    best_cheap = min(cheaper, key=lambda m: comparisons[m]["diff_ci95"][1]
                     if comparisons[m]["diff_ci95"][1] is not None else float("inf"))
    return (f"{ref} has the lowest WER {where} ({100 * rows[ref]['wer']:.1f}%) and no cheaper model is shown to "
            f"be within the {pts} margin of it: the closest, {best_cheap} ({100 * rows[best_cheap]['wer']:.1f}%), "
            f"has a WER difference of {ci(best_cheap)} points (95% CI)"
            + (f"; {test} Holm p = {comparisons[best_cheap]['p_holm']:.3g}"
               if comparisons[best_cheap]["p_holm"] is not None else ""))


def make_advice(by_model: dict[str, list[dict]], summary: dict[str, Any], significance: dict[str, Any],
                gaps: dict[str, Any], own: set[str], latency_budget_ms: float | None,
                memory_budget_mb: float | None, alpha: float = 0.05, margin: float = DEFAULT_MARGIN,
                n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
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
    scope, rows, scope_sig = primary_scope(summary, significance, eligible)
    out.update(recommend(models, eligible, scope_sig, alpha, margin, rows, scope))
    out["margin"] = margin
    best = out["recommended"]
    per_d = best_per_dialect(by_model, models, eligible, margin, n_boot, seed)
    out["per_dialect"] = per_d
    if per_d:
        out["routing"] = routing(by_model, {d: r["choice"] for d, r in per_d.items()}, best)
        out["routing_heldout"] = routing_heldout(by_model, models, eligible, best, margin, n_boot, seed)
        # the fastest (lowest-RTF) model within the budget, for when speed matters more than the last WER point
        fastest = min(eligible, key=lambda m: _cost(models[m]))
        out["fastest_eligible"] = fastest
    out["worst_dialect"] = worst_dialect_notes(best, by_model, summary, significance.get("dialects", {}), gaps,
                                               own, eligible, alpha)
    if ranked_all and ranked_all[0] not in eligible:
        out["note"] = (f"the lowest-WER model overall, {ranked_all[0]}, is outside the budget "
                       f"({out['excluded_by_budget'].get(ranked_all[0])})")
    return out


__all__ = ["best_per_dialect", "budget_ladder", "group_by", "make_advice", "pareto_front", "primary_scope",
           "recommend", "routing", "routing_heldout", "within_budget"]
