"""The Part 1 report's streaming-synthesis section: time to first audio and underruns vs arrival rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechbench.common.figures import save_figure
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct

NAMES = {"continuous": "continuous", "static": "static (FIFO)", "static_bucketed": "static (length-bucketed)"}


def plot_ttfa(res: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, str]:
    """TTFA p95 (and p50, dashed) against the arrival rate, per scheduler, with the target line."""
    t = res.get("ttfa") or {}
    levels = t.get("levels") or []
    if not levels:
        return {}
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    rates = [lv["rate_per_s"] for lv in levels]
    for name, color in (("continuous", "tab:green"), ("static", "tab:red"), ("static_bucketed", "tab:orange")):
        if name not in levels[0]:
            continue
        ax.plot(rates, [lv[name]["ttfa_ms_p95"] for lv in levels], "o-", color=color, label=f"{NAMES[name]} p95")
        ax.plot(rates, [lv[name]["ttfa_ms_p50"] for lv in levels], "--", color=color, alpha=0.6,
                label=f"{NAMES[name]} p50")
    ax.axhline(t.get("target_ttfa_ms", 200), color="k", lw=0.8, ls=":", label="target")
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate, requests/s (open-loop Poisson)")
    ax.set_ylabel("time to first audio, ms (log)")
    ax.set_title("Streaming synthesis: time to first audio under load")
    ax.legend(fontsize=7)
    return {"ttfa": save_figure(fig, out_dir, f"{prefix}_ttfa_vs_rate.png")}


def ttfa_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    L: list[str] = []
    add = L.append
    t = res.get("ttfa") or {}
    levels = t.get("levels") or []
    if not levels:
        return L
    add("## Streaming synthesis: time to first audio under load")
    add("")
    add(f"Audio leaves in chunks of {t['chunk_frames']} frames ({_f(t['chunk_ms'], 0)} ms of audio) while the "
        f"decoder runs: each chunk is vocoded over its frames plus {t['context_frames']} frames of context on "
        "either side, so the joined chunks equal the one-shot vocoder output (tested), and a chunk leaves once "
        f"its right context is decoded. Static side: {NAMES.get((t.get('schedulers') or ['', ''])[1], 'n/a')}, "
        f"{t.get('static_choice', '')}. {t['requests_per_rate']} requests per rate ({t['workload']}), "
        f"{t['slots']} slots, output clamped to {t['max_frames']} frames; rates are fractions of the continuous "
        f"batcher's capacity measured first on these requests, all at once ({_f(t['capacity_texts_per_s'], 2)} "
        f"requests/s); times are {t['clock']}. "
        f"TTFA = first chunk sent - arrival. Underrun: {t['underrun']}. One request's prefill (text encoder "
        f"and cross-attention K/V, fp32) takes {_f(t.get('prefill_ms_single_median'), 0, ' ms')} (median of 5): "
        "TTFA cannot go below it plus a chunk's decode steps, and while it runs no other stream steps.")
    add("")
    if "ttfa" in figs:
        add(f"![TTFA vs rate]({rel}/{figs['ttfa']})")
        add("")
    add("| rate /s (load) | scheduler | TTFA p50 ms | TTFA p95 ms | underrun share | worst underrun ms | "
        "completed /s | latency p95 ms |")
    add("|---|---|---|---|---|---|---|---|")
    for lv in levels:
        for name in ("continuous", "static", "static_bucketed"):
            x = lv.get(name)
            if not x:
                continue
            add(f"| {_f(lv['rate_per_s'], 2)} ({lv['load_fraction']:.0%}) | {NAMES[name]} | "
                f"{_f(x.get('ttfa_ms_p50'), 0)} | {_f(x.get('ttfa_ms_p95'), 0)} | "
                f"{_pct(x.get('underrun_share'), 0)} | {_f(x.get('underrun_ms_max'), 0)} | "
                f"{_f(x.get('completed_per_s'), 2)} | {_f(x.get('latency_ms_p95'), 0)} |")
    add("")
    knee = t.get("knee") or {}
    if knee:
        parts = []
        for name, k in knee.items():
            over, within = k.get("first_rate_over_target"), k.get("last_rate_within_target")
            if over is None:
                parts.append(f"{NAMES[name]}: TTFA p95 within {_f(t['target_ttfa_ms'], 0)} ms at every rate tried "
                             f"(up to {_f(levels[-1]['rate_per_s'], 2)}/s)")
            elif within is None:
                parts.append(f"{NAMES[name]}: over {_f(t['target_ttfa_ms'], 0)} ms already at the lowest rate, "
                             f"{_f(over, 2)}/s")
            else:
                low = ", ".join(_f(r, 2) for r in k.get("lower_rates_over_target") or [])
                parts.append(f"{NAMES[name]}: knee between {_f(within, 2)} and {_f(over, 2)} requests/s"
                             + (f" (p95 also over at the lower rate(s) {low}: the p95 of a few requests at low "
                                "load)" if low else ""))
        add("**Knee** (TTFA p95 crossing " + f"{_f(t['target_ttfa_ms'], 0)} ms): " + "; ".join(parts) + ".")
        add("")
    return L
