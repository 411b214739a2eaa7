"""Render docs/tts_report.md (and its plots) from results/tts_benchmarks.json, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechbench.common.fmt import commit, commit_line, generated_from, sci
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct
from speechbench.common.noise import noise_markdown
from speechbench.common.report_page import failed_sections, render_page
from speechbench.tts import report_sections as sections
from speechbench.tts import report_ttfa
from speechbench.tts.plots import make_plots


def render(res: dict[str, Any], report_path: Path, plots: bool = True) -> str:
    return render_page(res, report_path, SECTIONS, make_plots, plots)


def _header(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Title, provenance, machine noise and the model under test."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    env = res.get("env", {})
    add("# Part 1: optimized autoregressive TTS inference")
    add("")
    add(generated_from(res, "optimized_tts_inference.py", "results/tts_benchmarks.json"))
    add("")
    add(f"- Device: **{s.get('device')}** ({env.get('device_name')}), {env.get('cpu_count')} CPU threads "
        f"visible, torch {env.get('torch')}, Python {env.get('python')}")
    add(commit_line(res))
    L.extend(noise_markdown(res))
    m = res.get("model", {})
    add(f"- Model: {m.get('name')}, {_f(m.get('params', 0) / 1e6, 1)} M parameters, weights: {m.get('weights')}")
    lp = m.get("length_policy", {})
    add(f"- Output length: {lp.get('frames_per_char', 0):.2f} frames per character, clamped to "
        f"{lp.get('max_frames')} frames; stop head honoured: {lp.get('honor_stop')}. Audio seconds = frames x "
        f"hop / sample rate ({_f(m.get('frames_per_second'), 2)} frames/s).")
    if s.get("quick"):
        add("- **This is a `--quick` smoke run**: tiny sizes, numbers are not for citing.")
    add("")
    return L


def _headline_table(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """The headline table: every summary figure a reader would cite."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    add("## Headline")
    add("")
    add("| metric | value |")
    add("|---|---|")
    rows = [
        ("text used for single-request latency", f"{s.get('latency_text_chars')} characters, "
         f"{s.get('latency_text_frames')} frames"),
        ("seed baseline latency p50", _f(s.get("baseline_latency_ms_p50"), 0, " ms")),
        (f"optimized latency p50 / p95 ({s.get('precision')}, KV cache"
         + (f"; {len(res.get('baseline', {}).get('headline_optimized', {}).get('latency_s', []))} runs in groups "
            "before, between and after the baseline's runs of the same text, so both sides share the machine's "
            "state" if s.get("latency_interleaved_with_baseline") else "") + ")",
         f"{_f(s.get('optimized_latency_ms_p50'), 0, ' ms')} / {_f(s.get('optimized_latency_ms_p95'), 0, ' ms')}"),
        ("**latency speedup**", _f(s.get("latency_speedup"), 1, "x")
         + (f" (median of the pairs, each baseline run vs its neighbouring optimized runs: "
            f"{', '.join(_f(x, 1, 'x') for x in s['latency_speedup_pairs'])}; median baseline / median optimized: "
            f"{_f(s.get('latency_speedup_ratio_of_medians'), 1, 'x')})"
            if s.get("latency_speedup_pairs") else " (median baseline / median optimized)")),
        ("**time to first audio p95, streaming** (lowest rate tried; knee where p95 passes "
         f"{_f(s.get('ttfa_target_ms'), 0, ' ms')}: first rate over)",
         "; ".join(f"{k}: {_f(v, 0, ' ms')} (knee {_f((s.get('ttfa_knee_rate_per_s') or {}).get(k), 2, '/s')})"
                   for k, v in (s.get("ttfa_ms_p95_lowest_rate") or {}).items()) or "n/a"),
        ("model weights: seed fp32 / optimized; KV cache preallocated",
         f"{_f((s.get('model_weight_bytes_baseline') or 0) / 2**20, 1, ' MiB')} / "
         f"{_f((s.get('model_weight_bytes_optimized') or 0) / 2**20, 1, ' MiB')} "
         f"({_pct(s.get('model_weight_bytes_reduction'))} less: the seed's 50% memory target "
         f"{'reached' if s.get('weights_reach_50pct_reduction') else 'not reached'} by the weights); "
         f"{_f((s.get('kv_cache_bytes_peak') or 0) / 2**20, 1, ' MiB')} for {s.get('kv_cache_slots')} slots x "
         f"{s.get('kv_cache_max_frames')} frames"),
        ("seed baseline throughput (sample texts)", _f(s.get("baseline_throughput_per_s"), 3, " texts/s")),
        (f"optimized throughput ({s.get('optimized_throughput_engine')})",
         f"{_f(s.get('optimized_throughput_per_s'), 2, ' texts/s')}, "
         f"{_f(s.get('optimized_throughput_audio_s_per_s'), 1, ' audio-s/s')}"),
        ("**throughput speedup**", _f(s.get("throughput_speedup"), 1, "x") + (
            f" (median of {len(s['optimized_throughput_runs'])} optimized runs, range "
            f"{'-'.join(_f(x, 1, 'x') for x in s['throughput_speedup_spread'])}, against one baseline pass)"
            if s.get("throughput_speedup_spread") else "")),
        ("continuous / static batching throughput (mixed lengths, all at once)",
         _f(s.get("continuous_vs_static_throughput"), 2, "x")),
        ("continuous / static batching throughput (Poisson arrivals)",
         _f(s.get("continuous_vs_static_throughput_poisson"), 2, "x")),
        (f"**continuous / better of FIFO and length-bucketed static** (median of "
         f"{s.get('continuous_vs_best_static_draws')} draws, all at once; target > 1.1x)",
         f"{_f(s.get('continuous_vs_best_static_throughput'), 2, 'x')} (range "
         f"{'-'.join(_f(x, 2, 'x') for x in s.get('continuous_vs_best_static_throughput_spread') or [])}; "
         f"step bound {_f(s.get('continuous_vs_best_static_step_bound'), 2, 'x')}); Poisson: "
         f"{_f(s.get('continuous_vs_best_static_throughput_poisson'), 2, 'x')}"),
        ("fp32 KV-cached vs causal reference: max abs mel diff", sci(s.get("fidelity_fp32_max_abs_mel_diff"))),
        ("fp32 frame-count agreement", _f(s.get("fidelity_fp32_frame_agreement"), 2)),
        ("reduced precision: worst relative L2 / MCD", f"{_f(s.get('fidelity_reduced_precision_rel_l2'), 4)} / "
         f"{_f(s.get('fidelity_reduced_precision_mcd_db'), 2, ' dB')}"),
        (f"peak memory, baseline / optimized batched ({s.get('peak_memory_kind')})",
         f"{_f(s.get('baseline_peak_memory_mb'), 0, ' MB')} / {_f(s.get('optimized_peak_memory_mb'), 0, ' MB')}"),
        ("decode step at batch 1 / weight bandwidth achieved",
         f"{_f(s.get('decode_step_ms_batch1'), 2, ' ms')} / {_f(s.get('bandwidth_gb_s_batch1'), 1, ' GB/s')}"),
    ]
    for k, v in rows:
        add(f"| {k} | {v} |")
    add("")
    return L



