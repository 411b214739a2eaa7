"""The Part 1 report's figures (latency by length, the technique waterfall, scheduler throughput), drawn
from results/tts_benchmarks.json only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechbench.common.figures import save_figure


def make_plots(res: dict[str, Any], out_dir: Path, prefix: str = "tts") -> dict[str, str]:
    """Write the report's PNGs into ``out_dir``, named ``<prefix>_*.png`` so reports never share files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    base = res.get("baseline") or {}
    lat = res.get("latency") or {}
    # 1. latency by length category (log scale: the baseline is quadratic in length)
    if base.get("per_category") and lat:
        cats = list(base["per_category"].keys())
        series = {"seed baseline": base["per_category"]}
        for k, v in lat.items():
            series[k.replace("_", " ")] = v["per_category"]
        fig, ax = plt.subplots(figsize=(7, 4))
        w = 0.8 / len(series)
        for i, (name, pc) in enumerate(series.items()):
            vals = [pc.get(c, {}).get("p50", float("nan")) for c in cats]
            errs = [pc.get(c, {}).get("p95", float("nan")) - pc.get(c, {}).get("p50", 0) for c in cats]
            ax.bar([j + i * w for j in range(len(cats))], vals, w, yerr=[[0] * len(cats), errs], label=name,
                   capsize=3)
        ax.set_xticks([j + w * (len(series) - 1) / 2 for j in range(len(cats))], cats)
        ax.set_yscale("log")
        ax.set_ylabel("latency per text, ms (p50, bar to p95)")
        ax.set_title("Latency by input length")
        ax.legend(fontsize=8)
        made["latency"] = save_figure(fig, out_dir, f"{prefix}_latency_by_length.png")
    # 2. throughput by batch size and scheduler
    sweep = res.get("batch_sweep") or []
    sch = res.get("schedulers") or {}
    if sweep:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        bs = [r["batch_size"] for r in sweep]
        a1.plot(bs, [r["throughput_texts_per_s"] for r in sweep], "o-", label="texts/s")
        a1.set_xscale("log", base=2)
        a1.set_xlabel("batch size (one text repeated)")
        a1.set_ylabel("texts / s")
        a1b = a1.twinx()
        a1b.plot(bs, [r["latency_ms"] for r in sweep], "s--", color="tab:red", label="batch latency")
        a1b.set_ylabel("batch latency, ms", color="tab:red")
        a1.set_title("Batch size vs throughput and latency")
        if sch:
            names, vals = [], []
            kinds = [k for k in ("static", "static_bucketed", "continuous") if k in sch["all_at_once"]]
            for pattern in ("all_at_once", "poisson"):
                for s in kinds:
                    names.append(f"{s.replace('static_', '')}\n{pattern.replace('_', ' ')}")
                    vals.append(sch[pattern][s]["throughput_texts_per_s"])
            a2.bar(names, vals, color=["tab:gray", "tab:olive", "tab:blue"][-len(kinds):] * 2)
            a2.set_ylabel("texts / s")
            a2.set_title(f"Static (FIFO, bucketed) vs continuous ({sch['requests']} requests, {sch['slots']} slots)",
                         fontsize=9)
            a2.tick_params(axis="x", labelsize=8)
        made["throughput"] = save_figure(fig, out_dir, f"{prefix}_throughput.png")
    # 3. speedup waterfall
    wf = res.get("waterfall") or []
    if wf:
        fig, ax = plt.subplots(figsize=(8, 4))
        names = [w["technique"].replace(" (", "\n(") for w in wf]
        vals = [w["speedup_vs_first"] for w in wf]
        ax.bar(range(len(wf)), vals, color="tab:green")
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.1f}x", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(wf)), names, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("throughput vs seed baseline (x)")
        ax.set_title("Speedup as techniques are added (sample texts, same run)")
        made["waterfall"] = save_figure(fig, out_dir, f"{prefix}_waterfall.png")
    from speechbench.tts.report_ttfa import plot_ttfa

    made.update(plot_ttfa(res, out_dir, prefix))
    return made
