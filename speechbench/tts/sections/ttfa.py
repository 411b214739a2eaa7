"""Part 1 section: streaming synthesis under load. Time to first audio (TTFA) and playback underruns of
continuous batching vs the better static batcher, under open-loop Poisson arrivals at increasing rates.

Production TTS is judged by how soon the first audio leaves and whether the audio then stays ahead of
playback, not by whole-utterance latency. Each rate is a fraction of the continuous batcher's capacity,
measured first on the same workload (all requests at once, streaming on), so the sweep crosses the knee
on any machine. Output lengths use the run's default clamp (``max_frames``), not the scheduler section's
500 frames: at 500 one rate of this sweep took a minute here. The static side is the better static batcher
of the schedulers section (FIFO or length-bucketed, by its median throughput over the draws; bucketed when
that section did not run). Both stream (tts/streaming.py) and take turns on their own busy clocks
(scheduler.BusyClock), so machine drift cannot favour either; arrivals are open loop (a request arrives on
time whether or not earlier ones were served).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from speechbench.common.measure import synchronize
from speechbench.tts.engine import Request
from speechbench.tts.scheduler import (
    BucketedStaticSchedule,
    BusyClock,
    ContinuousSchedule,
    StaticSchedule,
    make_arrivals,
    run_interleaved,
    run_static,
)
from speechbench.tts.streaming import AudioStreamer, StreamingConfig, stream_summary


def better_static(sched: dict[str, Any]) -> str:
    """"static" or "static_bucketed": the higher median all-at-once throughput in the schedulers section."""
    draws = sched.get("draws") or []
    if not draws:
        return "static_bucketed"
    med = {k: float(np.median([d[f"{k}_texts_per_s"] for d in draws])) for k in ("static", "static_bucketed")}
    return max(med, key=med.get)


def knee(levels: list[dict[str, Any]], scheduler: str, target_ms: float) -> dict[str, Any]:
    """Where TTFA p95 crosses ``target_ms`` for good: the highest rate that stayed within it
    (``last_rate_within_target``) and the next rate tried (``first_rate_over_target``; None when the highest
    rate was within). A p95 over a few requests is noisy at low load (one arrival during another's prefill),
    so a lower rate over the target below a higher one within it is listed apart, not taken as the knee."""
    rates = sorted(levels, key=lambda lv: lv["rate_per_s"])
    within = [lv["rate_per_s"] for lv in rates if lv[scheduler]["ttfa_ms_p95"] <= target_ms]
    last_within = max(within) if within else None
    above = [lv["rate_per_s"] for lv in rates if last_within is None or lv["rate_per_s"] > last_within]
    below_over = [lv["rate_per_s"] for lv in rates if last_within is not None and lv["rate_per_s"] < last_within
                  and lv[scheduler]["ttfa_ms_p95"] > target_ms]
    return {"first_rate_over_target": min(above) if above else None, "last_rate_within_target": last_within,
            "lower_rates_over_target": below_over}


def stream_fidelity(engine: Any, completed: list[Any]) -> float:
    """Largest |streamed - one-shot| audio sample over these requests (same mel, same vocoder)."""
    worst = 0.0
    for c in completed:
        with engine._autocast():
            ref = engine.model.vocoder_inference(c.mel.to(engine.device).unsqueeze(0))[0].float().cpu()
        worst = max(worst, float((ref - c.audio).abs().max()))
    return worst


def measure_ttfa(bench: Any) -> dict[str, Any]:
    """TTFA p50/p95, underrun share and completed requests/s per arrival rate, per scheduler."""
    cfg = bench.cfg
    slots = cfg.sched_slots
    policy = bench.policy
    texts = bench._mixed_requests(cfg.ttfa_requests, cfg.seed + 7)
    static_name = better_static(bench.results.get("schedulers") or {})
    names = ("continuous", static_name)
    engines = [bench.engine(bench.precision, slots, policy=policy, replica=r) for r in range(2)]
    stream_cfg = StreamingConfig(chunk_frames=cfg.ttfa_chunk_frames)
    for e in engines:  # warm-up of the batched shapes
        run_static(e, [Request(t, i, frames=4) for i, t in enumerate(texts[:slots])], batch_size=slots)
    # what bounds TTFA from below: one request's prefill (text encoder + cross-attention K/V, fp32), which
    # also stalls every other stream's next step while it runs
    out_prefill = []
    for t in texts[:5]:
        t0 = time.perf_counter()
        engines[0].prefill([Request(t, 0)])
        synchronize(engines[0].device)
        out_prefill.append(time.perf_counter() - t0)
        engines[0].slots[-1].done = True
        engines[0].retire(vocode=False)
    # capacity: the continuous batcher, streaming, every request at once
    cap_run = run_interleaved([ContinuousSchedule(engines[0], [Request(t, i) for i, t in enumerate(texts)],
                                                  clock=BusyClock(), streamer=AudioStreamer(engines[0], stream_cfg))])
    capacity = cap_run[0].summary(bench.fps)["throughput_texts_per_s"]
    out: dict[str, Any] = {
        "schedulers": list(names), "static_choice": "the better static batcher of the schedulers section "
        "(median all-at-once throughput over its draws)",
        "slots": slots, "requests_per_rate": len(texts), "max_frames": policy.max_frames,
        "chunk_frames": stream_cfg.chunk_frames, "chunk_ms": 1e3 * stream_cfg.chunk_frames / bench.fps,
        "context_frames": stream_cfg.context_frames, "target_ttfa_ms": cfg.ttfa_target_ms,
        "capacity_texts_per_s": capacity,
        "prefill_ms_single_median": 1e3 * float(np.median(out_prefill)),
        "workload": "sentences of the sample texts drawn with replacement, open-loop Poisson arrivals",
        "clock": "each scheduler's own busy time, the two taking turns (BusyClock)",
        "underrun": "a chunk left later than a listener who started playing at the first chunk needed it",
        "levels": [],
    }
    with bench.bar(len(cfg.ttfa_load_fractions), "TTFA under load") as b:
        for k, frac in enumerate(cfg.ttfa_load_fractions):
            rate = frac * capacity
            arrivals = make_arrivals(len(texts), "poisson", rate, cfg.seed + k)
            reqs = [Request(t, i, a) for i, (t, a) in enumerate(zip(texts, arrivals, strict=True))]
            streamers = [AudioStreamer(e, stream_cfg) for e in engines]
            static_cls = StaticSchedule if static_name == "static" else BucketedStaticSchedule
            done = run_interleaved([
                ContinuousSchedule(engines[0], reqs, clock=BusyClock(), streamer=streamers[0]),
                static_cls(engines[1], reqs, slots, clock=BusyClock(), streamer=streamers[1])])
            level: dict[str, Any] = {"load_fraction": frac, "rate_per_s": rate}
            if k == 0:  # the streamed audio, joined, against one vocoder pass over the same mel
                out["stream_vs_one_shot_max_abs_diff"] = stream_fidelity(engines[0], done[0].completed)
            for name, res, st in zip(names, done, streamers, strict=True):
                summ = res.summary(bench.fps)
                level[name] = {**stream_summary(st, bench.fps),
                               "completed_per_s": summ["throughput_texts_per_s"],
                               "latency_ms_p95": summ["latency_ms_p95"]}
            out["levels"].append(level)
            b.update()
            bench.results["ttfa"] = out | {"partial": True}
            bench.save()
    out["knee"] = {name: knee(out["levels"], name, cfg.ttfa_target_ms) for name in names}
    out["ttfa_p95_ms_by_rate"] = {name: [lv[name]["ttfa_ms_p95"] for lv in out["levels"]] for name in names}
    return out
