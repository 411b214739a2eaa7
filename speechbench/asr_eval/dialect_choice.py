"""Which model for each dialect, and what routing by dialect buys: the per-dialect choice with a
non-inferiority margin, the routed WER and RTF, and routing's gain on held-out sentences. Also what
"cheaper" means everywhere in the advice (``_cost``)."""

from __future__ import annotations

from typing import Any

from speechbench.asr_eval import stats
from speechbench.asr_eval.analysis import PairingError, dialect_records, paired_arrays, speed_rtf
from speechbench.asr_eval.config import DEFAULT_MARGIN


def _ok(x: Any) -> bool:
    return isinstance(x, (int, float))


def _cost(s: dict[str, Any]) -> tuple[float, float, float]:
    """What "cheaper" means everywhere in the advice: median RTF (compute per second of audio, the cost
    that scales with traffic), then p95 latency, then peak memory; a missing figure counts as infinite."""
    return tuple(v if _ok(v) else float("inf")  # type: ignore[return-value]
                 for v in (speed_rtf(s), s.get("latency_ms_p95"), s.get("peak_memory_mb")))


def _wer(recs: list[dict]) -> float | None:
    words = sum(r["ref_words"] for r in recs)
    return sum(r["errors"] for r in recs) / words if words else None


def diff_ci_within(recs_m: list[dict], recs_ref: list[dict], n_boot: int, seed: int) -> list[float | None]:
    """95% CI of WER(m) - WER(ref) on the same utterances of one dialect, resampling sentences (a
    dialect's utterances are its sentences, read by its few voices). [None, None] if not paired."""
    try:
        a, b = paired_arrays(recs_m, recs_ref)
    except PairingError:
        return [None, None]
    res = stats.paired_bootstrap([r["errors"] for r in a], [r["errors"] for r in b], [r["ref_words"] for r in a],
                                 n_boot, seed, groups=[r["sentence"] for r in a])
    return res["diff_ci95"]


def best_per_dialect(by_model: dict[str, list[dict]], models: dict[str, dict[str, Any]], eligible: list[str],
                     margin: float = DEFAULT_MARGIN, n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per dialect (of the sets that compare dialects): the lowest-WER eligible model, or the cheapest
    model whose WER difference from it is non-inferior (CI upper end <= ``margin``). ``models``: the
    summary rows, for the cost."""
    recs = {m: dialect_records(by_model[m]) for m in eligible if by_model.get(m)}
    dialects = sorted({r["dialect"] for rs in recs.values() for r in rs})
    out: dict[str, dict[str, Any]] = {}
    for d in dialects:
        rows = {m: [r for r in rs if r["dialect"] == d] for m, rs in recs.items()}
        wer = {m: w for m, rs in rows.items() if rs and (w := _wer(rs)) is not None}
        if not wer:
            continue
        ranked = sorted(wer, key=lambda m: (wer[m], _cost(models[m])))
        best = ranked[0]
        row: dict[str, Any] = {"best": best, "wer": wer[best], "choice": best, "reason": "lowest WER",
                               "margin": margin}
        # the difference CI of the runner-up (reported) and of every cheaper model (candidates), once each
        cheaper = [m for m in ranked[1:] if _cost(models[m]) < _cost(models[best])]
        cis = {m: diff_ci_within(rows[m], rows[best], n_boot, seed) for m in dict.fromkeys(ranked[1:2] + cheaper)}
        if len(ranked) > 1:
            second = ranked[1]
            row.update({"runner_up": second, "runner_up_wer": wer[second], "runner_up_diff_ci95": cis[second]})
        ok = [(m, cis[m]) for m in cheaper if cis[m][1] is not None and cis[m][1] <= margin]
        if ok:
            m, ci = min(ok, key=lambda x: _cost(models[x[0]]))
            row.update({"choice": m, "choice_diff_ci95": ci,
                        "reason": (f"{m} is non-inferior to {best} here (WER difference 95% CI "
                                   f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] points, within the "
                                   f"{100 * margin:g}-point margin) and cheaper (median RTF, p95 latency, memory)")})
        out[d] = row
    return out


def routing(by_model: dict[str, list[dict]], choice: dict[str, str], fallback: str,
            sentences: set[str] | None = None) -> dict[str, Any]:
    """Expected WER and RTF when each dialect goes to its chosen model (pooled over the same utterances;
    ``sentences``: only these sentences' utterances), beside the single model on the same utterances."""
    def keep(r: dict) -> bool:
        return sentences is None or r["sentence"] in sentences

    err = words = audio = compute = 0.0
    for d, m in choice.items():
        for r in by_model[m]:
            if r["dialect"] == d and keep(r):
                err += r["errors"]
                words += r["ref_words"]
                audio += r["duration_s"]
                compute += r["latency_s"]
    single = [r for r in by_model[fallback] if r["dialect"] in choice and keep(r)]
    s_err, s_words = sum(r["errors"] for r in single), sum(r["ref_words"] for r in single)
    s_rtf = sum(r["latency_s"] for r in single) / max(1e-12, sum(r["duration_s"] for r in single))
    return {
        "routes": choice, "fallback_for_unknown_dialect": fallback,
        "models_used": sorted(set(choice.values())),
        "wer": err / words if words else None, "rtf": compute / audio if audio else None,
        "single_model": fallback, "single_model_wer": s_err / s_words if s_words else None,
        "single_model_rtf": s_rtf, "errors": err, "single_model_errors": s_err, "ref_words": words,
    }


def routing_heldout(by_model: dict[str, list[dict]], models: dict[str, dict[str, Any]], eligible: list[str],
                    fallback: str, margin: float = DEFAULT_MARGIN, n_boot: int = 2000, seed: int = 0
                    ) -> dict[str, Any] | None:
    """Routing's gain out of sample: the sentences split in two halves (alternate sentences of the sorted
    list); routes chosen on one half by ``best_per_dialect`` are scored on the other, both ways; pooled
    over the two scored halves, against the single model on the same utterances. (The single model is
    the overall recommendation, chosen on all utterances.)"""
    recs = {m: dialect_records(by_model[m]) for m in eligible if by_model.get(m)}
    if fallback not in recs:
        return None
    sentences = sorted({r["sentence"] for r in recs[fallback]})
    if len(sentences) < 4:
        return None
    halves = [set(sentences[0::2]), set(sentences[1::2])]
    folds = []
    for k in (0, 1):
        train = {m: [r for r in rs if r["sentence"] in halves[k]] for m, rs in recs.items()}
        choice = {d: row["choice"] for d, row in best_per_dialect(train, models, list(train), margin, n_boot,
                                                                  seed).items()}
        folds.append({"chosen_on": k, "scored_on": 1 - k, "sentences_scored": len(halves[1 - k]),
                      **routing(recs, choice, fallback, halves[1 - k])})
    err = sum(f["errors"] for f in folds)
    s_err = sum(f["single_model_errors"] for f in folds)
    words = sum(f["ref_words"] for f in folds)
    return {"wer": err / words if words else None, "single_model": fallback,
            "single_model_wer": s_err / words if words else None,
            "gain": (s_err - err) / words if words else None, "folds": folds,
            "rule": "routes chosen on alternate sentences (even / odd positions of the sorted list), scored on the "
                    "other half, both ways, pooled"}
