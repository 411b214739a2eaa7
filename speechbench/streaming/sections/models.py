"""Part 3 section per pretrained recognizer: served by the same engine, swept, its capacity confirmed,
the same policy per stream when its steps batch, and its row of the accuracy-vs-capacity table."""

from __future__ import annotations

import time
from typing import Any


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
                # 1 stream is the batched sweep's 1-stream level again (max batch does not matter then)
                self.sweep("baseline", [n for n in c.compare_streams if n > 1], c.compare_duration_s,
                           stop_at_failure=True, store=rec, **self.PER_STREAM)
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
