"""What a model must provide for the streaming engine to batch it across streams.

The engine (``speechbench.streaming.engine``) owns everything about streams: admission, audio queues,
arrival times, segments, endpointing, events and metrics. A ``StreamingModel`` owns everything about
recognition: per-slot state preallocated for the engine's capacity, one step over a batch of slots with
one chunk of audio each, and the text each slot's current segment has produced so far.

Contract of one step (``step``), called from the engine's one scheduler thread only:

* ``slots`` are distinct slot indices in ``[0, capacity)``; ``audio`` is ``(len(slots), chunk_samples)``
  float32 at ``sample_rate`` (the last chunk of a stream zero-padded);
* ``final[i]`` says the segment of row ``i`` ends with this chunk (the stream is being finalized, or the
  VAD endpointer found the end of the utterance in it): a model that revises its hypothesis (Whisper with
  LocalAgreement) must return its final text for that row now;
* the result gives, per row, the segment's whole text so far (not a delta) and whether this step changed
  it, plus optional per-frame symbols (CTC models: the blank endpointer reads them).

Between segments the engine calls ``reset(slots, new_stream=False)`` (after an endpoint or a barge-in:
forget the utterance, keep what belongs to the audio, such as a feature window's overlap) and
``reset(slots, new_stream=True)`` when a new stream takes a slot. Implementations: ``ctc.CTCStreamingModel``
(the project's own causal CTC model, one batched forward per step), ``whisper_la.WhisperLocalAgreement``
(Whisper re-decoding each stream's buffer, all ready streams in one batched encode + decode),
``moonshine.MoonshineStreaming`` (Moonshine's native streaming API, one stream object per slot).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class StepOutput:
    texts: list[str]  # per row: the segment's whole text after this step
    changed: np.ndarray  # bool (B,): the text grew or changed in this step
    frame_symbols: torch.Tensor | None = None  # (B, t) best symbol per output frame (CTC), else None
    stage_ms: dict[str, float] = field(default_factory=dict)  # time spent per stage of the step
    # bool (B,): the model ended the row's segment in this step by its own rule (an utterance cap): the
    # engine emits the final and resets the slot as for an endpoint. None: no row ended.
    ends: np.ndarray | None = None
    # per row whose segment ends in this step: the text that was committed (shown as stable) just before
    # the final decode, for scoring what partial readers were promised; None for other rows or models.
    committed: list[str | None] | None = None


class StreamingModel(ABC):
    name: str = "model"
    precision: str = "float32"
    params: int | None = None
    backend: str = ""
    # How the engine's batching reaches the model, for reports: "batched" (one call for all rows of a
    # step) or "per-stream" (the step loops over rows: scheduling is shared, compute is not).
    batching: str = "batched"
    sample_rate: int = 16000
    default_chunk_ms: int = 40  # audio per stream per step, unless the engine is configured otherwise
    # Output frame of the model in ms when it emits one symbol per frame (CTC); None otherwise. The blank
    # endpointer needs it.
    frame_ms: float | None = None
    exact: bool = False  # streaming output equals the offline pass exactly (the engine's parity check)
    # A finalized stream gets one last step with final=True even when no audio is left, so a model that
    # revises its hypothesis (or holds native state) can flush it.
    needs_final_step: bool = True
    # How long a ready chunk waits for a fuller batch with this model, when the benchmark does not say:
    # None = the engine's setting. A re-decoding model batches only streams whose chunk is complete at the
    # same moment, so it waits longer (Whisper: a quarter of its 1 s chunk).
    default_max_wait_ms: float | None = None
    # Longest segment the model can take (Whisper: one 30 s window); the engine forces a final before it.
    max_segment_s: float | None = None
    # A re-decoding model's step costs the same whatever share of a chunk is new, so a stream holding at
    # least this much new audio may join a step formed for other streams (``lengths`` then says how much of
    # its row is audio). Streams that join early fall into step with the others: larger batches, one
    # phase. None: only whole chunks (a causal model's state advances by exactly one chunk a step).
    min_join_ms: int | None = None
    # Most rows per step with this model, when the benchmark does not say (None: the engine's setting).
    default_max_batch: int | None = None
    # The step takes all of a stream's queued audio, not one model chunk: a re-decoding model's update costs
    # the same however much audio is new, so when the engine falls behind its updates grow further apart
    # (partials later) instead of its queues filling until audio is shed. ``audio`` then has as many columns
    # as the longest row (``lengths`` says each row's audio).
    drains_queue: bool = False
    # The model's step takes ``trailing_ms`` (per row: ms of non-speech at the end of the row's audio, from
    # the VAD endpointer), to skip work on audio that holds no new speech.
    uses_trailing_silence: bool = False

    chunk_ms: int = 0  # set by allocate()

    @property
    def chunk_samples(self) -> int:
        return self.chunk_ms * self.sample_rate // 1000

    @abstractmethod
    def allocate(self, capacity: int, chunk_ms: int) -> None:
        """Preallocate per-slot state for ``capacity`` streams fed ``chunk_ms`` of audio a step (called once,
        before any step; raises ValueError when the chunk does not suit the model)."""

    @abstractmethod
    def reset(self, slots: list[int], new_stream: bool) -> None:
        """Forget the current segment of these slots (and, for a new stream, everything of the last one)."""

    @abstractmethod
    def step(self, slots: np.ndarray, audio: np.ndarray, final: np.ndarray,
             speech: np.ndarray | None = None, lengths: np.ndarray | None = None) -> StepOutput:
        """One step over a batch of slots (see the module docstring). ``speech`` (bool per row, when a VAD
        endpointer runs): the segment has contained speech so far; a model may skip rows without it.
        ``lengths``: samples of real audio per row (the rest is zero padding: a stream's last chunk, or a
        row that joined early under ``min_join_ms``); None = every row whole."""

    def text(self, slot: int) -> str:
        """The current text of the slot's segment (for a final with no step left to take)."""
        raise NotImplementedError

    def warmup(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:  # noqa: B027 - optional
        """Run a few steps on zeros (allocator, kernel selection), leaving no state behind."""

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "precision": self.precision, "params": self.params,
                "backend": self.backend, "batching": self.batching, "chunk_ms": self.chunk_ms or self.default_chunk_ms,
                "exact": self.exact, "options": self.options()}

    def options(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:  # noqa: B027 - optional
        """Free what the model holds (native streams, sessions)."""
