"""Moonshine tiny-en served through its own native streaming API, one native stream per engine slot.

moonshine-voice 0.0.73 ships a C++ streaming transcriber: ``Transcriber.create_stream()`` gives a stream
that takes audio (``add_audio``) and, on ``update_transcription()``, re-transcribes the line in progress and
returns every line with its text. The engine schedules the streams and measures them; the compute is per
stream (``batching = "per-stream"``: the library has no call that decodes several streams at once), so this
is the accurate-per-stream row of the streaming table, not a batched one.

Segmentation is the engine's (VAD endpointer), as for Whisper: the library's own VAD is switched off
(``vad_threshold=0``, every window is speech, so a segment is one line), a segment's final text comes from
``stop()`` on its stream, and the next segment gets a new native stream. Partials are refreshed once per
engine step (``chunk_ms``, 500 ms by default: the library's own default update interval).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from speechbench.asr.moonshine import MoonshineRecognizer
from speechbench.streaming.models.base import StepOutput, StreamingModel


def _text(transcript: Any) -> str:
    return " ".join(line.text.strip() for line in (transcript.lines if transcript else []) if line.text.strip())


class MoonshineStreaming(StreamingModel):
    batching = "per-stream"
    default_chunk_ms = 500

    def __init__(self, name: str = "moonshine-tiny", **options: Any) -> None:
        self.rec = MoonshineRecognizer(**options)
        self.transcriber = self.rec._whole or self.rec._load({"vad_threshold": "0"})
        self.name = name
        self.params = self.rec.params
        self.precision = self.rec.precision
        self.backend = self.rec.backend
        self.streams: list[Any] = []
        self._flush_pad = [0.0] * (self.sample_rate // 2)

    def _new_stream(self) -> Any:
        # update_interval: never by itself; the step asks for an update once per engine chunk
        stream = self.transcriber.create_stream(update_interval=1e9)
        stream.start()
        return stream

    def allocate(self, capacity: int, chunk_ms: int) -> None:
        self.close_streams()
        self.chunk_ms = chunk_ms
        self.streams = [None] * capacity
        self.texts = [""] * capacity
        self.has_audio = np.zeros(capacity, dtype=bool)

    def reset(self, slots: list[int], new_stream: bool) -> None:
        for s in slots:
            if self.streams[s] is not None:
                self.streams[s].close()
            self.streams[s] = None  # created on the segment's first audio
            self.texts[s] = ""
            self.has_audio[s] = False

    def text(self, slot: int) -> str:
        return self.texts[slot]

    def step(self, slots: np.ndarray, audio: np.ndarray, final: np.ndarray,
             speech: np.ndarray | None = None, lengths: np.ndarray | None = None) -> StepOutput:
        t0 = time.perf_counter()
        changed = np.zeros(len(slots), dtype=bool)
        for r, s in enumerate(slots.tolist()):
            if speech is not None and not speech[r] and not final[r]:
                continue  # nothing said yet in this segment: no stream, no compute
            if self.streams[s] is None:
                self.streams[s] = self._new_stream()
            stream = self.streams[s]
            stream.add_audio(audio[r].tolist(), self.sample_rate)
            self.has_audio[s] = True
            if final[r]:
                # stop() transcribes only what an update has consumed, in 0.5 s windows: the last part-window
                # would be lost ("...turn off the light?" came back as "...turn on?"); half a second of
                # silence pushes it through.
                stream.add_audio(self._flush_pad, self.sample_rate)
                text = _text(stream.stop())
                stream.close()
                self.streams[s] = None
            else:
                text = _text(stream.update_transcription())
            changed[r] = text != self.texts[s]
            self.texts[s] = text
        t1 = time.perf_counter()
        return StepOutput([self.texts[int(s)] for s in slots], changed, None, {"model": 1e3 * (t1 - t0)})

    def transcribe_offline(self, waves: list[np.ndarray]) -> list[str]:
        return self.rec.transcribe(waves)

    def warmup(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        rng = np.random.default_rng(0)
        stream = self._new_stream()
        stream.add_audio((1e-3 * rng.standard_normal(self.sample_rate)).astype(np.float32).tolist())
        stream.update_transcription()
        stream.stop()
        stream.close()

    def options(self) -> dict[str, Any]:
        return {"policy": "native stream, update each chunk", "recognizer": self.rec.options()}

    def close_streams(self) -> None:
        for st in self.streams:
            if st is not None:
                st.close()
        self.streams = []

    def close(self) -> None:
        self.close_streams()
        self.rec.close()
