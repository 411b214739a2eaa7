"""Run one shard: a self-contained work unit (manifest rows + one model + its options) -> records.

    python -m speechbench.asr_eval.worker SHARD.json OUT.json

A shard is a JSON file; the output is a JSON file, plus ``OUT.json.records.jsonl`` appended one line per
utterance as it is transcribed, so a worker that dies keeps what it measured. Nothing is shared with the
parent but files, so a distributed engine (Ray, Spark, a batch queue) can run shards as they are.

Each shard runs in a fresh process, so the peak memory it reports (the kernel's resident-set high-water
mark, VmHWM, which misses no short peak) belongs to that one model. This module imports only what
the chosen backend needs: torch is loaded for the CTC models, not for Whisper or pocketsphinx.

Measurement: the model is loaded (timed), warmed up on the first utterance (not recorded), then every
utterance is transcribed alone (batch size 1) and timed with ``perf_counter`` around ``transcribe``; audio
loading is outside the timer. Then the timing passes: a fixed subset of the shard's utterances (the
shard's ``timing.ids``, the same for every model) is transcribed again ``timing.passes`` times, one at a
time, each pass timed as a whole, so the speed figure is a median with a spread rather than one draw of
the machine's noise. The passes repeat within this model's worker, back to back: models run in separate
processes one after another, so interleaving passes across models would mean reloading every model per
pass. Backends that batch are then timed on the first few utterances at several batch sizes (the
batch-size effect).

Progress goes to stdout as ``progress <n>`` lines for the parent's progress bar.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """The kernel's resident-set high-water mark of this process (VmHWM). Not ``ru_maxrss``: that one
    survives fork + exec, so a worker would inherit its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux; a fallback elsewhere


def _progress(n: int = 1) -> None:
    print(f"progress {n}", flush=True)


def _backend_options(model: dict[str, Any], device: str, threads: int) -> dict[str, Any]:
    """Device and thread options each backend understands, under the user's own options."""
    backend = model["backend"]
    opts: dict[str, Any] = {}
    if backend.startswith("whisper"):
        opts = {"device": device, "cpu_threads": threads}
    elif backend.startswith("ctc"):
        opts = {"device": device, "threads": threads}
    opts.update(model.get("options") or {})
    return opts


def _load(model: dict[str, Any], device: str, threads: int) -> Any:
    from speechbench.asr.registry import load_recognizer

    backend = model["backend"]
    opts = _backend_options(model, device, threads)
    if backend.startswith("ctc"):
        import torch

        torch.set_num_threads(max(1, threads))
        from speechbench.asr.ctc import register_ctc_checkpoint  # registers ctc-small/-medium/...

        if backend.startswith("ctc:"):
            name = model["label"]
            register_ctc_checkpoint(name, backend[len("ctc:"):])
            return load_recognizer(name, **opts)
    return load_recognizer(backend, **opts)


def _cuda_peak_mb(backend: str) -> float | None:
    if not backend.startswith("ctc") or "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _batch_effect(rec: Any, waves: list[Any], sizes: list[int]) -> list[dict[str, Any]]:
    """Throughput of the backend's own batching at each size, on the same clips; texts compared with the
    batch-size-1 pass of the same path."""
    from speechbench.asr_eval.normalize import normalize_text

    if not hasattr(rec, "batch_size"):
        return []
    sizes = sorted(set(sizes) | {1})  # batch 1 first: the reference every other size's texts are compared with
    saved = {k: getattr(rec, k) for k in ("batch_size", "batched") if hasattr(rec, k)}
    audio_s = sum(len(w) for w in waves) / rec.sample_rate
    rows: list[dict[str, Any]] = []
    first: list[str] | None = None
    try:
        if hasattr(rec, "batched"):
            rec.batched = True  # Whisper: the cross-utterance batched decoder
        for b in sizes:
            rec.batch_size = b
            t0 = time.perf_counter()
            texts = rec.transcribe(waves)
            dt = time.perf_counter() - t0
            norm = [normalize_text(t) for t in texts]
            first = first or norm
            rows.append({"batch_size": b, "utterances": len(waves), "seconds": dt, "audio_s": audio_s,
                         "rtf": dt / audio_s if audio_s else None,
                         "utterances_per_s": len(waves) / dt if dt else None,
                         "same_text_as_batch1": sum(a == c for a, c in zip(norm, first, strict=True)) / len(norm)})
    finally:
        for k, v in saved.items():
            setattr(rec, k, v)
    return rows


def _timing_passes(rec: Any, clips: list[tuple[str, Any]], passes: int) -> dict[str, Any]:
    """Transcribe the same clips ``passes`` times, one utterance at a time as in the accuracy pass (warm
    by now); per pass the total compute over the total audio (RTF) and each clip's latency."""
    audio_s = sum(len(w) for _, w in clips) / rec.sample_rate
    rows = []
    for k in range(passes):
        latencies = []
        for _, w in clips:
            t0 = time.perf_counter()
            rec.transcribe([w])
            latencies.append(time.perf_counter() - t0)
        compute = sum(latencies)
        rows.append({"pass": k + 1, "compute_s": compute, "rtf": compute / audio_s if audio_s else None,
                     "latency_s": latencies})
    return {"utterances": [i for i, _ in clips], "audio_s": audio_s, "passes": rows}


