"""Part 3 (streaming) runs compared: capacity, chunk latency per sweep level, single-stream latencies,
and the same per compared model.

* Capacity (``summary.max_streams_p95_under_100ms``, the engine's largest sustained sweep level, and each
  other model's ``max_sustained_streams``): a drop of at least one sweep level NEW actually tried is a
  regression (``figures.judge_capacity``).
* Latencies (chunk latency p50/p95 at every level sustained in either run, first partial and finalization
  p95, RTF): a relative rise beyond the latency tolerance, outside both runs' spreads where recorded.

* Network capacity (``summary.network.max_streams_p95_under_100ms``: WebSocket clients against ``serve``),
  judged like the engine's; its levels are fractions of each run's in-process capacity, so two runs often
  tried different stream counts and the figure is then not comparable. The share of in-process capacity
  and the 2x overload outcome are context lines.

``summary.models[0]`` is the engine the sweep measured (the same numbers as the sweep rows), so only the
other models get rows of their own.
"""

from __future__ import annotations

from typing import Any

from speechbench.compare.context import noise_lines
from speechbench.compare.figures import (
    NOT_COMPARABLE,
    Comparison,
    Figure,
    Options,
    judge_capacity,
    judge_relative,
)
from speechbench.compare.loaders import STREAMING

LEVEL_KEYS = [("chunk_latency_ms_p50", "chunk latency p50"), ("chunk_latency_ms_p95", "chunk latency p95")]
SINGLE_KEYS = [("first_partial_ms_p95", "first partial p95", "ms"), ("finalization_ms_p95", "finalization p95", "ms"),
               ("rtf", "RTF", "plain")]
MODEL_KEYS = [("chunk_latency_ms_p50", "chunk latency p50 (1 stream)", "ms"),
              ("chunk_latency_ms_p95", "chunk latency p95 (1 stream)", "ms"),
              ("first_partial_ms_p95", "first partial p95", "ms"), ("finalization_ms_p95", "finalization p95", "ms"),
              ("rtf", "RTF", "plain")]


