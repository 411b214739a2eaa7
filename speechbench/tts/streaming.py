"""Streaming synthesis: audio leaves in chunks while the decoder is still producing frames.

The seed's vocoder is three transposed convolutions (kernel 4, stride 2, padding 1), so every output
sample depends on a few neighbouring mel frames only (within 2 frames either side). A chunk of frames
[a, b) is vocoded over the window [a - context, b + context) and only its own samples are kept: joined, the
chunks equal the one-shot vocoder output (up to floating-point summation order; ``tests`` bound it), and
a chunk can leave as soon as its frames and ``context`` frames after them are decoded.

``AudioStreamer`` rides along any scheduler (``scheduler.Schedule(..., streamer=...)``): after every decode
step it emits each stream's ready chunks, and it records for each request when its first audio left
(time to first audio, TTFA) and whether any later chunk arrived after a listener who started playing at
the first chunk would have needed it (an underrun).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from speechbench.tts.engine import Completed, TTSEngine

# Frames of left and right context around a chunk. The receptive field of the three stride-2 transposed
# convolutions reaches 2 frames to the left and 1 to the right of a sample's own frame (see the module
# docstring); 3 leaves a margin, and test_tts_streaming checks the joined output against the one-shot one.
VOCODER_CONTEXT_FRAMES = 3


@dataclass(frozen=True)
class StreamingConfig:
    # Frames per audio chunk (86 frames = 1 s of audio): 8 frames = 93 ms, a common streaming TTS packet.
    chunk_frames: int = 8
    context_frames: int = VOCODER_CONTEXT_FRAMES

    def __post_init__(self) -> None:
        if self.chunk_frames < 1 or self.context_frames < 0:
            raise ValueError("chunk_frames must be >= 1 and context_frames >= 0")


def vocode_window(engine: TTSEngine, mel: torch.Tensor, start: int, end: int, context: int,
                  total: int | None = None) -> torch.Tensor:
    """Samples of frames [start, end) of ``mel`` (T, mel_dim), vocoded over [start - context, end + context)
    clipped to the frames that exist (``total``: how many exist, default all of ``mel``)."""
    total = mel.size(0) if total is None else total
    w0, w1 = max(0, start - context), min(total, end + context)
    with engine._autocast():
        audio = engine.model.vocoder_inference(mel[w0:w1].unsqueeze(0))[0]
    per_frame = audio.numel() // (w1 - w0)
    return audio[(start - w0) * per_frame:(end - w0) * per_frame].float().cpu()


@dataclass
class StreamRecord:
    """One request's stream: when each chunk left (scheduler clock) and which frames it carried."""

    request_id: int
    arrival_s: float
    chunks: list[tuple[int, int, float]] = field(default_factory=list)  # (first frame, end frame, sent at)
    audio: list[torch.Tensor] = field(default_factory=list)
    emitted: int = 0  # frames sent so far
    final: bool = False

    def ttfa_s(self) -> float | None:
        return self.chunks[0][2] - self.arrival_s if self.chunks else None

    def underrun_s(self, frames_per_second: float) -> float:
        """How late the latest chunk was for a listener who starts playing at the first chunk (0: never)."""
        if not self.chunks:
            return 0.0
        t_play = self.chunks[0][2]
        return max(0.0, max(sent - (t_play + first / frames_per_second) for first, _, sent in self.chunks))


class AudioStreamer:
    """Emits each active stream's ready audio chunks after every decode step of one engine."""

    def __init__(self, engine: TTSEngine, config: StreamingConfig | None = None) -> None:
        self.engine = engine
        self.config = config or StreamingConfig()
        self.streams: dict[int, StreamRecord] = {}

    @torch.inference_mode()
    def after_step(self, now_s: float) -> None:
        """Send every chunk that is ready: ``chunk_frames`` frames whose right context is decoded, or, for a
        finished sequence, all its remaining frames."""
        eng, cfg = self.engine, self.config
        positions = eng.pos[: eng.active].tolist()
        for i, (slot, pos) in enumerate(zip(eng.slots, positions, strict=True)):
            rec = self.streams.get(slot.request.request_id)
            if rec is None:
                rec = self.streams[slot.request.request_id] = StreamRecord(slot.request.request_id,
                                                                           slot.request.arrival_s)
            if rec.final:
                continue
            ready = pos if slot.done else pos - cfg.context_frames
            while ready - rec.emitted >= cfg.chunk_frames or (slot.done and ready > rec.emitted):
                end = min(ready, rec.emitted + cfg.chunk_frames)
                rec.audio.append(vocode_window(eng, eng.out_mel[i], rec.emitted, end, cfg.context_frames, pos))
                rec.chunks.append((rec.emitted, end, now_s))
                rec.emitted = end
            rec.final = slot.done

    def finish(self, completed: list[Completed]) -> None:
        """Attach the streamed audio to each retired request (in place of a one-shot vocoder pass)."""
        for c in completed:
            rec = self.streams[c.request_id]
            c.audio = torch.cat(rec.audio) if rec.audio else torch.zeros(0)
            c.meta["chunks"] = len(rec.chunks)
            c.meta["ttfa_s"] = rec.ttfa_s()


def stream_summary(streamer: AudioStreamer, frames_per_second: float) -> dict[str, Any]:
    """TTFA percentiles, the share of requests whose audio ever fell behind playback, chunks sent."""
    recs = [r for r in streamer.streams.values() if r.chunks]
    ttfa = [r.ttfa_s() for r in recs]
    late = [r.underrun_s(frames_per_second) for r in recs]
    if not recs:
        return {"requests": 0}
    return {"requests": len(recs),
            "ttfa_ms_p50": 1e3 * float(np.percentile(ttfa, 50)),
            "ttfa_ms_p95": 1e3 * float(np.percentile(ttfa, 95)),
            "ttfa_ms_max": 1e3 * float(max(ttfa)),
            "underrun_share": float(np.mean([x > 0 for x in late])),
            "underrun_ms_max": 1e3 * float(max(late)),
            "chunks": sum(len(r.chunks) for r in recs)}
