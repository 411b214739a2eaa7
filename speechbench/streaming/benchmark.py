"""Part 3 benchmark: the streaming engine under real-time load, swept over the number of streams.

Sections (each written to the JSON as soon as it is done; a failing section is recorded, not fatal):
setup (model, corpus, utterance pool) -> offline (whole-utterance greedy transcripts of the same causal
model on the same audio) -> parity (the engine, unpaced, many streams joining and leaving, vs offline)
-> sweep (engine, one level per stream count) -> baseline (the same engine with max_batch 1: no
cross-stream batching) -> capacity (confirmed, then bisected) -> chunk sizes -> overload (twice the
sustainable load) -> network (streaming/network.py) -> soak (optional) -> one section per pretrained model.
The sections live in streaming/sections/ (corpus_parity, load, models); this module keeps the run's state,
the section order, the summary and its targets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechbench.asr.ctc.tokenizer import Tokenizer
from speechbench.common.fmt import fixed
from speechbench.common.measure import capture_environment
from speechbench.common.results import SectionedRun
from speechbench.streaming.bench_config import (
    SCHEMA,
    StreamingBenchConfig,
    engine_config_for,
    random_checkpoint,
)
from speechbench.streaming.engine import StreamingEngine, StreamingEngineConfig
from speechbench.streaming.loadgen import UttAudio
from speechbench.streaming.models.base import StreamingModel
from speechbench.streaming.models.ctc import CTCStreamingModel
from speechbench.streaming.sections.corpus_parity import CorpusParitySections
from speechbench.streaming.sections.load import LoadSections
from speechbench.streaming.sections.models import ModelSections, pooled_wer

log = logging.getLogger(__name__)


class StreamingBenchmark(CorpusParitySections, LoadSections, ModelSections, SectionedRun):
    """One Part 3 run: loads the CTC model, runs the sections (one module each under
    ``streaming/sections/``), and builds the summary with its targets."""

    def __init__(self, cfg: StreamingBenchConfig, output: Path, progress: bool = True) -> None:
        self.cfg = cfg
        self.output = Path(output)
        self.progress = progress
        self.device = torch.device(cfg.device)
        torch.set_grad_enabled(False)
        if cfg.checkpoint == "random":
            self.model, self.feat_cfg, payload = random_checkpoint(cfg.seed)
        else:
            from speechbench.asr.ctc.checkpoint import load_checkpoint

            self.model, self.feat_cfg, payload = load_checkpoint(cfg.checkpoint, self.device)
        if not self.model.cfg.causal:
            raise SystemExit(f"{cfg.checkpoint} is not a causal (streaming) model")
        self.model.to(self.device).eval()
        self.tokenizer = Tokenizer(payload["chars"])
        self.results: dict[str, Any] = {
            "schema": SCHEMA,
            "status": "running",
            "env": capture_environment(self.device),
            "config": asdict(cfg),
            "summary": {},
            "model": {"checkpoint": cfg.checkpoint, "params": self.model.num_params,
                      "config": self.model.cfg.to_json(), "meta": payload.get("meta", {}),
                      "features": self.feat_cfg.to_json()},
            "failures": [],
            "notes": [],
        }
        if cfg.checkpoint == "random":
            self.note("random weights (--checkpoint random): transcripts are noise; WER is not meaningful")
        self.pool: list[UttAudio] = []
        self.offline_hyp: dict[str, str] = {}
        # The model the engine serves in the section running now: the CTC model, or one of compare_models.
        self.serving: StreamingModel | None = None
        self.offline_fn: Callable[[list[np.ndarray]], list[str]] | None = None
        self.latency_bound_ms = cfg.latency_bound_ms
        # What the streams replay in the section running now: "synthetic" (the CTC model, trained on it) or
        # "mixed" (the pretrained recognizers: real and synthetic streams and one continuous-speech stream).
        self.kinds_mode = "synthetic"

    # -- plumbing ------------------------------------------------------------------------------------------

    def engine_config(self, **over: Any) -> StreamingEngineConfig:
        ec = engine_config_for(self.cfg, self.device)
        for k, v in over.items():
            setattr(ec, k, v)
        return ec

    def new_engine(self, on_event: Any, **over: Any) -> StreamingEngine:
        model = self.serving or CTCStreamingModel(self.model, self.feat_cfg, self.tokenizer, self.device,
                                                  graph=self.cfg.ctc_graph)
        from speechbench.streaming.models.registry import fit_engine_config

        eng = StreamingEngine(model, fit_engine_config(model, self.engine_config(**over), over), on_event=on_event)
        if self.serving is None:  # how the CTC step ran: one traced graph, or eager (and why)
            opts = model.options()
            self.results["model"]["step"] = {k: opts[k] for k in ("graph", "graph_error") if k in opts}
        eng.warmup((1, 8, min(64, eng.cfg.max_streams)))
        return eng

    # -- sections ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        if self.section("setup", self.setup) is None:
            self.results["status"] = "failed"
            self.save()
            return self.results
        self.section("offline", self.measure_offline)
        if self.cfg.transport != "ws":
            self.section("parity", self.measure_parity)
            self.section("sweep", lambda: self.sweep("engine", self.cfg.streams, self.cfg.duration_s,
                                                     stop_after_failures=2,
                                                     single_stream_s=self.single_stream_seconds()))
            self.section("baseline", lambda: self.sweep("baseline", self.cfg.baseline_streams,
                                                        self.cfg.baseline_duration_s, stop_at_failure=True,
                                                        max_batch=1, max_wait_ms=0.0))
            self.section("capacity", self.measure_capacity)
            if self.cfg.alt_chunk_ms:
                self.section("chunk_sizes", self.measure_chunk_sizes)
            self.section("overload", self.measure_overload)
        if self.cfg.transport != "inproc":
            from speechbench.streaming.network import measure_network

            self.section("network", lambda: measure_network(self))
        if self.cfg.soak_minutes > 0 and self.cfg.transport != "ws":
            self.section("soak", self.measure_soak)
        for spec in self.cfg.compare_models if self.cfg.transport != "ws" else []:
            self.section(f"model:{spec}", lambda spec=spec: self.measure_model(spec))
        self.results["summary"] = self.build_summary()
        self.results["total_seconds"] = round(time.perf_counter() - t0, 1)
        self.results["status"] = "complete" if not self.results["failures"] else "complete_with_failures"
        self.save()
        return self.results


    # -- summary ---------------------------------------------------------------------------------------------

    def build_summary(self) -> dict[str, Any]:
        res = self.results
        c = self.cfg
        sweep = res.get("sweep") or []
        base = res.get("baseline") or []
        s: dict[str, Any] = {"device": str(self.device), "device_name": res["env"].get("device_name"),
                             "quick": c.quick, "threads": torch.get_num_threads(),
                             "latency_bound_ms": c.latency_bound_ms, "chunk_ms": c.chunk_ms,
                             "model_chunk_ms": c.model_chunk_ms, "max_wait_ms": c.max_wait_ms,
                             "max_batch": c.max_batch, "endpoint": c.endpoint}
        keys = ("streams", "chunk_ms", "chunk_latency_ms_p50", "chunk_latency_ms_p95", "chunk_latency_ms_p99",
                "first_partial_ms_p95", "finalization_ms_p95", "rtf", "batch_utilization", "shed_chunks",
                "dropped_chunks", "refused_streams", "peak_memory_mb", "wer", "wer_offline", "sustained",
                "scheduler_busy_share")
        s["runs"] = [{k: r.get(k) for k in keys} for r in sweep]
        s["baseline_runs"] = [{k: r.get(k) for k in keys} for r in base]
        best = self.capacity_of("sweep")
        s["max_streams_p95_under_100ms"] = best  # confirmed: sustained in 2 of up to 3 runs
        s["baseline_max_streams_p95_under_100ms"] = self.capacity_of("baseline")
        s["coarse_max_streams"] = self.max_sustained(sweep)
        s["coarse_baseline_max_streams"] = self.max_sustained(base)
        caps = res.get("capacity") or {}
        s["capacity_repeats"] = {k: [{x: a.get(x) for x in ("streams", "phase", "sustained", "chunk_latency_ms_p95")}
                                     for a in v.get("attempts", [])] for k, v in caps.items()}
        s["capacity_search"] = {k: {x: v.get(x) for x in ("confirmed_streams", "first_failed_streams", "bisect_steps",
                                                          "top_level_held", "rule")} for k, v in caps.items()}
        tested_base = [r["streams"] for r in base]
        s["baseline_sweep_stopped_at"] = tested_base[-1] if tested_base else None
        bb = s["baseline_max_streams_p95_under_100ms"]
        s["batching_gain_streams"] = best / bb if bb else None
        sustained = [r for r in sweep if r["sustained"]] or sweep
        s.update(pooled_wer(sustained))
        off = res.get("offline") or {}
        if off:
            s["wer_offline_pool"] = off["wer_pool"]["wer"]
        par = res.get("parity") or {}
        if par:
            s["parity_identical_rate"] = par["identical_rate"]
        one = next((r for r in sweep if r["streams"] == 1), None)
        if one:
            s["single_stream"] = {k: one.get(k) for k in ("duration_s", "utterances_scored",
                                                         "chunk_latency_ms_p95", "first_partial_ms_p50",
                                                         "first_partial_ms_p95", "finalization_ms_p50",
                                                         "finalization_ms_p95",
                                                         "finalization_after_endpoint_ms_p50",
                                                         "finalization_after_endpoint_ms_p95",
                                                         "endpoint_silence_ms", "rtf")}
        at = self.run_at(best)
        if at:
            s["at_max_sustained"] = {k: at.get(k) for k in keys + ("batch_size_mean", "throughput_audio_s_per_s")}
        alt = res.get("chunk_sizes") or []
        if alt:
            s["chunk_sizes"] = [{k: r.get(k) for k in ("streams", "chunk_ms", "chunk_latency_ms_p50",
                                                       "chunk_latency_ms_p95", "scheduler_busy_share",
                                                       "batch_utilization", "sustained")} for r in alt]
        ov = res.get("overload") or {}
        if ov:
            s["overload"] = {k: ov.get(k) for k in ("streams", "sustainable_streams", "admission_cap",
                                                   "admitted_streams",
                                                   "refused_streams", "shed_chunks", "stayed_up",
                                                   "chunk_latency_ms_p95", "chunk_latency_ms_max",
                                                   "degraded_with_count")}
        s["peak_memory_mb"] = max((r["peak_memory_mb"] for r in sweep if r.get("peak_memory_mb")), default=None)
        ctc = {"name": Path(c.checkpoint).stem if c.checkpoint != "random" else "ctc-random",
               "precision": "float32", "params": self.model.num_params, "batching": "batched",
               "chunk_ms": c.model_chunk_ms}
        # the CTC row's capacities are the confirmed ones of the headline (its capacity search included)
        s["models"] = [self.model_row({"model": ctc, "sweep": sweep, "baseline": base, "capacity": caps,
                                       "latency_bound_ms": c.latency_bound_ms})]
        for spec, rec in (res.get("models") or {}).items():
            s["models"].append(rec.get("summary") or {"model": spec, "failed": True})
        from speechbench.streaming.network import network_summary

        s["network"] = network_summary({**res, "summary": s})
        s["targets"] = self.targets(s, at, one, ov)
        s["failures"] = len(res["failures"])
        return s

    def targets(self, s: dict[str, Any], at: dict | None, one: dict | None, ov: dict) -> dict[str, Any]:
        """Each target of the issue: the figure, the threshold, met or not (None: not measured)."""

        def t(value: Any, threshold: Any, ok: bool | None, what: str) -> dict[str, Any]:
            return {"value": value, "threshold": threshold, "met": ok, "what": what}

        best = s.get("max_streams_p95_under_100ms") or 0
        util = at.get("batch_utilization") if at else None
        mem = s.get("peak_memory_mb")
        st = s.get("single_stream") or {}
        gap = s.get("wer_gap_points")
        gain = s.get("batching_gain_streams")

        def cmp(v: Any, fn: Callable[[Any], bool]) -> bool | None:
            return None if v is None else bool(fn(v))

        out = {
            # The key names follow the 100 ms target; a looser --latency-bound-ms cannot meet it.
            "streams_p95_under_100ms": t(best, ">= 50", best >= 50 and self.cfg.latency_bound_ms <= 100,
                                         f"largest load with p95 chunk latency < "
                                         f"{self.cfg.latency_bound_ms:g} ms, nothing shed, dropped or refused, "
                                         f"in 2 of up to {self.cfg.capacity_repeats} runs"),
            "batch_utilization_at_that_load": t(util, "> 0.8", cmp(util, lambda v: v > 0.8),
                                                "mean batch size / min(max_batch, live streams) per step"),
            "peak_memory_mb": t(mem, "< 8192", cmp(mem, lambda v: v < 8192), "peak over the sweep levels"),
            "single_stream_first_partial_ms_p95": t(st.get("first_partial_ms_p95"), "<= 300",
                                                    cmp(st.get("first_partial_ms_p95"), lambda v: v <= 300),
                                                    "speech onset -> first non-empty partial, one stream, "
                                                    f"{st.get('utterances_scored')} utterances"),
            # The bound is "after the endpoint": the endpoint is the end of speech plus the
            # endpointer's required trailing silence, the earliest moment the rule can decide. The wait a
            # user sees (from the end of speech, silence included) is reported beside it, never hidden.
            "single_stream_finalization_ms_p95": t(st.get("finalization_after_endpoint_ms_p95"), "<= 150",
                                                   cmp(st.get("finalization_after_endpoint_ms_p95"),
                                                       lambda v: v <= 150),
                                                   "endpoint (end of speech + the endpointer's "
                                                   f"{st.get('endpoint_silence_ms')} ms silence rule) -> final, "
                                                   f"one stream, {st.get('utterances_scored')} utterances; from "
                                                   "the end of speech itself: "
                                                   f"{fixed(st.get('finalization_ms_p95'))} ms p95"),
            "single_stream_rtf": t(st.get("rtf"), "<= 0.2", cmp(st.get("rtf"), lambda v: v <= 0.2),
                                   f"engine compute time / audio time, one stream, {fixed(st.get('duration_s'), 0)} s"),
            "wer_within_1_point_of_offline": t(gap, "<= 1.0", cmp(gap, lambda v: v <= 1.0),
                                               "streaming WER - offline WER of the same model, same audio, points"),
            "batching_gain_vs_per_stream": t(gain, ">= 3", cmp(gain, lambda v: v >= 3),
                                             "max sustained streams, engine / per-stream baseline (a lower bound "
                                             "when the engine sweep's largest level was sustained)"),
            "overload_stays_up_and_sheds_with_count": t(
                ov.get("streams") if ov else None, "2x sustainable",
                (bool(ov.get("stayed_up") and ov.get("degraded_with_count")) if ov else None),
                "engine alive at 2x load; refused streams / shed chunks counted"),
        }
        net = s.get("network")
        if net:
            cap, share = net["max_streams_p95_under_100ms"], net["share_of_in_process"]
            p95 = net["admitted_p95_ms_at_2x"]
            out["network_streams_p95_under_100ms"] = t(cap, ">= 50", cap >= 50, "WebSocket clients on loopback, "
                                                       "client-side p95 chunk latency, nothing shed")
            top = max(self.cfg.streams) if self.cfg.streams else None
            upper = top is not None and net.get("in_process_max_streams") == top
            out["network_share_of_in_process"] = t(
                share, ">= 0.7", None if upper else cmp(share, lambda v: v >= 0.7),
                "network capacity / in-process capacity, same run (levels tested up to the in-process capacity)"
                + ("; the in-process sweep held its largest level, so this share is only an upper bound" if upper
                   else ""))
            out["network_2x_refused_and_bounded"] = t(
                p95, "< 200 ms, excess refused", (bool(net["server_up_at_2x"] and net["refused_streams_at_2x"]
                                                       and p95 is not None and p95 < 200) if cap else None),
                "twice the network capacity against --max-streams = it: server up, excess refused with 503, "
                "admitted clients' p95")
        return out
