"""Render docs/streaming_report.md (and its plots) from results/streaming_performance.json, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechbench.common.fmt import commit, commit_line, generated_from
from speechbench.common.fmt import met as _met
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct
from speechbench.common.noise import noise_markdown
from speechbench.common.report_page import failed_sections, render_page
from speechbench.streaming import report_real
from speechbench.streaming import report_sections as sections
from speechbench.streaming.plots import make_plots


def _step_note(step: dict) -> str:
    """How the CTC step ran (results before the traced graph have no ``model.step``)."""
    if step.get("graph") == "torchscript trace":
        return "; each step runs as one traced TorchScript graph (bit-identical to eager, tested)"
    if step.get("graph") == "eager":
        return "; each step runs op by op (eager)" + (f", the trace failed: {step['graph_error']}"
                                                    if step.get("graph_error") else "")
    return ""


def headline_markdown(res: dict[str, Any]) -> str:
    s = res.get("summary", {})
    env = res.get("env", {})
    st = s.get("single_stream") or {}
    at = s.get("at_max_sustained") or {}
    lines = [
        f"Latest full run: {s.get('device')} ({env.get('device_name')}, {s.get('threads')} threads), commit "
        f"{commit(env, 10)}, {env.get('time_utc')}.",
        "",
        "| | value |",
        "|---|---|",
    ]
    lines += report_real.headline_lines(res)
    lines += [
        "| **the engine's ceiling**: `ctc-streaming`, the project's 1.8 M-parameter CTC model trained on synthetic "
        "speech only (it recognizes almost nothing of human speech); below, its figures | |",
        f"| ctc-streaming: concurrent real-time streams of synthetic speech with p95 chunk latency < "
        f"{s.get('latency_bound_ms', 100):g} ms, nothing shed | **{s.get('max_streams_p95_under_100ms')}** "
        f"(per-stream baseline: {s.get('baseline_max_streams_p95_under_100ms')}) |",
        f"| at that load: chunk latency p50 / p95 / p99 | {_f(at.get('chunk_latency_ms_p50'))} / "
        f"{_f(at.get('chunk_latency_ms_p95'))} / {_f(at.get('chunk_latency_ms_p99'))} ms |",
        f"| at that load: batch utilization, peak memory | {_pct(at.get('batch_utilization'))}, "
        f"{_f(at.get('peak_memory_mb'), 0)} MB |",
        f"| one stream: first partial p95; finalization p95 after the endpoint (from the end of speech); RTF | "
        f"{_f(st.get('first_partial_ms_p95'), 0)} ms; {_f(st.get('finalization_after_endpoint_ms_p95'), 0)} ms "
        f"({_f(st.get('finalization_ms_p95'), 0)} ms, endpoint rule {_f(st.get('endpoint_silence_ms'), 0)} ms of "
        f"silence); {_f(st.get('rtf'), 3)} |",
        f"| ctc-streaming WER streaming vs offline (same model, same synthetic audio) | "
        f"{_pct(s.get('wer_streaming'))} vs {_pct(s.get('wer_offline'))} |",
    ]
    ns = s.get("network") or {}
    if ns:
        lines.append(f"| over WebSocket (`serve`, clients on loopback): streams with client-side p95 < 100 ms; p95 "
                     f"there; refused at 2x | **{ns.get('max_streams_p95_under_100ms')}** "
                     f"({_pct(ns.get('share_of_in_process'))} of in-process); "
                     f"{_f(ns.get('chunk_latency_ms_p95'))} ms; {ns.get('refused_streams_at_2x')} |")
    table = sections.models_table(res)
    if table:
        lines += ["", "Every recognizer the engine served in that run (the pretrained ones on real and synthetic "
                  "speech; the CTC model on synthetic speech, the only kind it was trained on):", ""] + table
    return "\n".join(lines) + "\n"


def render(res: dict[str, Any], report_path: Path, plots: bool = True) -> str:
    return render_page(res, report_path, SECTIONS, make_plots, plots)


def _header_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Title, provenance, machine noise, model, audio and engine settings."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    env = res.get("env", {})
    cfg = res.get("config", {})
    m = res.get("model", {})
    setup = res.get("setup") or {}
    add("# Part 3: streaming ASR under real-time load")
    add("")
    add(generated_from(res, "production_streaming_asr.py", "results/streaming_performance.json"))
    add("")
    head = report_real.headline_lines(res)
    if head:
        add("| headline: the best real recognizer served | value |")
        add("|---|---|")
        L.extend(head)
        add("")
        add("The engine's own figures below (targets, sweep, batching, overload, network) are those of "
            "`ctc-streaming`: the engine's ceiling on a small model trained on synthetic speech only, not a "
            "recognizer of human speech.")
        add("")
    add(f"- Device: **{s.get('device')}** ({env.get('device_name')}), {env.get('cpu_count')} CPU threads visible, "
        f"torch threads {s.get('threads')}, torch {env.get('torch')}, Python {env.get('python')}")
    add(commit_line(res, f"; total {res.get('total_seconds')} s"))
    L.extend(noise_markdown(res))
    add(f"- Model: `{m.get('checkpoint')}`, causal conv + {m.get('config', {}).get('layers')}x"
        f"{m.get('config', {}).get('hidden')} unidirectional LSTM CTC, {_f((m.get('params') or 0) / 1e6, 2)} M "
        f"parameters; greedy decoding" + _step_note(m.get("step") or {}))
    add(f"- Audio: {setup.get('pool_utterances')} utterances ({_f(setup.get('pool_audio_s'), 0)} s; accents "
        f"{', '.join(setup.get('pool_accents') or [])}) from `{setup.get('manifest')}`, replayed by every stream "
        f"in a different order with {cfg.get('gap_s', [0, 0])[0]}-{cfg.get('gap_s', [0, 0])[1]} s silences; "
        f"{cfg.get('duration_s')} s of audio per stream per level; client chunks of {cfg.get('chunk_ms')} ms; "
        f"starts staggered over {cfg.get('ramp_s')} s")
    add(f"- Engine: model step {cfg.get('model_chunk_ms')} ms of audio per stream, max batch {cfg.get('max_batch')}, "
        f"max wait {cfg.get('max_wait_ms')} ms, {cfg.get('max_streams')} slots, per-stream queue bound "
        f"{cfg.get('max_queue_ms')} ms, endpointer `{cfg.get('endpoint')}` ({cfg.get('endpoint_silence_ms')} ms)")
    if s.get("quick"):
        add("- **This is a `--quick` smoke run**: tiny sizes, numbers are not for citing.")
    for n in res.get("notes", []):
        add(f"- Note: {n}")
    add("")
    return L


def _targets_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Every target: measured, threshold, met or not."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    add("## Targets (ctc-streaming: the engine's ceiling on synthetic speech)")
    add("")
    add("| target | measured | threshold | result | what is measured |")
    add("|---|---|---|---|---|")
    for name, t in (s.get("targets") or {}).items():
        v = t.get("value")
        add(f"| {name.replace('_', ' ')} | {_f(v, 3) if isinstance(v, float) else _f(v)} | {t.get('threshold')} | "
            f"{_met(t.get('met'))} | {t.get('what')} |")
    add("")
    return L


def _sweep_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """The engine's load sweep, one row per stream count."""
    L: list[str] = []
    add = L.append
    add("## Load sweep (ctc-streaming, synthetic speech)")
    add("")
    add("Latency of a client chunk = time its partial is emitted - time its last sample existed in real time "
        "(buffering until a model chunk is complete, queueing for the batch and compute all count). "
        "First partial: from speech onset (reference timing) to the first non-empty partial of that utterance. "
        "Finalization: from the end of speech to the final (includes the endpointer's silence wait). "
        "RTF: engine compute time / audio time. Batch utilization: streams per step / min(max batch, live "
        "streams); busy: share of the wall time the scheduler spent stepping. Dropped: chunks lost after they were "
        "accepted, or refused because their stream had failed. "
        "Sustained: p95 < bound and nothing shed, dropped, refused or failed, and every stream finalized.")
    add("")
    hdr = ("| streams | p50 | p95 | p99 ms | first partial p95 | final p95 | RTF | batch mean | util | busy | shed | "
           "dropped | refused | peak MB | WER | offline WER | sustained |")
    add(hdr)
    add("|" + "---|" * (hdr.count("|") - 1))
    for r in res.get("sweep") or []:
        add(f"| {r['streams']} | {_f(r['chunk_latency_ms_p50'])} | {_f(r['chunk_latency_ms_p95'])} | "
            f"{_f(r['chunk_latency_ms_p99'])} | {_f(r['first_partial_ms_p95'], 0)} | "
            f"{_f(r['finalization_ms_p95'], 0)} | {_f(r['rtf'], 3)} | {_f(r['batch_size_mean'])} | "
            f"{_pct(r['batch_utilization'])} | "
            f"{_pct(r.get('scheduler_busy_share'))} | {r['shed_chunks']} | "
            f"{r['dropped_chunks']} | {r['refused_streams']} | {_f(r['peak_memory_mb'], 0)} | {_pct(r['wer'])} | "
            f"{_pct(r['wer_offline'])} | {_f(r['sustained'])} |")
    add("")
    if "latency" in figs:
        add(f"![latency vs streams]({rel}/{figs['latency']})")
        add("")
    if "throughput" in figs:
        add(f"![throughput and batching]({rel}/{figs['throughput']})")
        add("")
    return L


