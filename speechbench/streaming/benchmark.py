"""Part 3 benchmark: the streaming engine under real-time load, swept over the number of streams.

Sections (each written to the JSON as soon as it is done; a failing section is recorded, not fatal):
setup (model, corpus, utterance pool) -> offline (whole-utterance greedy transcripts of the same causal
model on the same audio) -> parity (the engine, unpaced, many streams joining and leaving, vs offline)
-> sweep (engine, one level per stream count) -> baseline (the same engine with max_batch 1: no
cross-stream batching) -> overload (twice the sustainable load) -> soak (optional).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechbench.asr.ctc.decode import greedy_decode
from speechbench.asr.ctc.features import FeatureConfig, LogMel, waveforms_to_batch
from speechbench.asr.ctc.model import CTCModel, build_ctc_model
from speechbench.asr.ctc.tokenizer import CHARS, Tokenizer
from speechbench.common.measure import PeakMemory, capture_environment, host_rss_mb
from speechbench.common.noise import NoiseMonitor
from speechbench.common.results import SectionedRun
from speechbench.streaming.capacity import CapacitySearch, SearchConfig, compact_run
from speechbench.streaming.engine import StreamingEngine, StreamingEngineConfig
from speechbench.streaming.loadgen import (
    Collector,
    LoadConfig,
    UttAudio,
    run_load,
    score_tracks,
    speech_bounds,
    wer_counts,
)
from speechbench.streaming.models.base import StreamingModel
from speechbench.streaming.models.ctc import CTCStreamingModel

log = logging.getLogger(__name__)
SCHEMA = "streaming_performance/1"
REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINED_ACCENTS = ("en-us", "en", "piper")  # what models/ctc-streaming.pt was trained on


@dataclass
class StreamingBenchConfig:
    device: str = "cpu"
    seed: int = 0
    quick: bool = False
    threads: int | None = None
    checkpoint: str = "models/ctc-streaming.pt"  # or "random": seeded random weights (smoke runs only)
    manifest: str | None = None  # None: the cached default corpus (quick: the quick corpus)
    accents: list[str] = field(default_factory=lambda: list(TRAINED_ACCENTS))  # ["all"]: every accent
    utterances: int = 120  # utterance pool the streams replay (spread over the accents)
    # The sweep stops after two consecutive levels not sustained (one failure between sustained levels is
    # noise on a shared machine, and is kept in the JSON as such).
    streams: list[int] = field(default_factory=lambda: [1, 10, 25, 50, 100, 200, 300, 400])
    chunk_ms: int = 40  # client chunk
    alt_chunk_ms: list[int] = field(default_factory=lambda: [20])  # also run the confirmed capacity with these
    model_chunk_ms: int = 40
    max_batch: int = 512
    max_wait_ms: float = 40.0
    max_streams: int = 512
    max_queue_ms: float = 500.0
    overload_ms: float = 250.0
    max_duty: float = 0.9
    duration_s: float = 20.0  # audio per stream per load level
    ramp_s: float = 2.0
    gap_s: tuple[float, float] = (0.3, 1.0)
    endpoint: str = "blank"
    endpoint_silence_ms: float = 300.0
    latency_bound_ms: float = 100.0
    baseline_streams: list[int] = field(default_factory=lambda: [1, 4, 8, 12, 16, 24, 32])
    baseline_duration_s: float = 20.0  # the same audio per level as the engine's sweep
    # Capacity search after each coarse sweep (streaming/capacity.py): a level holds when it is sustained
    # in 2 of at most `capacity_repeats` runs; then bisect between the highest level that holds and the
    # first that does not, to `capacity_resolution` of the former, at most `capacity_bisect_steps` times.
    capacity_repeats: int = 3
    capacity_resolution: float = 0.125
    capacity_bisect_steps: int = 2
    compare_bisect_steps: int = 1  # the same for the pretrained recognizers (a Whisper level takes ~25 s)
    network_bisect_steps: int = 1  # and over the network (its levels are fractions of in-process capacity)
    overload_duration_s: float = 20.0
    soak_minutes: float = 0.0
    parity_streams: int = 16  # concurrent streams in the unpaced parity run
    # Pretrained recognizers served by the same engine beside the CTC model (the accuracy-vs-capacity table):
    # each gets an offline pass, a sweep and, when it batches, a per-stream baseline; levels stop at the first
    # one not sustained.
    compare_models: list[str] = field(default_factory=lambda: ["whisper-tiny.en", "moonshine-tiny"])
    compare_streams: list[int] = field(default_factory=lambda: [1, 4, 8, 16, 20, 24, 32])
    compare_duration_s: float = 20.0
    # Re-decoding models buffer a whole model chunk (Whisper: 1 s) before they can say anything about it: a
    # level counts as sustained when p95 chunk latency stays under that chunk plus this bound.
    redecode_bound_ms: float = 1000.0
    # Over the network (streaming/network.py): "both" = in-process sections then the WebSocket sweep;
    # "inproc" = no server; "ws" = only the WebSocket sweep (levels: network_streams or the sweep levels).
    transport: str = "both"
    network_streams: list[int] | None = None  # None: 1/4, 1/2, 0.7 and all of the in-process capacity
    network_duration_s: float = 20.0
    network_overload_bound_ms: float = 200.0  # admitted clients' p95 at twice the network capacity

    @classmethod
    def quick_preset(cls, **overrides: Any) -> StreamingBenchConfig:
        base = cls(quick=True, utterances=12, streams=[1, 8], duration_s=6.0, ramp_s=0.5, baseline_streams=[1, 4],
                   baseline_duration_s=4.0, overload_duration_s=4.0, parity_streams=4,
                   compare_streams=[1, 2], compare_duration_s=5.0, network_streams=[4], network_duration_s=3.0,
                   capacity_bisect_steps=1, compare_bisect_steps=0, network_bisect_steps=0)
        for k, v in overrides.items():
            setattr(base, k, v)
        return base


def random_checkpoint(seed: int) -> tuple[CTCModel, FeatureConfig, dict[str, Any]]:
    torch.manual_seed(seed)
    return build_ctc_model("streaming").eval(), FeatureConfig(), {"chars": CHARS, "meta": {"name": "random"}}


def engine_config_for(c: StreamingBenchConfig, device: torch.device | str = "cpu") -> StreamingEngineConfig:
    """The engine settings a benchmark config implies (the CLI validates them before any section runs)."""
    return StreamingEngineConfig(model_chunk_ms=c.model_chunk_ms, max_streams=c.max_streams, max_batch=c.max_batch,
                        max_wait_ms=c.max_wait_ms, max_queue_ms=c.max_queue_ms, overload_ms=c.overload_ms,
                        max_duty=c.max_duty, max_chunk_ms=max(StreamingEngineConfig.max_chunk_ms, float(c.chunk_ms)),
                        endpoint=c.endpoint, endpoint_silence_ms=c.endpoint_silence_ms, device=str(device))


class StreamingBenchmark(SectionedRun):
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

    # -- plumbing ------------------------------------------------------------------------------------------

    def engine_config(self, **over: Any) -> StreamingEngineConfig:
        ec = engine_config_for(self.cfg, self.device)
        for k, v in over.items():
            setattr(ec, k, v)
        return ec

    def new_engine(self, on_event: Any, **over: Any) -> StreamingEngine:
        model = self.serving or CTCStreamingModel(self.model, self.feat_cfg, self.tokenizer, self.device)
        from speechbench.streaming.models.registry import fit_engine_config

        eng = StreamingEngine(model, fit_engine_config(model, self.engine_config(**over), over), on_event=on_event)
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
                                                     stop_after_failures=2))
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

    def setup(self) -> dict[str, Any]:
        from speechbench.speech.manifest import read_manifest

        c = self.cfg
        if c.manifest:
            manifest = Path(c.manifest)
        else:
            from speechbench.speech.corpus import build_corpus, preset

            manifest = build_corpus(preset("quick" if c.quick else "default"), progress=self.progress).manifest
        res = read_manifest(manifest)
        utts = [u for u in res.utterances if u.condition == "clean"] or res.utterances
        if c.accents and c.accents != ["all"]:
            utts = [u for u in utts if u.dialect in c.accents]
        if not utts:
            raise RuntimeError(f"no utterances in {manifest} for accents {c.accents}")
        # Spread the pool over accents: round-robin by accent, seeded order within each.
        rng = np.random.default_rng(c.seed)
        by_acc: dict[str, list] = {}
        for u in utts:
            by_acc.setdefault(u.dialect, []).append(u)
        lists = [list(np.array(v, dtype=object)[rng.permutation(len(v))]) for _, v in sorted(by_acc.items())]
        picked = []
        while len(picked) < c.utterances and any(lists):
            for lst in lists:
                if lst and len(picked) < c.utterances:
                    picked.append(lst.pop())
        from speechbench.speech.audio import load_audio

        for u in picked:
            audio = load_audio(u.audio_path or u.audio_filepath).astype(np.float32)
            on, off = speech_bounds(audio)
            self.pool.append(UttAudio(u.id, u.text, audio, on, off, u.dialect))
        dur = [len(u.audio) / 16000 for u in self.pool]
        return {"manifest": str(manifest), "manifest_failures": len(res.failures), "pool_utterances": len(self.pool),
                "pool_audio_s": float(sum(dur)), "pool_accents": sorted({u.dialect for u in self.pool}),
                "utterance_s_mean": float(np.mean(dur)),
                "speech_s_mean": float(np.mean([(u.offset - u.onset) / 16000 for u in self.pool])),
                "reference_timing": "speech onset/end per utterance from 10 ms frame energy of the clean audio "
                                    "(> max(-45 dBFS, peak - 40 dB))"}

    def measure_offline(self) -> dict[str, Any]:
        """Whole-utterance pass of the same causal model on the same audio: the parity reference."""
        extractor = LogMel(self.feat_cfg).to(self.device)
        t0 = time.perf_counter()
        bs = 16
        for i in range(0, len(self.pool), bs):
            chunk = self.pool[i: i + bs]
            wave, lens = waveforms_to_batch([u.audio for u in chunk])
            feats, flen = extractor(wave.to(self.device), lens.to(self.device))
            lp, olen = self.model(feats, flen)
            for u, ids in zip(chunk, greedy_decode(lp, olen), strict=True):
                self.offline_hyp[u.id] = self.tokenizer.decode(ids)
        secs = time.perf_counter() - t0
        w = wer_counts([u.text for u in self.pool], [self.offline_hyp[u.id] for u in self.pool])
        audio_s = sum(len(u.audio) for u in self.pool) / 16000
        return {"wer_pool": w, "seconds": secs, "rtf": secs / audio_s, "decoder": "greedy",
                "examples": [{"ref": u.text, "hyp": self.offline_hyp[u.id]} for u in self.pool[:3]]}

    def measure_parity(self) -> dict[str, Any]:
        """The engine, fed as fast as it consumes (not paced), many streams joining and leaving mid-batch,
        endpointing off: each utterance's transcript must equal the offline one exactly."""
        got: dict[str, list[str]] = {}

        def sink(ev: Any) -> None:
            if ev.kind == "final":
                got.setdefault(ev.stream_id, []).append(ev.text)

        # Unpaced on purpose (the scheduler is always busy): admission by load is off here.
        eng = self.new_engine(sink, endpoint="none", max_wait_ms=0.0, max_duty=2.0, overload_ms=1e9)
        step = eng.step_samples
        todo = list(range(len(self.pool)))
        active: dict[str, tuple[int, int]] = {}  # stream -> (utt, position)
        futures = {}
        t0 = time.perf_counter()
        n = 0
        try:
            while todo or active:
                while todo and len(active) < self.cfg.parity_streams:
                    k = todo.pop(0)
                    sid = f"p{n}"
                    n += 1
                    eng.add_stream(sid)
                    active[sid] = (k, 0)
                for sid, (k, pos) in list(active.items()):
                    a = self.pool[k].audio
                    eng.process_chunk(sid, np.ascontiguousarray(a[pos: pos + step]))
                    if pos + step >= len(a):
                        futures[sid] = (k, eng.finalize_stream(sid))
                        del active[sid]
                    else:
                        active[sid] = (k, pos + step)
                while eng.backlog_samples() > step * max(1, len(active)):
                    time.sleep(0.001)
            results = [(k, f.result(timeout=60)) for k, f in futures.values()]
        finally:
            stats = eng.stats()
            eng.stop()
        secs = time.perf_counter() - t0
        same = [text == self.offline_hyp[self.pool[k].id] for k, text in results]
        mism = [{"utt": self.pool[k].id, "streaming": text, "offline": self.offline_hyp[self.pool[k].id]}
                for k, text in results if text != self.offline_hyp[self.pool[k].id]]
        return {"utterances": len(results), "identical": int(sum(same)), "identical_rate": float(np.mean(same)),
                "mismatches": mism[:10], "seconds": secs, "batch_size_mean": stats["batch_size_mean"],
                "shed_chunks": stats["shed_chunks"],
                "method": f"{self.cfg.parity_streams} concurrent streams, a new one joining as each finishes; "
                          "endpointing off; unpaced (each round waits for the engine); final chunk zero-padded"}

    def run_level(self, streams: int, duration_s: float, label: str, chunk_ms: int | None = None,
                  **over: Any) -> dict[str, Any]:
        collector = Collector()
        eng = self.new_engine(collector, **over)
        chunk_ms = chunk_ms or self.cfg.chunk_ms
        lcfg = LoadConfig(streams=streams, duration_s=duration_s, chunk_ms=chunk_ms,
                          ramp_s=min(self.cfg.ramp_s, duration_s / 4), gap_s=self.cfg.gap_s,
                          seed=self.cfg.seed + streams)
        monitor = NoiseMonitor(probe=False)  # per level: steal and other processes' CPU (the probe is per section)
        monitor.start()
        try:
            with PeakMemory(self.device) as pm:
                raw = run_load(eng, self.pool, lcfg)
                alive = eng.alive
            stats = eng.stats()
        finally:
            eng.stop()
            noise = monitor.stop()
        scored = score_tracks(raw["tracks"], self.pool, raw["total_samples"], eng.cfg.endpoint_silence_ms)
        rows = scored["utterances"]
        # WER on each stream's transcript (its completed utterances in order); the offline side joins the
        # same utterances' offline transcripts in the same order (see score_tracks for why).
        srows = scored["streams"]
        refs = [" ".join(self.pool_by_id[u].text for u in s["utts"]) for s in srows]
        w = wer_counts(refs, [s["hyp"] for s in srows])
        offline = self.offline_for([u for s in srows for u in s["utts"]])
        wo = wer_counts(refs, [" ".join(offline.get(u, "") for u in s["utts"]) for s in srows])
        for d in (w, wo):
            d["streams"], d["utterances"] = d.pop("utterances", len(srows)), sum(len(s["utts"]) for s in srows)
        fp = np.array(scored["first_partial_ms"])
        fm = np.array(scored["finalization_ms"])
        fa = np.array(scored["finalization_after_endpoint_ms"])
        lat = stats["chunk_latency_ms"]
        admitted = sum(t.admitted for t in raw["tracks"])
        # Chunks lost after they were accepted, or refused because their stream had failed; streams whose
        # final never came are a separate count (a stream is not a chunk).
        dropped = stats["dropped_chunks"] + raw["send_errors"]
        def pct(a: np.ndarray, q: float) -> float | None:
            return float(np.percentile(a, q)) if a.size else None
        out = {
            "label": label, "streams": streams, "admitted_streams": admitted,
            "refused_streams": stats["refused_streams"], "refusals": stats["refusals"],
            "chunk_ms": chunk_ms, "model_chunk_ms": eng.cfg.model_chunk_ms,
            "max_batch": eng.cfg.max_batch, "max_wait_ms": eng.cfg.max_wait_ms, "duration_s": duration_s,
            "chunk_latency_ms_p50": lat.get("p50"), "chunk_latency_ms_p95": lat.get("p95"),
            "chunk_latency_ms_p99": lat.get("p99"), "chunk_latency_ms_max": lat.get("max"),
            "chunk_latency_ms_mean": lat.get("mean"), "chunks_measured": lat.get("n", 0),
            "first_partial_ms_p50": pct(fp, 50), "first_partial_ms_p95": pct(fp, 95),
            "finalization_ms_p50": pct(fm, 50), "finalization_ms_p95": pct(fm, 95),
            "finalization_after_endpoint_ms_p50": pct(fa, 50), "finalization_after_endpoint_ms_p95": pct(fa, 95),
            "endpoint_silence_ms": eng.cfg.endpoint_silence_ms,
            "rtf": stats["compute_rtf"], "batch_utilization": stats["batch_utilization"],
            # share of the level's wall time the scheduler spent stepping (the rest it waited for audio)
            "scheduler_busy_share": stats["busy_s"] / raw["wall_s"] if raw["wall_s"] else None,
            "batch_fill_of_ready": stats["batch_fill_of_ready"], "batch_size_mean": stats["batch_size_mean"],
            "shed_chunks": stats["shed_chunks"], "dropped_chunks": dropped, "failed_streams": stats["failed_streams"],
            "unfinished_streams": raw["unfinished"],
            "peak_memory_mb": pm.report.peak_mb, "host_rss_peak_mb": pm.report.host_rss_peak_mb,
            "cuda_peak_allocated_mb": pm.report.cuda_peak_allocated_mb,
            "wer": w["wer"], "wer_offline": wo["wer"], "wer_detail": w, "wer_offline_detail": wo, "utterances_scored": len(rows),
            "excluded_streams": scored["excluded_streams"],
            "throughput_audio_s_per_s": stats["audio_s"] / raw["wall_s"] if raw["wall_s"] else None,
            "engine_alive": alive, "loadgen_lag_ms": raw["lag"].summary(), "loadgen_behind_chunks": raw["behind_chunks"],
            "wall_s": raw["wall_s"], "drain_s": raw["drain_s"], "engine": stats, "noise": noise,
            "examples": [{"ref": self.pool_by_id[r["utt"]].text, "hyp": r["hyp"]} for r in rows[:2]],
            # what the WER is computed on, for the first streams: reference, streaming and offline transcripts
            "transcripts": [{"stream": st["stream"], "utts": st["utts"], "ref": ref, "hyp": st["hyp"],
                             "offline": " ".join(offline.get(u, "") for u in st["utts"])}
                            for st, ref in list(zip(srows, refs, strict=True))[:4]],
        }
        out["sustained"] = bool(
            alive and admitted == streams and out["shed_chunks"] == 0 and dropped == 0
            and out["failed_streams"] == 0 and out["unfinished_streams"] == 0 and lat.get("p95") is not None
            and lat["p95"] < self.latency_bound_ms)
        out["latency_bound_ms"] = self.latency_bound_ms
        st = stats["stage_ms"]
        out["step_ms"] = stats.get("step_ms")
        out["model_step_ms"] = st.get("model")
        return out

    @property
    def pool_by_id(self) -> dict[str, UttAudio]:
        if not hasattr(self, "_pool_by_id"):
            self._pool_by_id = {u.id: u for u in self.pool}
        return self._pool_by_id

    def sweep(self, name: str, levels: list[int], duration_s: float, stop_at_failure: bool = False,
              store: dict[str, Any] | None = None, stop_after_failures: int | None = None,
              **over: Any) -> list[dict[str, Any]]:
        """Run each load level; after each, the runs so far go into ``store[name]`` (default: the results)
        and the JSON is saved, so a crash keeps the levels already measured."""
        runs: list[dict[str, Any]] = []
        store = self.results if store is None else store
        for n in levels:
            t0 = time.perf_counter()
            r = self.run_level(n, duration_s, name, **over)
            runs.append(r)
            store[name] = runs
            self.save()
            log.info("%s %4d streams: p50 %s p95 %s ms, batch %.1f, util %s, shed %d, refused %d, wer %s "
                     "(offline %s) [%.0f s]", name, n, _r(r["chunk_latency_ms_p50"]), _r(r["chunk_latency_ms_p95"]),
                     r["batch_size_mean"] or 0, _r(r["batch_utilization"], 2), r["shed_chunks"],
                     r["refused_streams"], _r(r["wer"], 3), _r(r["wer_offline"], 3), time.perf_counter() - t0)
            if stop_at_failure and not r["sustained"]:
                break
            if stop_after_failures and len(runs) >= stop_after_failures and not any(
                    x["sustained"] for x in runs[-stop_after_failures:]):
                break
        return runs

    PER_STREAM = {"max_batch": 1, "max_wait_ms": 0.0}  # the baseline: the same engine, one stream per step

    def measure_capacity(self) -> dict[str, Any]:
        """The confirmed capacity of the engine and of the per-stream baseline (see streaming/capacity.py)."""
        c = self.cfg
        self.search_capacity("engine", "sweep", c.duration_s, c.capacity_bisect_steps)
        self.search_capacity("baseline", "baseline", c.baseline_duration_s, c.capacity_bisect_steps,
                             **self.PER_STREAM)
        return self.results["capacity"]

    def measure_chunk_sizes(self) -> list[dict[str, Any]]:
        """The confirmed capacity again with smaller client chunks (the model chunk unchanged), so the
        buffering delay until a model chunk is complete counts, and twice the messages per second."""
        cap = self.capacity_of("sweep")
        out: list[dict[str, Any]] = []
        for ms in self.cfg.alt_chunk_ms:
            if cap:
                out.append(self.run_level(cap, self.cfg.duration_s, f"chunk {ms} ms", chunk_ms=ms))
                self.results["chunk_sizes"] = out
                self.save()
        return out

    def search_capacity(self, label: str, sweep_key: str, duration_s: float, bisect_steps: int,
                        store: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
        """Confirm and refine the capacity ``store[sweep_key]`` (a coarse sweep) suggests; every extra run is
        kept in full under ``store["capacity"][sweep_key]["runs"]``, saved as it lands."""
        store = self.results if store is None else store
        caps = store.setdefault("capacity", {})
        runs: list[dict[str, Any]] = []
        c = self.cfg

        def run(n: int) -> dict[str, Any]:
            r = self.run_level(n, duration_s, label, **over)
            runs.append(r)
            log.info("%s capacity %4d streams: p95 %s ms, sustained %s", label, n, _r(r["chunk_latency_ms_p95"]),
                     r["sustained"])
            return compact_run(r)

        search = CapacitySearch(run, SearchConfig(repeats=c.capacity_repeats, need=min(2, c.capacity_repeats),
                                                  resolution=c.capacity_resolution, max_bisect_steps=bisect_steps),
                                on_attempt=lambda _: (caps.__setitem__(sweep_key, {"attempts": search.attempts,
                                                                                   "runs": runs, "partial": True}),
                                                      self.save()))
        out = search.search([compact_run(r) for r in store.get(sweep_key) or []])
        caps[sweep_key] = out | {"runs": runs, "duration_s": duration_s}
        self.save()
        return caps[sweep_key]

    def capacity_of(self, sweep_key: str = "sweep", store: dict[str, Any] | None = None) -> int:
        """The confirmed capacity when the search ran, else the coarse sweep's largest sustained level."""
        store = self.results if store is None else store
        cap = (store.get("capacity") or {}).get(sweep_key) or {}
        if "confirmed_streams" in cap:
            return cap["confirmed_streams"]
        return self.max_sustained(store.get(sweep_key))

    def run_at(self, streams: int, sweep_key: str = "sweep", store: dict[str, Any] | None = None) -> dict | None:
        """A sustained run at ``streams`` (the sweep's, else the capacity search's), for the summary's detail."""
        store = self.results if store is None else store
        runs = list(store.get(sweep_key) or []) + list(((store.get("capacity") or {}).get(sweep_key) or {})
                                                         .get("runs") or [])
        return next((r for r in runs if r["streams"] == streams and r["sustained"]), None)

    def offline_for(self, utt_ids: list[str]) -> dict[str, str]:
        """Offline transcripts of these utterances by the model being served (computed once, when first
        needed: a compare model's sweep scores a few dozen of the pool's utterances, not all of them)."""
        missing = sorted({u for u in utt_ids if u not in self.offline_hyp})
        if missing and self.offline_fn is not None:
            texts = self.offline_fn([self.pool_by_id[u].audio for u in missing])
            self.offline_hyp.update(zip(missing, texts, strict=True))
        return self.offline_hyp

    def measure_model(self, spec: str) -> dict[str, Any]:
        """One pretrained recognizer served by the engine: a sweep (stopping at the first level it cannot
        sustain) and, for a model whose steps batch across streams, the same policy run per stream
        (max_batch 1), each level's streaming WER next to the same recognizer's offline WER."""
        from speechbench.streaming.models.registry import load_streaming_model

        c = self.cfg
        t0 = time.perf_counter()
        loaded = load_streaming_model(spec, self.device, c.threads, c.checkpoint, c.seed)
        chunk = loaded.model.default_chunk_ms
        saved = (self.serving, self.offline_hyp, self.offline_fn, self.latency_bound_ms)
        self.serving, self.offline_hyp, self.offline_fn = loaded.model, {}, loaded.offline
        self.latency_bound_ms = c.latency_bound_ms if chunk <= c.model_chunk_ms else chunk + c.redecode_bound_ms
        rec: dict[str, Any] = {"spec": spec, "model": loaded.model.info(), "recognizer": loaded.info,
                               "load_s": time.perf_counter() - t0, "offline_method": loaded.offline_method,
                               "latency_bound_ms": self.latency_bound_ms, "endpoint": "vad"
                               if loaded.model.frame_ms is None else c.endpoint}
        self.results.setdefault("models", {})[spec] = rec
        try:
            self.sweep("sweep", c.compare_streams, c.compare_duration_s, stop_at_failure=True, store=rec)
            self.search_capacity(f"{spec}", "sweep", c.compare_duration_s, c.compare_bisect_steps, store=rec)
            if loaded.model.batching == "batched":
                self.sweep("baseline", c.compare_streams, c.compare_duration_s, stop_at_failure=True, store=rec,
                           **self.PER_STREAM)
                self.search_capacity(f"{spec} per stream", "baseline", c.compare_duration_s, c.compare_bisect_steps,
                                     store=rec, **self.PER_STREAM)
            rec["offline_utterances"] = len(self.offline_hyp)
            if hasattr(loaded.model, "revised_finals"):  # finals that replaced words partials had committed
                rec["finals"] = {"segments": loaded.model.finals, "revised_committed": loaded.model.revised_finals}
            rec["summary"] = self.model_row(rec)
        finally:
            loaded.close()
            self.serving, self.offline_hyp, self.offline_fn, self.latency_bound_ms = saved
        return rec

    def model_row(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The streaming table's row of one model: accuracy, speed, latency, capacity, memory."""
        sweep = rec.get("sweep") or []
        base = rec.get("baseline") or []
        sustained = [r for r in sweep if r["sustained"]] or sweep
        one = next((r for r in sweep if r["streams"] == 1), None)
        model = rec.get("model") or {}
        row = {"model": model.get("name"), "precision": model.get("precision"), "params": model.get("params"),
               "engine": f"{model.get('batching')} steps of {model.get('chunk_ms')} ms"
                         + (f", {model['options']['policy']}" if "policy" in (model.get("options") or {}) else ""),
               "latency_bound_ms": rec.get("latency_bound_ms"),
               "max_sustained_streams": self.capacity_of("sweep", rec),
               "per_stream_max_sustained_streams": self.capacity_of("baseline", rec) if base else None,
               "coarse_max_sustained_streams": self.max_sustained(sweep),
               "levels_tested": [r["streams"] for r in sweep],
               "peak_memory_mb": max((r["peak_memory_mb"] for r in sweep if r.get("peak_memory_mb")), default=None)}
        row.update(pooled_wer(sustained))
        if one:
            step = one.get("step_ms") or {}
            chunk = one.get("model_chunk_ms") or 1
            row["rtf_p50"] = step["p50"] / chunk if step.get("p50") is not None else None
            row["rtf_p95"] = step["p95"] / chunk if step.get("p95") is not None else None
            row["rtf"] = one.get("rtf")
            for k in ("first_partial_ms_p95", "finalization_ms_p95", "finalization_after_endpoint_ms_p95",
                      "chunk_latency_ms_p50", "chunk_latency_ms_p95"):
                row[k] = one.get(k)
        return row

    def max_sustained(self, runs: list[dict[str, Any]] | None) -> int:
        ok = [r["streams"] for r in runs or [] if r["sustained"]]
        return max(ok) if ok else 0

    def measure_overload(self) -> dict[str, Any]:
        """Twice the largest sustained load: the engine must stay up, shed or refuse with counts, and the
        streams it admitted must keep bounded latency.

        Run twice. First as an operator would deploy it: ``max_streams`` set to the capacity the sweep just
        measured (capacity planning from a load test). Then with admission left to the slot count and the
        runtime rules alone (queue age, scheduler duty cycle): those react within about a second, too late
        for a load that arrives in a ``ramp_s`` burst, so that run admits more than it can serve and sheds.
        """
        sustainable = self.capacity_of("sweep")
        n = max(2, 2 * sustainable)
        cap = max(1, min(sustainable, self.cfg.max_streams))
        r = self.run_level(n, self.cfg.overload_duration_s, "overload", max_streams=cap)
        r["sustainable_streams"] = sustainable
        r["admission_cap"] = cap
        r["admission_rule"] = ("max_streams = the sweep's largest sustained load, plus the runtime rules "
                               f"(queue age > {self.cfg.overload_ms:g} ms, duty cycle > {self.cfg.max_duty:g})")
        r["latency_bound_for_admitted_ms"] = self.cfg.max_queue_ms + 4 * self.cfg.model_chunk_ms
        r["stayed_up"] = bool(r["engine_alive"])
        r["degraded_with_count"] = bool(r["shed_chunks"] or r["refused_streams"]) or r["sustained"]
        if cap < self.cfg.max_streams:
            slots = self.run_level(n, self.cfg.overload_duration_s, "overload-slot-capacity")
            r["slot_capacity_only"] = {k: slots.get(k) for k in (
                "streams", "admitted_streams", "refused_streams", "refusals", "shed_chunks", "engine_alive",
                "chunk_latency_ms_p50", "chunk_latency_ms_p95", "chunk_latency_ms_max")}
            r["slot_capacity_only"]["max_streams"] = self.cfg.max_streams
        return r

    def measure_soak(self) -> dict[str, Any]:
        """Sustainable load for --soak-minutes, host RSS sampled every 5 s: memory must not grow."""
        n = max(1, self.capacity_of("sweep"))
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        t0 = time.perf_counter()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter() - t0, host_rss_mb()))
                stop.wait(5.0)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            r = self.run_level(n, 60.0 * self.cfg.soak_minutes, "soak")
        finally:
            stop.set()
            th.join()
        t = np.array([s[0] for s in samples])
        m = np.array([s[1] for s in samples])
        warm = t >= min(60.0, t.max() / 4) if t.size else t
        slope = float(np.polyfit(t[warm] / 60, m[warm], 1)[0]) if warm.sum() >= 3 else None
        r["rss_samples"] = [[round(a, 1), round(b, 1)] for a, b in samples]
        r["rss_slope_mb_per_min"] = slope
        r["rss_growth_mb"] = float(m[warm][-1] - m[warm][0]) if warm.sum() >= 2 else None
        r.pop("engine", None)
        return r

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
            s["single_stream"] = {k: one.get(k) for k in ("chunk_latency_ms_p95", "first_partial_ms_p50",
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
        s["models"] = [self.model_row({"model": ctc, "sweep": sweep, "baseline": base,
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
                                                    "speech onset -> first non-empty partial, one stream"),
            # The bound is "after the endpoint": the endpoint is the end of speech plus the
            # endpointer's required trailing silence, the earliest moment the rule can decide. The wait a
            # user sees (from the end of speech, silence included) is reported beside it, never hidden.
            "single_stream_finalization_ms_p95": t(st.get("finalization_after_endpoint_ms_p95"), "<= 150",
                                                   cmp(st.get("finalization_after_endpoint_ms_p95"),
                                                       lambda v: v <= 150),
                                                   "endpoint (end of speech + the endpointer's "
                                                   f"{st.get('endpoint_silence_ms')} ms silence rule) -> final, "
                                                   "one stream; from the end of speech itself: "
                                                   f"{_r(st.get('finalization_ms_p95'))} ms p95"),
            "single_stream_rtf": t(st.get("rtf"), "<= 0.2", cmp(st.get("rtf"), lambda v: v <= 0.2),
                                   "engine compute time / audio time, one stream"),
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


def pooled_wer(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Streaming and offline WER pooled over some load levels (the same utterances on both sides)."""
    out: dict[str, Any] = {"wer_streaming": None, "wer_offline": None, "wer_gap_points": None}
    words = sum((r.get("wer_detail") or {}).get("words", 0) for r in levels)
    if words:
        def errors(d: dict) -> int:
            return d.get("substitutions", 0) + d.get("deletions", 0) + d.get("insertions", 0)

        out["wer_streaming"] = sum(errors(r["wer_detail"]) for r in levels if r.get("wer_detail")) / words
        out["wer_offline"] = sum(errors(r["wer_offline_detail"]) for r in levels
                                 if r.get("wer_offline_detail")) / words
        out["wer_gap_points"] = 100 * (out["wer_streaming"] - out["wer_offline"])
        out["wer_words"] = words
        out["wer_levels"] = [r["streams"] for r in levels]
    return out


def _r(x: Any, nd: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"
