"""The Part 3 report's detail sections (recognizers, batching and capacity, stages, overload, network, parity,
soak) and the tables they share. Each section takes the results, the figure names and the figures' relative
folder, and returns its Markdown lines; ``report.render`` puts them in page order."""

from __future__ import annotations

from typing import Any

from speechbench.common.fmt import met as _met
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct


def _capacity_section(add: Any, s: dict[str, Any]) -> None:
    """How the headline capacities were confirmed: every run of each level, in the order they ran."""
    search, attempts = s.get("capacity_search") or {}, s.get("capacity_repeats") or {}
    if not search:
        return
    add("## Capacity, confirmed")
    add("")
    rule = next(iter(search.values())).get("rule")
    add(f"One run per level can pass a level by luck or fail it to a neighbour's burst on a shared machine, so "
        f"after each coarse sweep {rule}, and the search bisects between the highest level that holds and the "
        "first that does not. The runs from the confirmed level up, in the order they ran (S = sustained, "
        "F = not; sweep / confirm / bisect).")
    add("")
    add("| sweep | confirmed | first not held | runs (streams: outcome, p95 ms) |")
    add("|---|---|---|---|")
    for key, v in search.items():
        runs = ", ".join(f"{a['streams']}: {'S' if a['sustained'] else 'F'} {_f(a.get('chunk_latency_ms_p95'), 0)} "
                         f"({a['phase']})" for a in attempts.get(key, []) if a["phase"] != "sweep"
                         or a["streams"] >= (v.get("confirmed_streams") or 0))
        first = v.get("first_failed_streams")
        add(f"| {'engine' if key == 'sweep' else 'per-stream baseline'} | **{v.get('confirmed_streams')}** | "
            f"{first if first is not None else 'none (the top level held)'} | {runs} |")
    add("")


def _stage_rows(run: dict[str, Any]) -> list[tuple[str, str, str]]:
    e = run.get("engine") or {}
    st = e.get("stage_ms") or {}
    rows = [("queueing (arrival -> step start: buffering to a model chunk, waiting for the batch)",
             _f((e.get("queue_wait_ms") or {}).get("p50")), _f((e.get("queue_wait_ms") or {}).get("p95")))]
    names = {"features": "features (batched log-mel)", "model": "model (gather, forward_chunk, scatter)",
             "decode": "greedy decoding", "endpoint": "endpointing", "emit": "partials, finals, events"}
    for k, label in names.items():
        h = st.get(k) or {}
        rows.append((label, _f(h.get("p50"), 2), _f(h.get("p95"), 2)))
    sm = e.get("step_ms") or {}
    rows.append(("one step, all stages", _f(sm.get("p50"), 2), _f(sm.get("p95"), 2)))
    rows.append(("**chunk latency (end to end)**", _f(run.get("chunk_latency_ms_p50")),
                 _f(run.get("chunk_latency_ms_p95"))))
    return rows