def _runs(summary: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {r.get("streams"): r for r in summary.get("runs") or [] if isinstance(r, dict)}


def _tried(levels: Any, attempts: Any) -> list[Any]:
    """Every stream count a run tried: its coarse levels plus the capacity search's confirm and bisect runs
    (a confirmed capacity between coarse levels was tried there, so a drop from it can be judged)."""
    extra = [a.get("streams") for a in attempts or [] if isinstance(a, dict)]
    return sorted({lv for lv in [*(levels or []), *extra] if isinstance(lv, int | float)})


def _model_attempts(run: dict[str, Any], name: str) -> list[Any]:
    return ((((run.get("models") or {}).get(name) or {}).get("capacity") or {}).get("sweep") or {}).get("attempts")


def _rel(opts: Options, label: str, a: dict[str, Any], b: dict[str, Any], key: str, kind: str,
         sections: list[str]) -> Figure:
    return judge_relative(label, a.get(key), b.get(key), higher_is_better=False, tolerance=opts.latency_tolerance,
                          old_spread=a.get(f"{key}_spread"), new_spread=b.get(f"{key}_spread"), kind=kind,
                          sections=sections)


def engine_figures(sb: dict[str, Any], sn: dict[str, Any], opts: Options) -> list[Figure]:
    bound = sb.get("latency_bound_ms", 100)
    rb, rn = _runs(sb), _runs(sn)
    figs = [judge_capacity(f"engine capacity: streams with p95 chunk latency < {bound:g} ms",
                           sb.get("max_streams_p95_under_100ms"), sn.get("max_streams_p95_under_100ms"),
                           _tried(rb, (sb.get("capacity_repeats") or {}).get("sweep")),
                           _tried(rn, (sn.get("capacity_repeats") or {}).get("sweep")), sections=["sweep"])]
    levels = sorted({lv for lv in [*rb, *rn] if isinstance(lv, int | float)})
    for lv in levels:
        a, b = rb.get(lv), rn.get(lv)
        if not ((a or {}).get("sustained") or (b or {}).get("sustained")):
            continue  # beyond capacity in both runs: its latency measures overload, not the engine
        for key, label in LEVEL_KEYS:
            name = f"engine @ {lv:g} streams: {label}"
            if a is None or b is None or not (a.get("sustained") and b.get("sustained")):
                why = "not swept" if a is None or b is None else "not sustained"
                role = "BASE" if (a is None or not a.get("sustained")) else "NEW"
                figs.append(Figure(name, (a or {}).get(key), (b or {}).get(key), NOT_COMPARABLE, kind="ms",
                                   note=f"{why} in {role} (see capacity)", sections=["sweep"]))
                continue
            figs.append(_rel(opts, name, a, b, key, "ms", ["sweep"]))
    one_b, one_n = sb.get("single_stream") or {}, sn.get("single_stream") or {}
    for key, label, kind in SINGLE_KEYS:
        if key in one_b or key in one_n:
            figs.append(_rel(opts, f"engine, 1 stream: {label}", one_b, one_n, key, kind, ["sweep"]))
    return figs


def network_figures(sb: dict[str, Any], sn: dict[str, Any]) -> list[Figure]:
    nb, nn = sb.get("network") or {}, sn.get("network") or {}
    if not nb and not nn:
        return []
    name = f"network capacity: WebSocket streams with client p95 < {sb.get('latency_bound_ms', 100):g} ms"
    if not nb or not nn:
        return [Figure(name, None, None, NOT_COMPARABLE, kind="streams", sections=["network"],
                       note=f"no network section in {'BASE' if not nb else 'NEW'}")]
    return [judge_capacity(name, nb.get("max_streams_p95_under_100ms"), nn.get("max_streams_p95_under_100ms"),
                           _tried(nb.get("levels_tested"), nb.get("capacity_repeats")),
                           _tried(nn.get("levels_tested"), nn.get("capacity_repeats")), sections=["network"])]


def network_context(sb: dict[str, Any], sn: dict[str, Any]) -> list[str]:
    nb, nn = sb.get("network") or {}, sn.get("network") or {}
    if not nb or not nn:
        return []

    def share(n: dict[str, Any]) -> str:
        v = n.get("share_of_in_process")
        return f"{100 * v:.1f}%" if isinstance(v, int | float) else "?"

    def overload(n: dict[str, Any]) -> str:
        return f"{n.get('refused_streams_at_2x')} refused, admitted p95 {_fmt(n.get('admitted_p95_ms_at_2x'))} ms"

    return [f"Network (not gated beyond capacity): share of in-process capacity {share(nb)} -> {share(nn)}; "
            f"at 2x {overload(nb)} -> {overload(nn)}."]


def model_figures(base: dict[str, Any], new: dict[str, Any], opts: Options) -> list[Figure]:
    sb, sn = base["summary"], new["summary"]
    mb = {m.get("model"): m for m in (sb.get("models") or [])[1:] if isinstance(m, dict)}
    mn = {m.get("model"): m for m in (sn.get("models") or [])[1:] if isinstance(m, dict)}
    figs = []
    for name in dict.fromkeys([*mb, *mn]):
        a, b = mb.get(name), mn.get(name)
        sections = [f"model:{name}"]
        if a is None or b is None or a.get("failed") or b.get("failed"):
            role = "BASE" if a is None or a.get("failed") else "NEW"
            figs.append(Figure(f"{name}: capacity (streams within {_bound(a or b)} ms)",
                               None, None, NOT_COMPARABLE, kind="streams",
                               note=f"{'absent' if (a if role == 'BASE' else b) is None else 'failed'} in {role}"))
            continue
        figs.append(judge_capacity(f"{name}: capacity (streams within {_bound(a)} ms)",
                                   a.get("max_sustained_streams"), b.get("max_sustained_streams"),
                                   _tried(a.get("levels_tested"), _model_attempts(base, name)),
                                   _tried(b.get("levels_tested"), _model_attempts(new, name)), sections=sections))
        for key, label, kind in MODEL_KEYS:
            if key in a or key in b:
                figs.append(_rel(opts, f"{name}: {label}", a, b, key, kind, sections))
    return figs


def compare_streaming(base: dict[str, Any], new: dict[str, Any], opts: Options) -> Comparison:
    comp = Comparison(STREAMING)
    sb, sn = base["summary"], new["summary"]
    comp.figures.extend(engine_figures(sb, sn, opts))
    comp.figures.extend(network_figures(sb, sn))
    comp.figures.extend(model_figures(base, new, opts))
    ctx = []
    for key, label in (("baseline_max_streams_p95_under_100ms", "per-stream baseline capacity"),
                       ("wer_streaming", "engine streaming WER"), ("wer_offline", "engine offline WER"),
                       ("peak_memory_mb", "peak memory (MB)")):
        if key in sb or key in sn:
            ctx.append(f"{label}: {_fmt(sb.get(key))} -> {_fmt(sn.get(key))}")
    if ctx:
        comp.context.append("Not gated (streaming WER has no per-utterance errors to pair, the baseline measures "
                            "the machine): " + "; ".join(ctx) + ".")
    comp.context.extend(network_context(sb, sn))
    comp.context.extend(noise_lines(base, new))
    return comp


def _bound(row: dict[str, Any] | None) -> str:
    v = (row or {}).get("latency_bound_ms")
    return f"{v:g}" if isinstance(v, int | float) else "?"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
