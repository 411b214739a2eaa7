"""Part 3 sections under real-time load: one load level, sweeps over stream counts, the confirmed
capacity search (streaming/capacity.py), smaller client chunks, twice the capacity, and the soak."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from speechbench.common.fmt import fixed
from speechbench.common.measure import PeakMemory, host_rss_mb
from speechbench.common.noise import NoiseMonitor
from speechbench.streaming.accuracy import stream_scores
from speechbench.streaming.capacity import CapacitySearch, SearchConfig, compact_run
from speechbench.streaming.loadgen import Collector, LoadConfig, UttAudio, run_load, score_tracks, wer_counts

log = logging.getLogger(__name__)


class LoadSections:
    """Load levels, sweeps, the confirmed-capacity search, client chunk sizes, overload and soak."""

    def run_level(self, streams: int, duration_s: float, label: str, chunk_ms: int | None = None,
                  **over: Any) -> dict[str, Any]:
        collector = Collector()
        eng = self.new_engine(collector, **over)
        chunk_ms = chunk_ms or self.cfg.chunk_ms
        lcfg = LoadConfig(streams=streams, duration_s=duration_s, chunk_ms=chunk_ms,
                          ramp_s=min(self.cfg.ramp_s, duration_s / 4), gap_s=self.cfg.gap_s,
                          seed=self.cfg.seed + streams, kinds=self.stream_kinds(self.kinds_mode, streams))
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
        offline = self.offline_for([u for s in srows for u in s["utts"]] + [r["utt"] for r in rows])
        wo = wer_counts(refs, [" ".join(offline.get(u, "") for u in s["utts"]) for s in srows])
        for d in (w, wo):
            d["streams"], d["utterances"] = d.pop("utterances", len(srows)), sum(len(s["utts"]) for s in srows)
        committed_rows = [s for s in srows if "committed" in s]
        wc = wer_counts([r for r, s in zip(refs, srows, strict=True) if "committed" in s],
                        [s["committed"] for s in committed_rows]) if committed_rows else None
        scores = stream_scores(srows, refs, offline)  # per stream, for accuracy by source
        by_kind = {}
        for kind in sorted({sc[0] for sc in scores}):  # the streams' scores summed: no second alignment
            ks = [sc for sc in scores if sc[0] == kind]
            by_kind[kind] = {"streams": len(ks), "wer": sum(sc[2] for sc in ks) / max(1, sum(sc[1] for sc in ks))}
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
            # the scheduler's step time per second of one stream's audio at this load (all threads of the
            # model's step work inside it): 1000 / this is how many such streams a fully busy scheduler holds
            "compute_ms_per_stream_s": 1e3 * stats["busy_s"] / (admitted * duration_s) if admitted else None,
            "batch_fill_of_ready": stats["batch_fill_of_ready"], "batch_size_mean": stats["batch_size_mean"],
            "shed_chunks": stats["shed_chunks"], "dropped_chunks": dropped, "failed_streams": stats["failed_streams"],
            "unfinished_streams": raw["unfinished"],
            "peak_memory_mb": pm.report.peak_mb, "host_rss_peak_mb": pm.report.host_rss_peak_mb,
            "cuda_peak_allocated_mb": pm.report.cuda_peak_allocated_mb,
            "wer": w["wer"], "wer_offline": wo["wer"], "wer_detail": w, "wer_offline_detail": wo,
            "wer_committed_detail": wc, "wer_by_kind": by_kind, "stream_scores": scores,
            "utterances_scored": len(rows),
            "excluded_streams": scored["excluded_streams"],
            "throughput_audio_s_per_s": stats["audio_s"] / raw["wall_s"] if raw["wall_s"] else None,
            "engine_alive": alive, "loadgen_lag_ms": raw["lag"].summary(),
            "loadgen_behind_chunks": raw["behind_chunks"],
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
              single_stream_s: float | None = None, **over: Any) -> list[dict[str, Any]]:
        """Run each load level; after each, the runs so far go into ``store[name]`` (default: the results)
        and the JSON is saved, so a crash keeps the levels already measured. ``single_stream_s``: the
        1-stream level's audio, when it should be longer than the others (see ``single_stream_seconds``)."""
        runs: list[dict[str, Any]] = []
        store = self.results if store is None else store
        for n in levels:
            t0 = time.perf_counter()
            r = self.run_level(n, single_stream_s if n == 1 and single_stream_s else duration_s, name, **over)
            runs.append(r)
            store[name] = runs
            self.save()
            log.info("%s %4d streams: p50 %s p95 %s ms, batch %.1f, util %s, shed %d, refused %d, wer %s "
                     "(offline %s) [%.0f s]", name, n, fixed(r["chunk_latency_ms_p50"]),
                     fixed(r["chunk_latency_ms_p95"]), r["batch_size_mean"] or 0, fixed(r["batch_utilization"], 2),
                     r["shed_chunks"],
                     r["refused_streams"], fixed(r["wer"], 3), fixed(r["wer_offline"], 3), time.perf_counter() - t0)
            if stop_at_failure and not r["sustained"]:
                break
            if stop_after_failures and len(runs) >= stop_after_failures and not any(
                    x["sustained"] for x in runs[-stop_after_failures:]):
                break
        return runs

    def single_stream_seconds(self) -> float | None:
        """Audio for ``single_stream_utterances`` utterances of the pool with their gaps (mean lengths), so
        the single-stream percentiles rest on that many; None when it is no longer than a normal level."""
        n = self.cfg.single_stream_utterances
        if n <= 0 or not self.pool:
            return None
        pool = [u for u in self.pool if getattr(u, "source", "synthetic") == "synthetic"] or self.pool  # CTC replays
        per_utt = float(np.mean([len(u.audio) for u in pool])) / 16000 + float(np.mean(self.cfg.gap_s))
        return max(self.cfg.duration_s, n * per_utt + self.cfg.ramp_s) if n * per_utt > self.cfg.duration_s else None

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
            log.info("%s capacity %4d streams: p95 %s ms, sustained %s", label, n, fixed(r["chunk_latency_ms_p95"]),
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