def network_markdown(res: dict[str, Any]) -> list[str]:
    """In-process vs over-the-network capacity and latency, side by side (the ``network`` section)."""
    net = res.get("network") or {}
    ns = (res.get("summary") or {}).get("network") or {}
    if not net.get("runs"):
        return []
    sweep = {r["streams"]: r for r in res.get("sweep") or []}
    L = ["## In-process vs over the network", "",
         "The same engine and model behind `production_streaming_asr.py serve` in its own process (uvicorn, "
         "WebSocket, 16-bit PCM frames of the client chunk size, JSON partials back), driven by real WebSocket "
         "clients on loopback from the benchmark's process, paced by the wall clock, the same seeded stream "
         "scripts as in-process. Network latency is measured by the clients: from when a frame's last sample "
         "existed to the first message covering it (framing, both event loops, the server's queues and the "
         "engine included). The clients share the machine's cores with the server (their CPU time is listed).",
         "",
         "| streams | in-process p50 / p95 ms | network p50 / p95 / p99 ms | network sustained | shed | "
         "server / client CPU s | batch | WER network / in-process |",
         "|---|---|---|---|---|---|---|---|"]
    for r in net["runs"] + (net.get("search_runs") or []):
        ip = sweep.get(r["streams"]) or {}
        L.append(f"| {r['streams']} | {_f(ip.get('chunk_latency_ms_p50'))} / {_f(ip.get('chunk_latency_ms_p95'))} | "
                 f"{_f(r.get('chunk_latency_ms_p50'))} / {_f(r.get('chunk_latency_ms_p95'))} / "
                 f"{_f(r.get('chunk_latency_ms_p99'))} | {_met(r.get('sustained'))} | {r.get('shed_chunks')} | "
                 f"{_f(r.get('server_cpu_s'))} / {_f(r.get('client_cpu_s'))} | {_f(r.get('batch_size_mean'))} | "
                 f"{_pct(r.get('wer'))} / {_pct(ip.get('wer'))} |")
    top = max(sweep) if sweep else None
    bound = (" (the in-process sweep's largest level, so that capacity is a lower bound and the share an upper "
             "bound)") if top is not None and top == ns.get("in_process_max_streams") else ""
    L += ["", f"Network capacity: **{ns.get('max_streams_p95_under_100ms')}** streams (levels tested "
          f"{ns.get('levels_tested')}, up to the in-process capacity of {ns.get('in_process_max_streams')}{bound}: "
          f"{_pct(ns.get('share_of_in_process'))} of it; both confirmed: sustained in 2 of up to 3 runs). "
          "The rows after the first failing level are the confirmation and bisection runs, in the order "
          "they ran."]
    same = net.get("in_process_same_threads") or {}
    if same:  # at the network capacity, whose sustained run's latency the summary holds
        L += ["", f"The same {same.get('streams')} streams in-process with the server's "
              f"{same.get('torch_threads')} torch thread(s), without sockets, clients or an event loop: p50 / p95 "
              f"{_f(same.get('chunk_latency_ms_p50'))} / {_f(same.get('chunk_latency_ms_p95'))} ms, scheduler busy "
              f"{_pct(same.get('scheduler_busy_share'))}, sustained {_met(same.get('sustained'))} (over the network "
              f"{_f(ns.get('chunk_latency_ms_p50'))} / {_f(ns.get('chunk_latency_ms_p95'))} ms). In-process "
              "capacity is measured with every core's torch thread; the server runs fewer, because its event loop "
              "and the clients need the rest of the machine."]
    ov = net.get("overload") or {}
    if ov:
        L += ["", f"Twice that ({ov.get('streams')} clients) against a server with `--max-streams "
              f"{ov.get('admission_cap')}`: server up **{_f(ov.get('server_alive'))}** (healthz "
              f"{ov.get('healthz_status')}), refused {ov.get('refused_streams')} at the handshake "
              f"({ov.get('refused_by_status')}; the server counted {ov.get('refused_counted_by_server')}), admitted "
              f"{ov.get('admitted_streams')} with p50 / p95 / max {_f(ov.get('chunk_latency_ms_p50'))} / "
              f"{_f(ov.get('chunk_latency_ms_p95'))} / {_f(ov.get('chunk_latency_ms_max'))} ms (bound "
              f"{_f(ov.get('latency_bound_ms'))} ms), shed {ov.get('shed_chunks')}."]
    return L + [""]


