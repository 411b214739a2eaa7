"""Render docs/tts_report.md (and its plots) from results/tts_benchmarks.json, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from speechbench.common.figures import save_figure
from speechbench.common.fmt import commit, commit_line, generated_from
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct
from speechbench.common.noise import noise_markdown
from speechbench.common.results import write_text_atomic


def _poisson_scope(sch: dict) -> str:
    n = sch["poisson"].get("requests", sch["requests"])
    return "all of them" if n == sch["requests"] else f"the first {n}"


def _e(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2e}"


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
    return made


def render(res: dict[str, Any], report_path: Path, plots: bool = True) -> str:
    s = res.get("summary", {})
    env = res.get("env", {})
    report_path = Path(report_path)
    figs = make_plots(res, report_path.parent / "figures", prefix=report_path.stem) if plots else {}
    rel = os.path.relpath(report_path.parent / "figures", report_path.parent)
    L: list[str] = []
    add = L.append
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
         + (f" (median baseline / median optimized; each baseline run vs its neighbouring optimized runs: "
            f"{', '.join(_f(x, 1, 'x') for x in s['latency_speedup_pairs'])})" if s.get("latency_speedup_pairs") else "")),
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
        ("fp32 KV-cached vs causal reference: max abs mel diff", _e(s.get("fidelity_fp32_max_abs_mel_diff"))),
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
    if res.get("failures"):
        add("**Failed sections** (recorded, the rest ran):")
        for f in res["failures"]:
            add(f"- `{f['section']}`: {f['error']}")
        add("")
    # Latency by category
    base = res.get("baseline") or {}
    lat = res.get("latency") or {}
    if base.get("per_category"):
        add("## Latency by input length")
        add("")
        if "latency" in figs:
            add(f"![latency by length]({rel}/{figs['latency']})")
            add("")
        add("| category | engine | n | mean ms | p50 ms | p95 ms |")
        add("|---|---|---|---|---|---|")
        for cat, st in base["per_category"].items():
            add(f"| {cat} | seed baseline | {st['n']} | {_f(st['mean'], 0)} | {_f(st['p50'], 0)} | {_f(st['p95'], 0)} |")
            for name, v in lat.items():
                c = v["per_category"].get(cat)
                if c:
                    add(f"| {cat} | {name} | {c['n']} | {_f(c['mean'], 0)} | {_f(c['p50'], 0)} | {_f(c['p95'], 0)} |")
        add("")
        add("Per text (median over repeats):")
        add("")
        add("| id | chars | frames | baseline ms | " + " | ".join(f"{k} ms" for k in lat) + " |")
        add("|---|---|---|---|" + "---|" * len(lat))
        for row in base["per_text"]:
            cells = []
            for v in lat.values():
                o = v["per_text"][row["id"]]
                cells.append(_f(1e3 * sorted(o["latency_s"])[len(o["latency_s"]) // 2], 0))
            b = sorted(row["latency_s"])[len(row["latency_s"]) // 2]
            add(f"| {row['id']} | {row['chars']} | {row['frames']} | {_f(1e3 * b, 0)} | " + " | ".join(cells) + " |")
        add("")
    wf = res.get("waterfall") or []
    if wf:
        add("## What each technique buys")
        add("")
        if "waterfall" in figs:
            add(f"![waterfall]({rel}/{figs['waterfall']})")
            add("")
        add("Throughput on the sample texts (all served, same run), as techniques are added one at a time:")
        add("")
        add("| technique | texts/s | vs seed baseline | this step |")
        add("|---|---|---|---|")
        for w in wf:
            add(f"| {w['technique']} | {_f(w['throughput_texts_per_s'], 3)} | {_f(w['speedup_vs_first'], 1)}x | "
                f"{_f(w['step_gain'], 2)}x |")
        add("")
    sch = res.get("schedulers") or {}
    if sch:
        add("## Static vs continuous batching")
        add("")
        add(f"{sch['requests']} requests ({sch.get('workload', 'sample texts')}), output lengths "
            f"{min(sch['request_frames'])}-{max(sch['request_frames'])} frames, {sch['slots']} slots. Poisson "
            f"arrivals ({_poisson_scope(sch)}) at {_f(sch['poisson']['rate_per_s'], 2)} requests/s "
            f"({sch['poisson']['load_fraction']:.0%} of the measured continuous capacity).")
        if sch.get("clock"):
            add(f"The schedulers took turns on the machine, one iteration each; times are {sch['clock']}. "
                "`static_bucketed` is the strong static baseline: it knows each request's output length (as a "
                "server with a duration predictor would) and batches requests of similar length, anchored on "
                "the oldest waiting one.")
        add("")
        if "throughput" in figs:
            add(f"![throughput]({rel}/{figs['throughput']})")
            add("")
        add("| arrivals | scheduler | texts/s | audio-s/s | latency p50 ms | p95 ms | useful / computed frames | mean active slots |")
        add("|---|---|---|---|---|---|---|---|")
        for pattern in ("all_at_once", "poisson"):
            for name in [k for k in ("static", "static_bucketed", "continuous") if k in sch[pattern]]:
                x = sch[pattern][name]
                add(f"| {pattern.replace('_', ' ')} | {name} | {_f(x['throughput_texts_per_s'], 2)} | "
                    f"{_f(x['throughput_audio_s_per_s'], 1)} | {_f(x['latency_ms_p50'], 0)} | "
                    f"{_f(x['latency_ms_p95'], 0)} | {_f(x['work_efficiency'], 2)} | {_f(x['mean_active_slots'], 1)} |")
        add("")
        add("Static batching keeps a finished sequence in its slot until the batch's longest one ends (the "
            "`useful / computed` column is the share of decoded frames that reach an output); continuous "
            "batching retires it at once and refills the slot from the queue.")
        add("")
        b = sch.get("step_ratio_bound")
        if b:
            aa = sch["all_at_once"]
            add(f"**How much continuous batching can gain here.** All at once, static batching took "
                f"{aa['static']['steps']} decode steps and continuous {aa['continuous']['steps']}: a ratio of "
                f"{_f(b['this_draw'], 2)}x, the most it can gain when a step costs the same at any occupancy "
                f"(measured: {_f(aa['static'].get('ms_per_step'), 1)} vs {_f(aa['continuous'].get('ms_per_step'), 1)} "
                f"ms per step, prefill and vocoder included: a continuous step decodes only live sequences, fewer as "
                f"the queue drains, but reads every cache to the longest active position and masks; a static step "
                f"decodes every slot of its batch). The ratio depends on which sentences "
                f"were drawn: over {b['draws']} other seeded draws of {sch['requests']} requests it ranges "
                f"{_f(b['min'], 2)}-{_f(b['max'], 2)}x (median {_f(b['median'], 2)}x). Output lengths are clamped "
                f"to {sch.get('max_frames', '?')} frames in this section.")
            add("")
        _best_static_section(add, sch, res.get("summary") or {})
    sweep = res.get("batch_sweep") or []
    if sweep:
        add("## Batch size sweep and bandwidth achieved")
        add("")
        add("One text repeated to fill the batch. Bandwidth = bytes read per decode step / step time; weights "
            "only (as gpt-fast reports it) and weights + the KV cache read at the average prefix length.")
        add("")
        add("| batch | batch latency ms | texts/s | audio-s/s | decode step ms | frames/s | weights MB/step | GB/s (weights) | GB/s (+KV) | cache MB |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for r in sweep:
            add(f"| {r['batch_size']} | {_f(r['latency_ms'], 0)} | {_f(r['throughput_texts_per_s'], 2)} | "
                f"{_f(r['throughput_audio_s_per_s'], 1)} | {_f(r['decode_step_ms'], 2)} | {_f(r['frames_per_s'], 0)} | "
                f"{_f(r['weight_bytes_per_step'] / 2**20, 1)} | {_f(r['bandwidth_weights_gb_s'], 1)} | "
                f"{_f(r['bandwidth_total_gb_s'], 1)} | {_f(r['cache_mb'], 0)} |")
        add("")
    fid = res.get("fidelity") or {}
    if fid.get("variants"):
        add("## Fidelity against the causal reference")
        add("")
        lens = ", ".join(str(len(t)) for t in fid["texts"])
        add(f"Reference: {fid['reference']}, same weights, on {len(fid['texts'])} sample texts ({lens} characters: "
            "the shortest ones and the shortest of each length class; the tests check more seeds and lengths). "
            "Bars: fp32 max abs diff <= 1e-4 with equal frame counts; reduced precision relative L2 <= 0.05.")
        add("")
        add("| variant | frame agreement | max abs diff | rel L2 (max) | MCD dB (mean / max) |")
        add("|---|---|---|---|---|")
        for name, v in fid["variants"].items():
            a = v["aggregate"]
            add(f"| {name} | {_f(a['frame_agreement'], 2)} | {_e(a['max_abs_diff'])} | {_f(a['rel_l2_max'], 4)} | "
                f"{_f(a['mcd_db_mean'], 3)} / {_f(a['mcd_db_max'], 3)} |")
        sn = fid.get("seed_noncausal_vs_reference")
        if sn:
            add(f"| *seed loop without causal mask (for the record)* | {_f(sn['frame_agreement'], 2)} | "
                f"{_e(sn['max_abs_diff'])} | {_f(sn['rel_l2_max'], 4)} | {_f(sn['mcd_db_mean'], 3)} / "
                f"{_f(sn['mcd_db_max'], 3)} |")
        add("")
        add("The last row is why the reference is causal: the seed lets earlier frames attend to later ones, "
            "so its output changes as the sequence grows and no cache can reproduce it.")
        add("")
        lc = fid.get("long_clamp")
        if lc:
            add(f"At the scheduler section's {lc['max_frames']}-frame clamp (a {lc['text_chars']}-character text, "
                "decoded to the clamp): " + "; ".join(
                    f"{k}: {v['frames']} frames (reference {v['ref_frames']}), max abs diff {_e(v['max_abs_diff'])}, "
                    f"rel L2 {_f(v['rel_l2'], 4)}" for k, v in lc["variants"].items()) + ".")
            add("")
    prof = res.get("profiles") or {}
    if prof:
        add("## Where the time goes (torch.profiler, top ops by self time)")
        add("")
        add(f"Same {prof.get('text_chars')}-character text through each engine, {prof.get('frames', 'all')} frames.")
        add("")
        for name in ("baseline", "optimized"):
            p = prof.get(name)
            if not p:
                continue
            add(f"**{name}** (total self time {_f(p['total_self_ms'], 0)} ms)")
            add("")
            add("| op | calls | self ms | share |")
            add("|---|---|---|---|")
            for r in p["top_ops"][:8]:
                add(f"| `{r['op']}` | {r['calls']} | {_f(r['self_ms'], 1)} | {_f(r['self_pct'], 1)}% |")
            add("")
    mem = res.get("memory") or {}
    if mem:
        add("## Memory")
        add("")
        add("Each variant alone in a fresh process (a process's RSS never shrinks, so measuring them in one "
            "process would charge the later one with the earlier one's pages); the probes run side by side, "
            "which slows them but does not change a process's own peak.")
        add("")
        add("| variant | texts | RSS after load MB | peak RSS MB | working set MB | CUDA peak MB |")
        add("|---|---|---|---|---|---|")
        for name, x in mem.items():
            if not isinstance(x, dict):  # the "partial" flag of an interrupted section
                continue
            add(f"| {name} ({x['precision']}, {x['slots']} slots) | {x['texts']} | {_f(x['rss_after_load_mb'], 0)} | "
                f"{_f(x['rss_peak_mb'], 0)} | {_f(x['working_set_mb'], 0)} | {_f(x['cuda_peak_allocated_mb'], 0)} |")
        add("")
    edge = res.get("edge_cases") or []
    if edge:
        add("## Edge cases")
        add("")
        add("| case | outcome |")
        add("|---|---|")
        for c in edge:
            if c["ok"]:
                detail = ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("case", "ok"))
                add(f"| {c['case']} | ok: {detail} |")
            else:
                kind = "clear error" if c.get("expected_error") else "UNEXPECTED error"
                add(f"| {c['case']} | {kind}: {c['error']} |")
        add("")
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
    text = "\n".join(L) + "\n"
    write_text_atomic(report_path, text)
    return text


def _best_static_section(add: Any, sch: dict[str, Any], s: dict[str, Any]) -> None:
    """Continuous batching vs the better static batcher over seeded draws: the number to cite."""
    draws = sch.get("draws") or []
    if not draws or s.get("continuous_vs_best_static_throughput") is None:
        return
    ratio, (lo, hi) = s["continuous_vs_best_static_throughput"], s["continuous_vs_best_static_throughput_spread"]
    add(f"**Continuous vs the better static batcher.** Over {len(draws)} seeded draws of {sch['requests']} "
        f"requests arriving at once, continuous batching's throughput was {_f(ratio, 2)}x that of the better of "
        f"FIFO and length-bucketed static batching (median; range {_f(lo, 2)}-{_f(hi, 2)}x). Its decode-step "
        f"bound against the better static batcher was {_f(s['continuous_vs_best_static_step_bound'], 2)}x "
        "(median). Target: > 1.1x.")
    if ratio <= 1.1:
        add("That target is **not met**: with every output length known in advance and all requests waiting, "
            "sorting them into batches of similar length leaves continuous batching little padding to remove. "
            "What is left for it is arrivals over time, when a static batcher must either wait to fill a bucket "
            f"or run part-empty batches: under Poisson arrivals it measured {_f(s.get('continuous_vs_best_static_throughput_poisson'), 2)}x "
            f"the better static batcher's throughput at {_f(s.get('continuous_vs_best_static_p95_latency_poisson'), 2)}x "
            "its p95 latency.")
    add("")
    add("| draw | seed | FIFO static texts/s | bucketed texts/s | continuous texts/s | vs best static | step bound |")
    add("|---|---|---|---|---|---|---|")
    for d in draws:
        add(f"| {d['draw']} | {d['seed']} | {_f(d['static_texts_per_s'], 2)} | {_f(d['static_bucketed_texts_per_s'], 2)} "
            f"| {_f(d['continuous_texts_per_s'], 2)} | {_f(d['continuous_vs_best_static_throughput'], 2)}x "
            f"| {_f(d['step_bound']['vs_best_static'], 2)}x |")
    add("")


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
        f"| continuous vs static batching (mixed lengths) | | | {_f(s.get('continuous_vs_static_throughput'), 2, 'x')} |",
        f"| continuous vs the better of FIFO / length-bucketed static (median of draws) | | | "
        f"{_f(s.get('continuous_vs_best_static_throughput'), 2, 'x')} |",
        f"| fidelity: fp32 max abs mel diff / reduced-precision rel L2 | | "
        f"{_e(s.get('fidelity_fp32_max_abs_mel_diff'))} / {_f(s.get('fidelity_reduced_precision_rel_l2'), 4)} | |",
        f"| peak memory ({s.get('peak_memory_kind')}) | {_f(s.get('baseline_peak_memory_mb'), 0, ' MB')} | "
        f"{_f(s.get('optimized_peak_memory_mb'), 0, ' MB')} | |",
    ])
