"""The Part 3 report's figures (latency and throughput against the number of streams), drawn from
results/streaming_performance.json only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechbench.common.figures import save_figure


def make_plots(res: dict[str, Any], out_dir: Path, prefix: str = "streaming") -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    sweep = res.get("sweep") or []
    base = res.get("baseline") or []
    bound = res.get("config", {}).get("latency_bound_ms", 100)
    if sweep:
        fig, ax = plt.subplots(figsize=(7, 4))
        n = [r["streams"] for r in sweep]
        for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            ax.plot(n, [r[f"chunk_latency_ms_{key}"] for r in sweep], style, label=f"engine {key}")
        if base:
            ax.plot([r["streams"] for r in base], [r["chunk_latency_ms_p95"] for r in base], "x--",
                    color="tab:gray", label="per-stream baseline p95")
        ax.axhline(bound, color="tab:red", ls=":", label=f"{bound:g} ms bound")
        for r in sweep:
            if r["shed_chunks"] or r["refused_streams"]:
                ax.annotate("shed/refused", (r["streams"], r["chunk_latency_ms_p95"] or 0), fontsize=7,
                            textcoords="offset points", xytext=(3, 6))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("chunk latency, ms")
        ax.set_title("Chunk latency vs load (arrival of audio -> its partial)")
        ax.legend(fontsize=8)
        made["latency"] = save_figure(fig, out_dir, f"{prefix}_latency.png")
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(n, [r.get("throughput_audio_s_per_s") or 0 for r in sweep], "o-", label="engine")
        if base:
            a1.plot([r["streams"] for r in base], [r.get("throughput_audio_s_per_s") or 0 for r in base], "x--",
                    color="tab:gray", label="per-stream baseline")
        a1.plot(n, n, ":", color="black", lw=0.8, label="offered (real time)")
        a1.set_xscale("log")
        a1.set_yscale("log")
        a1.set_xlabel("concurrent streams")
        a1.set_ylabel("audio seconds processed per second")
        a1.set_title("Throughput")
        a1.legend(fontsize=8)
        a2.plot(n, [r.get("batch_size_mean") or 0 for r in sweep], "o-", label="mean batch size")
        a2.set_xscale("log")
        a2.set_yscale("log")
        a2.set_xlabel("concurrent streams")
        a2.set_ylabel("streams per model step")
        a2b = a2.twinx()
        a2b.plot(n, [r.get("batch_utilization") or 0 for r in sweep], "s--", color="tab:green",
                 label="utilization")
        a2b.set_ylim(0, 1.05)
        a2b.set_ylabel("batch utilization", color="tab:green")
        a2.set_title("Batching")
        made["throughput"] = save_figure(fig, out_dir, f"{prefix}_throughput.png")
    from speechbench.streaming.report_real import frontier_plot

    made.update(frontier_plot(res, out_dir, prefix))
    return made