def _design_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """How the engine works."""
    L: list[str] = []
    add = L.append
    add("## Design")
    add("")
    add("- **Engine** (`speechbench/streaming/engine.py`): thread-safe `add_stream` / `process_chunk` "
        "(non-blocking, returns the latest partial) / `reset_stream` (barge-in) / `finalize_stream` / `stop`; "
        "events (partial, final, error, closed, reset) by callback or bounded queue. Per-stream state lives in "
        "preallocated slots: model state (conv caches, LSTM h/c), the feature front end's 240-sample window "
        "overlap, the greedy decoder's last frame symbol, the endpointer's counters, and a bounded audio queue.")
    add("- **Scheduler**: one thread; a step takes the streams holding a complete model chunk (up to max batch), "
        "waiting at most max wait for the rest of the live streams, computes log-mel for the batch in one call, "
        "gathers states by slot index, runs one `forward_chunk`, scatters, decodes, endpoints and emits. Streams "
        "join and leave between steps; the pool never changes shape (model steps are whole output frames, so "
        "every state tensor keeps one shape).")
    add("- **Endpointing**: trailing CTC blanks after at least one character (free: reuses the decoder's "
        "argmax); silero-vad batched across streams as an option. On an endpoint the final is emitted and the "
        "slot's model and decoder state reset; the stream continues into its next utterance.")
    add("- **Degradation**: admission control (slots; and no new stream while the oldest queued audio is older "
        "than the overload threshold or the scheduler was busy more than max duty of the last second), a "
        "per-stream queue bound beyond which chunks are shed and counted, bad chunks (dtype, shape, rate, "
        "NaN/inf, oversize) failing only their stream, an idle timeout.")
    add("- **Production**: run one engine per core group (or per GPU) behind a router with sticky sessions "
        "(stream state lives in one process); export the engine's counters (`stats()`: latency histograms, "
        "batch sizes, utilization, backlog, shed/refused/failed counts) to monitoring and alert on p95 latency, "
        "shed rate and refusals. At 10x traffic the admission control refuses what one engine cannot serve "
        "(so admitted calls keep their latency) and the router scales out on the refusal rate; a GPU engine "
        "with large batches is the next step (see the GPU run, if present).")
    add("")
    return L



# The report's sections in page order; each returns its Markdown lines.
SECTIONS = (_header_section, report_real.real_speech_section, sections.recognizers_section,
            report_real.frontier_section, _targets_section, _sweep_section,
            sections.batching_section, sections.stages_section, sections.overload_section,
            sections.network_section, sections.parity_section, sections.soak_section, _design_section,
            failed_sections)


