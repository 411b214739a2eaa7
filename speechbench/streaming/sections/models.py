"""Part 3 section per pretrained recognizer: served by the same engine, swept, its capacity confirmed,
the same policy per stream when its steps batch, and its row of the accuracy-vs-capacity table."""

from __future__ import annotations

import logging
import time
from typing import Any

from speechbench.common.fmt import fixed
from speechbench.streaming.accuracy import by_source

log = logging.getLogger(__name__)


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


class ModelSections:
    """Pretrained recognizers served by the engine, each with its sweep, capacity and table row."""

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
        sustain), its capacity confirmed, and for a model whose steps batch across streams, the same policy
        run per stream (max_batch 1); each level's streaming WER next to the same recognizer's offline WER.
        The first batched Moonshine model also gets its update-cadence frontier."""
        from speechbench.streaming.models.registry import load_streaming_model, parse

        c = self.cfg
        t0 = time.perf_counter()
        loaded = load_streaming_model(spec, self.device, c.threads, c.checkpoint, c.seed)
        model = loaded.model
        chunk = model.default_chunk_ms
        name = parse(spec)[0]
        levels = c.model_streams.get(name, c.compare_streams)
        saved = (self.serving, self.offline_hyp, self.offline_fn, self.latency_bound_ms, self.kinds_mode)
        self.serving, self.offline_hyp, self.offline_fn = model, {}, loaded.offline
        self.kinds_mode = "mixed"
        redecodes = chunk > c.model_chunk_ms
        self.latency_bound_ms = chunk + c.redecode_bound_ms if redecodes else c.latency_bound_ms
        rec: dict[str, Any] = {"spec": spec, "model": model.info(), "recognizer": loaded.info,
                               "load_s": time.perf_counter() - t0, "offline_method": loaded.offline_method,
                               "latency_bound_ms": self.latency_bound_ms, "endpoint": "vad"
                               if model.frame_ms is None else c.endpoint, "levels_planned": levels}
        self.results.setdefault("models", {})[spec] = rec
        try:
            single = c.model_single_stream_s.get(name)
            self.sweep("sweep", levels, c.compare_duration_s, stop_at_failure=True, store=rec, single_stream_s=single)
            self.search_capacity(f"{spec}", "sweep", c.compare_duration_s, c.compare_bisect_steps, store=rec)
            # 1 stream is the batched sweep's 1-stream level again (max batch does not matter then)
            per = c.model_baseline_streams.get(name, [n for n in levels if n > 1])
            if model.batching == "batched" and per:
                self.sweep("baseline", per, c.compare_duration_s, stop_at_failure=True, store=rec, **self.PER_STREAM)
                self.search_capacity(f"{spec} per stream", "baseline", c.compare_duration_s, c.compare_bisect_steps,
                                     store=rec, **self.PER_STREAM)
            first_moonshine = (name.startswith("moonshine") and model.batching == "batched" and not any(
                k.startswith("moonshine") and v.get("summary") for k, v in self.results["models"].items()))
            if first_moonshine and c.continuous_streams and any(u.source == "continuous" for u in self.pool):
                rec["continuous"] = self.measure_continuous()
            if first_moonshine and c.frontier_chunks:
                rec["frontier"] = self.measure_frontier(chunk, rec)
            rec["offline_utterances"] = len(self.offline_hyp)
            if hasattr(model, "revised_finals"):  # finals that replaced words partials had committed
                rec["finals"] = {"segments": model.finals, "revised_committed": model.revised_finals}
            if hasattr(model, "cost_stats"):
                rec["cost"] = model.cost_stats()
            rec["summary"] = self.model_row(rec)
        finally:
            loaded.close()
            self.serving, self.offline_hyp, self.offline_fn, self.latency_bound_ms, self.kinds_mode = saved
        return rec

    def measure_continuous(self) -> dict[str, Any]:
        """Streams that all replay the continuous reading (no pause long enough for an endpoint), for long
        enough to finish it: the utterance cap's cuts, scored (a normal level is shorter than the reading)."""
        c = self.cfg
        longest = max(len(u.audio) for u in self.pool if u.source == "continuous") / 16000
        saved = self.kinds_mode
        self.kinds_mode = "continuous"
        try:
            r = self.run_level(c.continuous_streams, longest + 8.0, "continuous speech")
        finally:
            self.kinds_mode = saved
        log.info("continuous speech, %d streams: p95 %s ms, sustained %s, WER %s (offline %s)", c.continuous_streams,
                 fixed(r["chunk_latency_ms_p95"]), r["sustained"], fixed(r["wer"], 3), fixed(r["wer_offline"], 3))
        return r

    def measure_frontier(self, own_chunk: int, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """Update interval against sustained streams and first-partial latency: for each interval of
        ``frontier_chunks`` (and the model's own, from its sweep), the frontier levels in order until one is
        not sustained, each under that interval's bound (interval + redecode_bound_ms)."""
        c = self.cfg
        out = []
        own = [r for r in rec.get("sweep") or [] if r["streams"] > 1]
        below = [n for n in c.frontier_streams if not own or n < own[0]["streams"]]
        for ms in sorted(set(c.frontier_chunks) | {own_chunk}):
            # the model's own interval: its sweep, after the frontier levels below the sweep's
            levels = below if ms == own_chunk else c.frontier_streams
            runs = []
            if levels:
                saved = self.latency_bound_ms
                self.latency_bound_ms = ms + c.redecode_bound_ms
                try:
                    for n in levels:
                        r = self.run_level(n, c.compare_duration_s, f"frontier {ms} ms", model_chunk_ms=ms)
                        runs.append(r)
                        log.info("frontier %d ms %3d streams: p95 %s ms (bound %.0f), sustained %s", ms, n,
                                 fixed(r["chunk_latency_ms_p95"]), self.latency_bound_ms, r["sustained"])
                        if not r["sustained"]:
                            break
                finally:
                    self.latency_bound_ms = saved
            if ms == own_chunk and (not runs or runs[-1]["sustained"]):
                runs += own
            held = [r["streams"] for r in runs if r["sustained"]]
            first = runs[0] if runs else {}
            out.append({"chunk_ms": ms, "latency_bound_ms": ms + c.redecode_bound_ms, "own": ms == own_chunk,
                        "max_sustained_streams": max(held) if held else 0,
                        "top_level_held": bool(runs) and runs[-1]["sustained"],
                        "first_partial_ms_p95": first.get("first_partial_ms_p95"),
                        "first_partial_at_streams": first.get("streams"),
                        "levels": [{k: r.get(k) for k in ("streams", "sustained", "chunk_latency_ms_p50",
                                                          "chunk_latency_ms_p95", "first_partial_ms_p95",
                                                          "compute_ms_per_stream_s", "scheduler_busy_share")}
                                   for r in runs]})
            rec["frontier"] = out
            self.save()
        return out

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
        # WER pooled over every sustained run at the model's own settings (the same recognizer, the same pool)
        row.update(pooled_wer([r for r in _all_runs(rec) if r.get("sustained")] or sustained))
        if one:
            step = one.get("step_ms") or {}
            chunk = one.get("model_chunk_ms") or 1
            row["rtf_p50"] = step["p50"] / chunk if step.get("p50") is not None else None
            row["rtf_p95"] = step["p95"] / chunk if step.get("p95") is not None else None
            row["rtf"] = one.get("rtf")
            for k in ("first_partial_ms_p95", "finalization_ms_p95", "finalization_after_endpoint_ms_p95",
                      "chunk_latency_ms_p50", "chunk_latency_ms_p95", "utterances_scored", "duration_s"):
                row[k] = one.get(k)
            row["single_stream_targets"] = single_stream_targets(one)
        caps = (rec.get("capacity") or {}).get("sweep") or {}
        # "+" only where the largest level tried held: capacity is then a lower bound
        row["capacity_is_lower_bound"] = bool(caps.get("top_level_held")) if caps else bool(
            sweep and sweep[-1]["sustained"])
        at = self.run_at(row["max_sustained_streams"], "sweep", rec)
        if at and at.get("compute_ms_per_stream_s"):
            per = at["compute_ms_per_stream_s"]
            row["compute_ms_per_stream_s_at_capacity"] = per
            row["scheduler_busy_share_at_capacity"] = at.get("scheduler_busy_share")
            # streams a scheduler busy 100% of the time would hold at that per-stream cost; capacity is a
            # share of it (the rest is the headroom the latency bound needs)
            row["compute_ceiling_streams"] = 1000.0 / per
            row["capacity_share_of_ceiling"] = row["max_sustained_streams"] / row["compute_ceiling_streams"]
        # accuracy by source over every sustained run of the model (sweep, capacity search, per-stream
        # baseline, frontier): the same recognizer on the same pool, so more words, the same quantity
        every = [r for r in _all_runs(rec) if r.get("sustained")]
        src = by_source(every)
        if src:
            row["wer_by_source"] = src
            row["wer_by_source_runs"] = len(every)
        committed = [r["wer_committed_detail"] for r in every if r.get("wer_committed_detail")]
        if committed:
            words = sum(d["words"] for d in committed)
            row["wer_committed_at_endpoint"] = sum(
                d["substitutions"] + d["deletions"] + d["insertions"] for d in committed) / max(1, words)
        fin = rec.get("finals") or {}
        if fin.get("segments"):
            row["finals_revising_committed_share"] = fin["revised_committed"] / fin["segments"]
        if rec.get("frontier"):
            row["frontier"] = [{k: f[k] for k in ("chunk_ms", "latency_bound_ms", "max_sustained_streams",
                                                  "top_level_held", "first_partial_ms_p95")} for f in rec["frontier"]]
        return row


def _all_runs(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every load level a model ran at its own settings: its sweeps and the capacity searches' extra runs
    (not the frontier's: other update intervals)."""
    runs = list(rec.get("sweep") or []) + list(rec.get("baseline") or [])
    for v in (rec.get("capacity") or {}).values():
        runs += v.get("runs") or []
    if rec.get("continuous"):
        runs.append(rec["continuous"])
    return runs


def single_stream_targets(one: dict[str, Any]) -> dict[str, Any]:
    """The seed's single-stream targets on a recognizer's 1-stream level: value, threshold, met."""
    def t(key: str, bound: float) -> dict[str, Any]:
        v = one.get(key)
        return {"value": v, "threshold": f"<= {bound:g}", "met": None if v is None else bool(v <= bound)}

    return {"first_partial_ms_p95": t("first_partial_ms_p95", 300),
            "finalization_after_endpoint_ms_p95": t("finalization_after_endpoint_ms_p95", 150),
            "rtf": t("rtf", 0.2), "utterances": one.get("utterances_scored")}
