"""The Part 1 report's detail sections (latency by length, techniques, schedulers, batch sweep, fidelity,
profiles, memory, edge cases). Each takes the results, the figure names and the figures' relative folder,
and returns its Markdown lines; ``report.render`` puts them in page order."""

from __future__ import annotations

from typing import Any

from speechbench.common.fmt import num as _f
from speechbench.common.fmt import sci


def _poisson_scope(sch: dict) -> str:
    n = sch["poisson"].get("requests", sch["requests"])
    return "all of them" if n == sch["requests"] else f"the first {n}"


def latency_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Seed baseline vs optimized latency per length category and per text."""
    L: list[str] = []
    add = L.append
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
            add(f"| {cat} | seed baseline | {st['n']} | {_f(st['mean'], 0)} | {_f(st['p50'], 0)} | "
                f"{_f(st['p95'], 0)} |")
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
    return L


def waterfall_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Throughput as techniques are added one at a time."""
    L: list[str] = []
    add = L.append
    wf = res.get("waterfall") or []
    if wf:
        add("## What each technique buys")
        add("")
        if "waterfall" in figs:
            add(f"![waterfall]({rel}/{figs['waterfall']})")
            add("")
        copies = (res.get("config") or {}).get("waterfall_copies", 1)
        n_texts = len(res.get("texts") or [])
        add("Throughput on the sample texts (all served, same run), as techniques are added one at a time"
            + (f"; the batched steps serve the {n_texts} texts {copies} times over ({n_texts * copies} requests, "
               f"{(res.get('config') or {}).get('slots')} slots, all arriving at once), so continuous batching "
               "refills slots as sequences finish" if copies > 1 else "") + ":")
        add("")
        add("| technique | texts/s | vs seed baseline | this step |")
        add("|---|---|---|---|")
        for w in wf:
            add(f"| {w['technique']} | {_f(w['throughput_texts_per_s'], 3)} | {_f(w['speedup_vs_first'], 1)}x | "
                f"{_f(w['step_gain'], 2)}x |")
        add("")
    return L


def scheduler_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Static (FIFO and length-bucketed) vs continuous batching, with the decode-step bound."""
    L: list[str] = []
    add = L.append
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
        add("| arrivals | scheduler | texts/s | audio-s/s | latency p50 ms | p95 ms | useful / computed frames | "
            "mean active slots |")
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
    return L


def batch_sweep_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Batch size sweep: decode-step time and the bandwidth it achieves."""
    L: list[str] = []
    add = L.append
    sweep = res.get("batch_sweep") or []
    if sweep:
        add("## Batch size sweep and bandwidth achieved")
        add("")
        add("One text repeated to fill the batch. Bandwidth = bytes read per decode step / step time; weights "
            "only (as gpt-fast reports it) and weights + the KV cache read at the average prefix length.")
        add("")
        add("| batch | batch latency ms | texts/s | audio-s/s | decode step ms | frames/s | weights MB/step | "
            "GB/s (weights) | GB/s (+KV) | cache MB |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for r in sweep:
            add(f"| {r['batch_size']} | {_f(r['latency_ms'], 0)} | {_f(r['throughput_texts_per_s'], 2)} | "
                f"{_f(r['throughput_audio_s_per_s'], 1)} | {_f(r['decode_step_ms'], 2)} | {_f(r['frames_per_s'], 0)} | "
                f"{_f(r['weight_bytes_per_step'] / 2**20, 1)} | {_f(r['bandwidth_weights_gb_s'], 1)} | "
                f"{_f(r['bandwidth_total_gb_s'], 1)} | {_f(r['cache_mb'], 0)} |")
        add("")
    return L


def fidelity_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Each optimized variant against the causal reference on the same weights."""
    L: list[str] = []
    add = L.append
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
            add(f"| {name} | {_f(a['frame_agreement'], 2)} | {sci(a['max_abs_diff'])} | {_f(a['rel_l2_max'], 4)} | "
                f"{_f(a['mcd_db_mean'], 3)} / {_f(a['mcd_db_max'], 3)} |")
        sn = fid.get("seed_noncausal_vs_reference")
        if sn:
            add(f"| *seed loop without causal mask (for the record)* | {_f(sn['frame_agreement'], 2)} | "
                f"{sci(sn['max_abs_diff'])} | {_f(sn['rel_l2_max'], 4)} | {_f(sn['mcd_db_mean'], 3)} / "
                f"{_f(sn['mcd_db_max'], 3)} |")
        add("")
        add("The last row is why the reference is causal: the seed lets earlier frames attend to later ones, "
            "so its output changes as the sequence grows and no cache can reproduce it.")
        add("")
        lc = fid.get("long_clamp")
        if lc:
            add(f"At the scheduler section's {lc['max_frames']}-frame clamp (a {lc['text_chars']}-character text, "
                "decoded to the clamp): " + "; ".join(
                    f"{k}: {v['frames']} frames (reference {v['ref_frames']}), max abs diff {sci(v['max_abs_diff'])}, "
                    f"rel L2 {_f(v['rel_l2'], 4)}" for k, v in lc["variants"].items()) + ".")
            add("")
    return L


def profile_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """torch.profiler top ops of the baseline and the optimized engine."""
    L: list[str] = []
    add = L.append
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
    return L


def memory_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Peak memory of each variant, each measured in a fresh process."""
    L: list[str] = []
    add = L.append
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
    return L


def edge_case_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """How the engine handles bad or extreme input."""
    L: list[str] = []
    add = L.append
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
    return L


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
            "or run part-empty batches: under Poisson arrivals it measured "
            f"{_f(s.get('continuous_vs_best_static_throughput_poisson'), 2)}x the better static batcher's "
            f"throughput at {_f(s.get('continuous_vs_best_static_p95_latency_poisson'), 2)}x its p95 latency.")
    add("")
    add("| draw | seed | FIFO static texts/s | bucketed texts/s | continuous texts/s | vs best static | step bound |")
    add("|---|---|---|---|---|---|---|")
    for d in draws:
        add(f"| {d['draw']} | {d['seed']} | {_f(d['static_texts_per_s'], 2)} | "
            f"{_f(d['static_bucketed_texts_per_s'], 2)} | {_f(d['continuous_texts_per_s'], 2)} | "
            f"{_f(d['continuous_vs_best_static_throughput'], 2)}x "
            f"| {_f(d['step_bound']['vs_best_static'], 2)}x |")
    add("")
