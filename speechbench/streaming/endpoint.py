"""Endpointers: decide, step by step for a batch of streams, where an utterance ends.

``BlankEndpointer`` (default, free): the CTC model itself says when nothing is being said. After the
segment has produced at least one character, ``silence_ms`` of consecutive frames whose best symbol is the
blank end the utterance. It needs nothing beyond the argmax the greedy decoder already computed.

``VadEndpointer``: silero-vad (ONNX, shipped with the package) run batched across the streams of a step,
32 ms windows with its 64-sample context and recurrent state kept per slot. The utterance ends after
``silence_ms`` of windows below ``threshold`` once speech was seen.

Both work on slot-indexed arrays preallocated for the engine's capacity, so a step touches only its rows.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechbench.asr.ctc.tokenizer import BLANK


@dataclass
class EndpointDecision:
    """Per row of the step: utterance ended here; segment has seen speech; trailing silence (ms)."""

    endpoint: np.ndarray  # bool (B,)
    speech: np.ndarray  # bool (B,)
    trailing_ms: np.ndarray  # float (B,)


class BlankEndpointer:
    name = "blank"

    def __init__(self, capacity: int, frame_ms: float, silence_ms: float = 300.0) -> None:
        self.frame_ms = frame_ms
        self.silence_ms = silence_ms
        self.trailing = np.zeros(capacity, dtype=np.int64)  # frames of blank since the last character
        self.speech = np.zeros(capacity, dtype=bool)  # a character was emitted in this segment

    def reset(self, slots: np.ndarray | list[int]) -> None:
        self.trailing[slots] = 0
        self.speech[slots] = False

    def step(self, slots: np.ndarray, ids: torch.Tensor, audio: np.ndarray | None = None) -> EndpointDecision:
        """``ids``: (B, t) best symbol per output frame of this step's chunk."""
        nb = (ids != BLANK).cpu().numpy()
        t = nb.shape[1]
        has = nb.any(1)
        last = t - 1 - np.argmax(nb[:, ::-1], axis=1)  # index of the last non-blank frame (if any)
        trailing = np.where(has, t - 1 - last, self.trailing[slots] + t)
        speech = self.speech[slots] | has
        self.trailing[slots] = trailing
        self.speech[slots] = speech
        tms = trailing * self.frame_ms
        return EndpointDecision(speech & (tms >= self.silence_ms), speech, tms)


def silero_onnx_path() -> Path:
    """silero-vad's ONNX file, found without importing the package: ``silero_vad/model.py`` calls
    ``torch.set_num_threads(1)`` at import, which silently dropped every later torch op of the process to
    one thread (Part 3's sections after the first VAD, a server's CTC model)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("silero-vad is not installed (the VAD endpointer needs it: pip install silero-vad)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


class VadEndpointer:
    """silero-vad, batched across streams. ~0.1-0.2 ms per 32 ms window per stream on one CPU core."""

    name = "vad"
    WINDOW = 512
    CONTEXT = 64

    def __init__(self, capacity: int, silence_ms: float = 300.0, threshold: float = 0.5,
                 sample_rate: int = 16000) -> None:
        if sample_rate != 16000:
            raise ValueError("the VAD endpointer runs silero-vad at 16 kHz")
        import onnxruntime

        path = silero_onnx_path()
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
        self.silence_ms = silence_ms
        self.threshold = threshold
        self.sr = np.array(sample_rate, dtype=np.int64)
        self.window_ms = 1000.0 * self.WINDOW / sample_rate
        self.state = np.zeros((2, capacity, 128), dtype=np.float32)
        self.context = np.zeros((capacity, self.CONTEXT), dtype=np.float32)
        self.residual = np.zeros((capacity, 4 * self.WINDOW + 16000), dtype=np.float32)
        self.nres = np.zeros(capacity, dtype=np.int64)
        self.trailing_ms = np.zeros(capacity, dtype=np.float64)
        self.speech = np.zeros(capacity, dtype=bool)
        self.last_prob = np.zeros(capacity, dtype=np.float32)

    def reset(self, slots: np.ndarray | list[int]) -> None:
        """New segment: forget the speech flag and trailing silence; the VAD's own state carries on."""
        self.trailing_ms[slots] = 0.0
        self.speech[slots] = False

    def reset_hard(self, slots: np.ndarray | list[int]) -> None:
        """New stream in the slot: also the recurrent state, context and buffered samples."""
        self.reset(slots)
        self.state[:, slots] = 0.0
        self.context[slots] = 0.0
        self.nres[slots] = 0

    def step(self, slots: np.ndarray, ids: torch.Tensor | None, audio: np.ndarray,
             lengths: np.ndarray | None = None) -> EndpointDecision:
        for r, s in enumerate(slots):
            n = audio.shape[1] if lengths is None else int(lengths[r])
            k = self.nres[s]
            if k + n > self.residual.shape[1]:  # a step that drains a longer queue (StreamingModel.drains_queue)
                wider = np.zeros((self.residual.shape[0], k + n + self.WINDOW), dtype=np.float32)
                wider[:, : self.residual.shape[1]] = self.residual
                self.residual = wider
            self.residual[s, k: k + n] = audio[r, :n]
            self.nres[s] = k + n
        while True:
            rows = np.nonzero(self.nres[slots] >= self.WINDOW)[0]
            if rows.size == 0:
                break
            sl = slots[rows]
            x = np.concatenate([self.context[sl], self.residual[sl, : self.WINDOW]], axis=1)
            prob, state = self.session.run(None, {"input": x, "state": self.state[:, sl], "sr": self.sr})
            self.state[:, sl] = state
            self.context[sl] = x[:, -self.CONTEXT:]
            p = prob.reshape(-1)
            self.last_prob[sl] = p
            is_speech = p >= self.threshold
            self.speech[sl] |= is_speech
            self.trailing_ms[sl] = np.where(is_speech, 0.0, self.trailing_ms[sl] + self.window_ms)
            for s in sl:
                k = self.nres[s] - self.WINDOW
                self.residual[s, :k] = self.residual[s, self.WINDOW: self.WINDOW + k]
                self.nres[s] = k
        speech = self.speech[slots].copy()
        tms = self.trailing_ms[slots].copy()
        return EndpointDecision(speech & (tms >= self.silence_ms), speech, tms)