def run_shard(shard: dict[str, Any], out_path: Path) -> dict[str, Any]:
    t_start = time.perf_counter()
    import numpy as np

    from speechbench.asr.base import RecognizerUnavailable
    from speechbench.speech.audio import load_audio

    model = shard["model"]
    records_path = Path(str(out_path) + ".records.jsonl")
    out: dict[str, Any] = {"shard_id": shard["shard_id"], "label": model["label"], "status": "running",
                           "records": [], "failures": [], "pid": os.getpid()}
    rss_after_imports = _rss_mb()
    t0 = time.perf_counter()
    try:
        rec = _load(model, shard["device"], shard["threads"])
    except RecognizerUnavailable as e:
        out.update(status="unavailable", reason=str(e))
        return out
    except Exception as e:
        out.update(status="failed", reason=f"load failed: {type(e).__name__}: {e}")
        return out
    out["load_s"] = time.perf_counter() - t0
    out["info"] = rec.info()
    rss_after_load = _rss_mb()

    items = shard["utterances"]
    be = shard.get("batch_effect")
    timing = shard.get("timing") or {}
    # Only the clips the batch-effect and timing passes reuse stay in memory (a few MB of audio), so the
    # peak RSS is the model's own.
    keep = {it["id"] for it in items[: (be or {}).get("utterances", 0) + 3]} | set(timing.get("ids") or [])
    waves: dict[str, Any] = {}

    def wave(it: dict[str, Any]) -> Any:
        if it["id"] in waves:
            return waves[it["id"]]
        w = load_audio(it["audio_path"], rec.sample_rate)
        if w.size and not np.isfinite(w).all():
            raise ValueError("audio contains NaN or inf samples")
        if it["id"] in keep:
            waves[it["id"]] = w
        return w

    # Warm-up: the first usable utterance, transcribed and discarded (lazy initialisation, caches).
    warm = shard.get("warmup", 1)
    t0 = time.perf_counter()
    for it in items[:3]:
        try:
            w = wave(it)
            for _ in range(warm):
                rec.transcribe([w])
        except Exception as e:  # the timed pass records this utterance's own failure, if any
            out["warmup_error"] = f"{type(e).__name__}: {e}"
            continue
        break
    out["warmup_s"] = time.perf_counter() - t0

    with open(records_path, "w") as rf:
        for it in items:
            try:
                w = wave(it)
            except Exception as e:
                out["failures"].append({"section": "audio", "model": model["label"], "id": it["id"],
                                        "error": f"{type(e).__name__}: {e}"})
                _progress()
                continue
            try:
                t0 = time.perf_counter()
                hyp = rec.transcribe([w])[0]
                latency = time.perf_counter() - t0
            except Exception as e:
                out["failures"].append({"section": "transcribe", "model": model["label"], "id": it["id"],
                                        "error": f"{type(e).__name__}: {e}"})
                _progress()
                continue
            row = {"id": it["id"], "hyp_raw": hyp, "latency_s": latency, "duration_s": len(w) / rec.sample_rate}
            out["records"].append(row)
            rf.write(json.dumps(row) + "\n")
            rf.flush()
            _progress()

    if timing.get("ids") and timing.get("passes", 0) > 0:
        # only clips that loaded and transcribed in the accuracy pass: a failing one is already recorded
        done = {r["id"] for r in out["records"]}
        by_id = {it["id"]: it for it in items}
        try:
            clips = [(i, wave(by_id[i])) for i in timing["ids"] if i in done and i in by_id]
            out["timing"] = _timing_passes(rec, clips, int(timing["passes"])) if clips else None
        except Exception as e:
            out["timing_error"] = f"{type(e).__name__}: {e}"

    if be and hasattr(rec, "batch_size"):
        clips = []
        for it in items:
            if len(clips) >= be["utterances"]:
                break
            try:
                clips.append(wave(it))
            except Exception:
                continue
        try:
            out["batch_effect"] = _batch_effect(rec, clips, be["sizes"])
        except Exception as e:
            out["batch_effect_error"] = f"{type(e).__name__}: {e}"
    elif be:
        out["batch_effect_note"] = f"{type(rec).__name__} transcribes one utterance at a time (no batching)"

    out["memory"] = {
        "peak_rss_mb": _peak_rss_mb(),  # process high-water mark: imports + model + transcription
        "rss_after_imports_mb": rss_after_imports,
        "rss_after_load_mb": rss_after_load,
        "model_rss_mb": rss_after_load - rss_after_imports,
        "cuda_peak_allocated_mb": _cuda_peak_mb(model["backend"]),
    }
    rec.close()
    out["status"] = "ok"
    out["wall_s"] = time.perf_counter() - t_start
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    shard_path, out_path = Path(argv[0]), Path(argv[1])
    shard = json.loads(shard_path.read_text())
    try:
        out = run_shard(shard, out_path)
    except Exception as e:
        out = {"shard_id": shard.get("shard_id"), "label": shard["model"]["label"], "status": "failed",
               "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(), "records": [],
               "failures": []}
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
