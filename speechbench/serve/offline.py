"""POST /v1/transcribe's backend: one Part 2 recognizer behind a bounded queue, run on one worker thread.

The recognizer loads in the background at start-up so the streaming endpoint is up at once; until it is
ready, requests get 503 with Retry-After. ``auto`` picks the most accurate recognizer installed (Part 2's
default-corpus ranking: Whisper base int8, Whisper tiny.en, Moonshine tiny, pocketsphinx).
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

AUTO_ORDER = ("whisper-base-int8", "whisper-tiny.en-int8", "moonshine-tiny", "pocketsphinx")


class QueueFull(Exception):
    pass


class NotReady(Exception):
    pass


class BadAudio(ValueError):
    pass


def resolve_model(spec: str) -> str | None:
    """``auto`` -> the first of AUTO_ORDER whose backend is installed; ``none`` -> None; else ``spec``."""
    if spec == "none":
        return None
    if spec != "auto":
        return spec
    from speechbench.asr.registry import unavailable_reason
    from speechbench.asr_eval.runner import parse_model_spec

    for cand in AUTO_ORDER:
        if unavailable_reason(parse_model_spec(cand).backend) is None:
            return cand
    return None


def load(spec: str, threads: int | None = None) -> Any:
    from speechbench.asr.registry import load_recognizer
    from speechbench.asr_eval.runner import parse_model_spec

    ms = parse_model_spec(spec)
    opts = dict(ms.options)
    if threads and ms.backend.startswith("whisper"):
        opts.setdefault("cpu_threads", threads)
    return load_recognizer(ms.backend, **opts)


def decode_wav(body: bytes, target_sr: int = 16000) -> tuple[np.ndarray, float]:
    """Any soundfile-readable body (WAV/FLAC/OGG; any rate, mono or multi-channel) -> 16 kHz mono float32."""
    import soundfile as sf

    from speechbench.speech.audio import resample, to_mono

    if not body:
        raise BadAudio("empty body: send a WAV file")
    try:
        audio, sr = sf.read(io.BytesIO(body), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError ... on garbage
        raise BadAudio(f"unreadable audio: {e}") from None
    if audio.shape[0] == 0:
        raise BadAudio("the audio holds no samples")
    if not np.isfinite(audio).all():
        raise BadAudio("the audio contains NaN or infinite samples")
    mono = to_mono(audio)
    duration = mono.shape[0] / sr
    return resample(mono, sr, target_sr).astype(np.float32), duration


class OfflineService:
    def __init__(self, spec: str, max_queue: int, threads: int | None = None, start: bool = True) -> None:
        self.requested = spec
        self.spec = resolve_model(spec)
        self.max_queue = max_queue
        self.threads = threads
        self.depth = 0  # requests waiting or running (touched on the event loop only)
        self.recognizer: Any = None
        self.error: str | None = None if self.spec else f"no offline recognizer ({spec!r})"
        self.ready = threading.Event()
        self.load_seconds: float | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="transcribe")
        if start and self.spec:
            threading.Thread(target=self._load, name="offline-load", daemon=True).start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.recognizer = load(self.spec, self.threads)
            self.recognizer.transcribe([np.zeros(16000, dtype=np.float32)])  # warm-up
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            log.error("offline recognizer %s failed to load: %s", self.spec, self.error)
        self.load_seconds = time.perf_counter() - t0
        self.ready.set()

    def status(self) -> dict[str, Any]:
        return {"model": self.spec, "ready": self.recognizer is not None, "error": self.error,
                "queue_depth": self.depth, "max_queue": self.max_queue}

    async def transcribe(self, audio: np.ndarray) -> str:
        if self.recognizer is None:
            raise NotReady(self.error or f"{self.spec} is still loading")
        if self.depth >= self.max_queue:
            raise QueueFull(f"{self.depth} transcriptions queued (limit {self.max_queue})")
        self.depth += 1
        try:
            loop = asyncio.get_running_loop()
            return (await loop.run_in_executor(self.pool, self.recognizer.transcribe, [audio]))[0]
        finally:
            self.depth -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.recognizer is not None:
            self.recognizer.close()