def _closing_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Production notes, run notes and how to reproduce."""
    L: list[str] = []
    add = L.append
    add("## Production notes")
    add("")
    add(_production_section(res))
    if res.get("notes"):
        add("")
        add("Run notes:")
        add("")
        for n in res["notes"]:
            add(f"- {n}")
    add("")
    add("## Reproduce")
    add("")
    add("```")
    add("uv run optimized_tts_inference.py            # this report's defaults")
    add("uv run optimized_tts_inference.py --report-only   # re-render this page from the JSON")
    add("```")
    return L


# The report's sections in page order; each returns its Markdown lines.
SECTIONS = (_header, _headline_table, failed_sections, sections.latency_section, sections.waterfall_section,
            sections.scheduler_section, report_ttfa.ttfa_section,
            sections.batch_sweep_section, sections.fidelity_section,
            sections.profile_section, sections.memory_section, sections.edge_case_section, _closing_section)


def _production_section(res: dict[str, Any]) -> str:
    sweep = res.get("batch_sweep") or []
    sch = res.get("schedulers") or {}
    s = res.get("summary", {})
    lines = []
    if sch:
        p = sch["poisson"]["continuous"]
        lines.append(
            f"- **Concurrent requests.** Serve with the continuous scheduler: at {_f(sch['poisson']['rate_per_s'], 2)} "
            f"requests/s of Poisson traffic it held p95 latency at {_f(p['latency_ms_p95'], 0)} ms with "
            f"{_f(p['mean_active_slots'], 1)} slots busy on average. Size the slot pool so the arrival rate stays "
            "below ~70-80% of measured capacity; past it, queueing delay grows without bound, so admit with a "
            "bounded queue and shed (or degrade to a cheaper voice) rather than let latency run away.")
    if sweep:
        per_slot_mb = sweep[-1]["cache_mb"] / max(1, sweep[-1]["batch_size"])
        wmb = sweep[0]["weight_bytes_per_step"] / 2**20
        fits = {gb: int((gb * 1024 * 0.8 - wmb) / per_slot_mb) for gb in (16, 24, 40, 80)}
        lines.append(
            f"- **Memory across GPU types.** Weights read per step: {_f(wmb, 0)} MB at this precision; KV + "
            f"cross cache per slot: {_f(per_slot_mb, 1)} MB at the 500-frame maximum (fp32 cache; halve it "
            f"for fp16). With 80% of memory for caches that is roughly "
            + ", ".join(f"{v:,} slots on a {k} GB card" for k, v in fits.items())
            + ": memory does not limit batch size for this model, step time does.")
    lines.append(
        "- **Fallbacks.** Every optimization is a switch (`--precision`, `--slots`, `--compile`). "
        "`torch.compile` failures (no compiler, an unsupported op, a first-run error) fall back to the eager "
        "engine and are listed under run notes; int8 needs the fbgemm/x86 engine (CPU only); fp16 needs CUDA. "
        "The causal reference is the ground truth any new optimization must match before it ships.")
    if s.get("device") == "cpu":
        lines.append(
            "- **On this CPU** a decode step is memory-bound at small batch (the weights are re-read every "
            "frame), which is why int8 weights (4x fewer bytes) and batching (one weight read per step for many "
            "sequences) are the two big levers; the GPU path adds fp16/bf16 autocast, a static cache and "
            "CUDA graphs via `torch.compile(mode=\"reduce-overhead\")` to remove per-kernel launch overhead.")
    return "\n".join(lines)


def headline_markdown(res: dict[str, Any]) -> str:
    """The few figures the README quotes, rendered from the JSON."""
    s = res.get("summary", {})
    env = res.get("env", {})
    return "\n".join([
        f"Latest full run: {s.get('device')} ({env.get('device_name')}, {env.get('cpu_count')} threads), "
        f"commit {commit(env, 10)}, {env.get('time_utc')}, precision {s.get('precision')}.",
        "",
        "| | seed baseline | optimized | gain |",
        "|---|---|---|---|",
        f"| latency p50, {s.get('latency_text_chars')}-char text | {_f(s.get('baseline_latency_ms_p50'), 0, ' ms')} | "
        f"{_f(s.get('optimized_latency_ms_p50'), 0, ' ms')} (p95 {_f(s.get('optimized_latency_ms_p95'), 0, ' ms')}) | "
        f"{_f(s.get('latency_speedup'), 1, 'x')} |",
        f"| throughput, sample texts | {_f(s.get('baseline_throughput_per_s'), 3, ' texts/s')} | "
        f"{_f(s.get('optimized_throughput_per_s'), 2, ' texts/s')} | {_f(s.get('throughput_speedup'), 1, 'x')} |",
        f"| continuous vs static batching (mixed lengths) | | | "
        f"{_f(s.get('continuous_vs_static_throughput'), 2, 'x')} |",
        f"| continuous vs the better of FIFO / length-bucketed static (median of draws) | | | "
        f"{_f(s.get('continuous_vs_best_static_throughput'), 2, 'x')} |",
        f"| streaming: TTFA p95 at the lowest rate tried; knee rate (TTFA p95 > {_f(s.get('ttfa_target_ms'), 0)} ms) "
        "| | " + "; ".join(f"{k}: {_f(v, 0, ' ms')}, knee {_f((s.get('ttfa_knee_rate_per_s') or {}).get(k), 2, '/s')}"
                           for k, v in (s.get("ttfa_ms_p95_lowest_rate") or {}).items()) + " | |",
        f"| fidelity: fp32 max abs mel diff / reduced-precision rel L2 | | "
        f"{sci(s.get('fidelity_fp32_max_abs_mel_diff'))} / {_f(s.get('fidelity_reduced_precision_rel_l2'), 4)} | |",
        f"| peak memory ({s.get('peak_memory_kind')}) | {_f(s.get('baseline_peak_memory_mb'), 0, ' MB')} | "
        f"{_f(s.get('optimized_peak_memory_mb'), 0, ' MB')} | |",
    ])