def models_table(res: dict[str, Any]) -> list[str]:
    """The streaming table across recognizers: accuracy next to capacity, all from one run."""
    rows = (res.get("summary") or {}).get("models") or []
    if not rows:
        return []
    out = ["| model | precision | engine | WER streaming (offline) | real speech: WER (offline), words | RTF p50 / "
           "p95 | first partial p95 | finalization p95 after endpoint | sustained streams (per-stream) | latency "
           "bound | peak memory |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("failed"):
            out.append(f"| {r.get('model')} | | failed or unavailable: see Failures | | | | | | | | |")
            continue
        per = r.get("per_stream_max_sustained_streams")
        tested = r.get("levels_tested") or []
        best = r.get("max_sustained_streams")
        # "+": the largest level tried held, so capacity is a lower bound (older results: judged by the sweep)
        lower = r.get("capacity_is_lower_bound", bool(tested and best == max(tested)))
        cap = f"{best}" + ("+" if lower else "")
        real = (r.get("wer_by_source") or {}).get("real") or {}
        rw = (f"{_pct(real.get('wer_final'))} ({_pct(real.get('wer_offline'))}), {real.get('words')}" if real
              else "not run")
        out.append(
            f"| {r.get('model')} | {r.get('precision')} | {r.get('engine')} | {_pct(r.get('wer_streaming'))} "
            f"({_pct(r.get('wer_offline'))}) | {rw} | {_f(r.get('rtf_p50'), 3)} / {_f(r.get('rtf_p95'), 3)} | "
            f"{_f(r.get('first_partial_ms_p95'), 0)} ms | {_f(r.get('finalization_after_endpoint_ms_p95'), 0)} ms | "
            f"**{cap}** ({'n/a' if per is None else per}) | {_f(r.get('latency_bound_ms'), 0)} ms | "
            f"{_f(r.get('peak_memory_mb'), 0)} MB |")
    return out


def recognizers_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """The accuracy-vs-capacity table of every recognizer the engine served."""
    L: list[str] = []
    add = L.append
    cfg = res.get("config", {})
    table = models_table(res)
    if table:
        add("## Recognizers: accuracy vs capacity")
        add("")
        add("Every recognizer below is served by the same engine (admission, queues, scheduler, VAD or blank "
            "endpointing, metrics). `ctc-streaming` is the project's own causal CTC model: trained on synthetic "
            "speech only (espeak-ng accents and one Piper voice), it recognizes almost nothing of human speech "
            "(docs/asr_report.md, its real-speech section), so its capacity is a statement about the engine, not "
            "a model to deploy; its streams replay synthetic speech. The pretrained recognizers' streams replay real "
            "recordings, synthetic utterances and one continuous reading (see above). Moonshine re-decodes each "
            "stream's utterance every update interval, every ready stream in one batched call (PyTorch decoder, "
            "masked, one encoder call per utterance), committing words by LocalAgreement-2 on tokens; Whisper "
            "runs the same policy through faster-whisper; `moonshine-tiny-native` is Moonshine's own streaming "
            "API, one stream object per slot. The per-stream column is the same policy with max batch 1. "
            "Sustained: p95 chunk latency under the model's bound (the CTC model: the headline bound; a model "
            "that updates every interval: that interval + "
            f"{_f(cfg.get('redecode_bound_ms'), 0)} ms), nothing shed, dropped or refused; a `+` means the "
            "largest level tried was sustained (a lower bound). RTF p50 / p95: model step time over the step's "
            "audio, one stream. WER pooled over the sustained levels, offline WER of the same recognizer on the "
            "same utterances in brackets.")
        add("")
        L.extend(table)
        add("")
    return L


def batching_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Cross-stream batching vs the per-stream baseline, confirmed capacity, chunk sizes."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    add("## Cross-stream batching vs the per-stream baseline")
    add("")
    add("The baseline is the same engine, model and load generator with max batch 1 and no wait: every stream "
        "is stepped on its own (no cross-stream batching). Its sweep stops at the first level it cannot "
        "sustain.")
    add("")
    add("| streams | p50 | p95 ms | RTF | shed | refused | sustained |")
    add("|---|---|---|---|---|---|---|")
    for r in res.get("baseline") or []:
        add(f"| {r['streams']} | {_f(r['chunk_latency_ms_p50'])} | {_f(r['chunk_latency_ms_p95'])} | "
            f"{_f(r['rtf'], 3)} | {r['shed_chunks']} | {r['refused_streams']} | {_f(r['sustained'])} |")
    add("")
    add(f"Sustained: engine **{s.get('max_streams_p95_under_100ms')}** streams, baseline "
        f"**{s.get('baseline_max_streams_p95_under_100ms')}**; gain {_f(s.get('batching_gain_streams'), 1)}x.")
    add("")
    _capacity_section(add, s)
    alt = s.get("chunk_sizes") or []
    if alt:
        at40 = {r["streams"]: r for r in s.get("runs") or [] if r.get("sustained")}
        add("**Smaller client chunks.** The confirmed capacity again with smaller client chunks (the model "
            "still steps on 40 ms, so a chunk now waits for the next one to complete a model chunk): "
            + "; ".join(f"{r['chunk_ms']} ms chunks at {r['streams']} streams: p50 {_f(r['chunk_latency_ms_p50'])} / "
                        f"p95 {_f(r['chunk_latency_ms_p95'])} ms, busy {_pct(r.get('scheduler_busy_share'))}, "
                        f"{'sustained' if r['sustained'] else '**not sustained**'}"
                        + (f" (40 ms chunks in the sweep: p95 {_f(at40[r['streams']]['chunk_latency_ms_p95'])} ms)"
                           if r["streams"] in at40 else "") for r in alt) + ".")
        add("")
    return L


def stages_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Where a step's time goes at the confirmed capacity."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    best = s.get("max_streams_p95_under_100ms")
    at = next((r for r in (res.get("sweep") or []) + ((res.get("capacity") or {}).get("sweep") or {}).get("runs", [])
               if r["streams"] == best and r["sustained"]), None)
    if at:
        add(f"## Latency budget by stage ({best} streams)")
        add("")
        add("| stage | p50 ms | p95 ms |")
        add("|---|---|---|")
        for row in _stage_rows(at):
            add(f"| {row[0]} | {row[1]} | {row[2]} |")
        add("")
        add("Stage times are per step (a step serves the whole batch); queueing is per client chunk.")
        add("")
    return L


def overload_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Twice the sustainable load: admission, shedding, admitted latency."""
    L: list[str] = []
    add = L.append
    ov = res.get("overload") or {}
    if ov:
        bound, p95 = ov.get("latency_bound_for_admitted_ms"), ov.get("chunk_latency_ms_p95")
        within = ("p95 within" if p95 <= bound else "p95 **above**") if None not in (bound, p95) else "vs"
        add("## Overload: twice the sustainable load")
        add("")
        add(f"{ov.get('streams')} streams offered (2 x {ov.get('sustainable_streams')}): engine stayed up: "
            f"**{_f(ov.get('stayed_up'))}**; admitted {ov.get('admitted_streams')}, refused "
            f"{ov.get('refused_streams')} ({ov.get('refusals')}), shed chunks {ov.get('shed_chunks')}; admitted "
            f"streams' chunk latency p50 / p95 / max {_f(ov.get('chunk_latency_ms_p50'))} / "
            f"{_f(ov.get('chunk_latency_ms_p95'))} / {_f(ov.get('chunk_latency_ms_max'))} ms ({within} the "
            f"bound for admitted streams, {_f(ov.get('latency_bound_for_admitted_ms'))} ms: the queue bound plus "
            f"four model chunks).")
        add("")
        if ov.get("admission_rule"):
            add(f"Admission: {ov['admission_rule']}.")
            add("")
        sl = ov.get("slot_capacity_only")
        if sl:
            add(f"For comparison, the same {sl.get('streams')} streams with admission left to the "
                f"{sl.get('max_streams')} state slots and the runtime rules alone: admitted "
                f"{sl.get('admitted_streams')}, refused {sl.get('refused_streams')} ({sl.get('refusals')}), shed "
                f"chunks {sl.get('shed_chunks')}, admitted streams' chunk latency p50 / p95 / max "
                f"{_f(sl.get('chunk_latency_ms_p50'))} / {_f(sl.get('chunk_latency_ms_p95'))} / "
                f"{_f(sl.get('chunk_latency_ms_max'))} ms. The runtime rules (queue age, duty cycle over the last "
                "second) react too late for a burst of arrivals; a cap set from measured capacity does not.")
            add("")
    return L


def network_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """In-process vs over the network (WebSocket clients)."""
    L: list[str] = []
    L.extend(network_markdown(res))
    return L


def parity_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Streaming vs offline transcripts of the same model."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    par = res.get("parity") or {}
    off = res.get("offline") or {}
    add("## Streaming vs offline")
    add("")
    if par:
        add(f"- Exactness: the engine (unpaced, {par.get('method')}) gave transcripts identical to the offline "
            f"whole-utterance pass for {par.get('identical')} of {par.get('utterances')} utterances.")
    if off:
        add(f"- Offline WER of the same model on the pool: {_pct(off.get('wer_pool', {}).get('wer'))} "
            f"(offline RTF {_f(off.get('rtf'), 4)}).")
    add(f"- Under real-time load (sustained levels {s.get('wer_levels')}, {s.get('wer_words')} words): streaming "
        f"WER {_pct(s.get('wer_streaming'))}, offline WER on the same utterances {_pct(s.get('wer_offline'))} "
        f"(gap {_f(s.get('wer_gap_points'), 2)} points). Differences come from endpointing: the model state is "
        "reset at each endpoint, so a pause longer than the endpoint silence splits an utterance.")
    add("")
    return L


def soak_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Memory and latency over a long run."""
    L: list[str] = []
    add = L.append
    soak = res.get("soak") or {}
    if soak:
        add("## Soak")
        add("")
        add(f"{soak.get('streams')} streams for {_f(soak.get('duration_s'), 0)} s: host RSS slope "
            f"{_f(soak.get('rss_slope_mb_per_min'), 2)} MB/min after warm-up, growth "
            f"{_f(soak.get('rss_growth_mb'), 1)} MB; p95 chunk latency {_f(soak.get('chunk_latency_ms_p95'))} ms; "
            f"shed {soak.get('shed_chunks')}.")
        add("")
    return L
