"""Part 1 (TTS benchmarks) runs compared: the headline ratios, latencies and throughputs in ``summary``.

Each figure has a direction (speedups and throughputs: higher is better; latencies and step times: lower
is better). Regression = a relative change beyond the latency tolerance in the bad direction, and
outside both runs' spreads where a run recorded one (``<key>_spread: [lo, hi]`` beside the figure).
"""

from __future__ import annotations

from typing import Any

from speechbench.compare.context import noise_lines
from speechbench.compare.figures import Comparison, Options, judge_relative
from speechbench.compare.loaders import TTS

# (summary key, label, higher is better, kind, noise sections that measured it)
FIGURES = [
    ("latency_speedup", "latency speedup (seed p50 / optimized p50)", True, "ratio", ["baseline", "latency"]),
    ("throughput_speedup", "throughput speedup (best batched / seed sequential)", True, "ratio",
     ["baseline", "waterfall"]),
    ("optimized_latency_ms_p50", "optimized latency p50 (headline text)", False, "ms", ["baseline", "latency"]),
    ("optimized_latency_ms_p95", "optimized latency p95 (headline text)", False, "ms", ["baseline", "latency"]),
    ("optimized_latency_ms_mean_all_texts", "optimized latency mean (all texts)", False, "ms", ["latency"]),
    ("optimized_latency_ms_p95_all_texts", "optimized latency p95 (all texts)", False, "ms", ["latency"]),
    ("optimized_throughput_per_s", "optimized throughput (texts/s)", True, "plain", ["waterfall"]),
    ("optimized_throughput_audio_s_per_s", "optimized throughput (audio s/s)", True, "plain", ["waterfall"]),
    ("continuous_vs_static_throughput", "continuous / static batching throughput", True, "ratio", ["schedulers"]),
    ("continuous_vs_static_throughput_poisson", "continuous / static throughput (Poisson arrivals)", True,
     "ratio", ["schedulers"]),
    ("continuous_vs_best_static_throughput", "continuous / better static batcher (median of draws)", True,
     "ratio", ["schedulers"]),
    ("decode_step_ms_batch1", "decode step at batch 1", False, "ms", ["batch_sweep"]),
]
# Shown as context only: the seed baseline measures the machine, memory and fidelity are not timing.
CONTEXT = [("baseline_latency_ms_p50", "seed baseline latency p50 (ms)"),
           ("baseline_throughput_per_s", "seed baseline throughput (texts/s)"),
           ("optimized_peak_memory_mb", "optimized peak memory (MB)"),
           ("fidelity_reduced_precision_mcd_db", "reduced-precision fidelity, MCD (dB)"),
           ("precision", "precision")]


def compare_tts(base: dict[str, Any], new: dict[str, Any], opts: Options) -> Comparison:
    comp = Comparison(TTS)
    sb, sn = base["summary"], new["summary"]
    for key, label, higher, kind, sections in FIGURES:
        if key not in sb and key not in sn:
            continue
        comp.figures.append(judge_relative(
            label, sb.get(key), sn.get(key), higher_is_better=higher, tolerance=opts.latency_tolerance,
            old_spread=sb.get(f"{key}_spread"), new_spread=sn.get(f"{key}_spread"), kind=kind, sections=sections))
    ctx = [f"{label}: {_fmt(sb.get(key))} -> {_fmt(sn.get(key))}" for key, label in CONTEXT
           if key in sb or key in sn]
    if ctx:
        comp.context.append("Not gated: " + "; ".join(ctx) + ".")
    comp.context.extend(noise_lines(base, new))
    return comp


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
