"""Moonshine tiny and base decoding many utterances at once, each row's tokens independent of its batch.

* Encoder: ONNX Runtime, one utterance per call (the encoder is compute-bound on a CPU, so batching it saves
  little, and one row per call is exact: padding and per-batch activation quantization change tokens, see
  ``moonshine_onnx.py``).
* Decoder: for tiny, ``MoonshineTorchDecoder`` (masks that work, float activations): every row of a call
  decodes together whatever its encoder length, optionally after a forced prefix (a streaming model's
  committed tokens), one batched call per generated token. For base (whose bundled graph is a different
  export), ONNX Runtime's decoder in groups of equal encoder length (float weights: exact); a forced prefix
  is not supported there, so base re-decodes from the start.

``decode`` returns each row's whole token sequence (prefix included), without start and end tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np
import torch

from speechbench.asr.base import Recognizer, as_waveform
from speechbench.asr.moonshine_onnx import SOURCES, MoonshineOnnx, model_dir

TORCH_DECODER = ("moonshine-tiny",)  # graphs whose layout moonshine_torch.py reads
# The encoder's convolutions need ~1000 samples (kernels 127, 7, 3; strides 64, 3, 2): shorter audio (a
# final of a few milliseconds, the tail of a cut) is padded with silence to this many samples.
MIN_SAMPLES = 4000


def _at_least(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio if len(audio) >= MIN_SAMPLES else np.pad(audio, (0, MIN_SAMPLES - len(audio)))


class MoonshineBatch:
    def __init__(self, model: str = "moonshine-tiny", threads: int | None = None, max_tokens_per_s: float = 13.0,
                 decoder: str = "auto") -> None:
        path = model_dir(model)
        self.model = model
        self.onnx = MoonshineOnnx(path, threads, max_tokens_per_s)
        self.tokenizer = self.onnx.tokenizer
        if decoder == "auto":
            decoder = "torch" if model in TORCH_DECODER else "onnx"
        if decoder not in ("torch", "onnx"):
            raise ValueError(f"decoder must be auto, torch or onnx, got {decoder!r}")
        self.decoder_kind = decoder
        self.torch_decoder = None
        if decoder == "torch":
            from speechbench.asr.moonshine_torch import MoonshineTorchDecoder

            self.torch_decoder = MoonshineTorchDecoder.from_ort(path / "decoder_model_merged.ort", self.onnx.heads)
        self.stats = {"encoder_ms": 0.0, "encoder_rows": 0, "encoder_audio_s": 0.0, "decoder_ms": 0.0,
                      "decoder_calls": 0, "decoder_rows": 0, "decoded_tokens": 0, "forced_tokens": 0}
        # Several utterances: one single-thread encoder session per thread, run side by side (ONNX Runtime
        # releases the GIL): 1.27x the throughput of one session using both threads on 24 utterances of 1-6 s
        # (measured, 2 cores). One utterance: the multi-thread session (its latency is what counts).
        self.workers = [self.onnx.encoder_session(1) for _ in range(self.threads)] if self.threads > 1 else []
        self._pool = None

    @property
    def path(self) -> Any:
        return self.onnx.path

    @property
    def threads(self) -> int:
        return self.onnx.threads

    def max_tokens(self, samples: int) -> int:
        return self.onnx.max_tokens(samples)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """One utterance (N,) -> its encoder output (frames, dim)."""
        t0 = time.perf_counter()
        h = self.onnx.encode(_at_least(audio)[None])[0]
        self.stats["encoder_ms"] += 1e3 * (time.perf_counter() - t0)
        self.stats["encoder_rows"] += 1
        self.stats["encoder_audio_s"] += len(audio) / 16000
        return h

    def encode_rows(self, audios: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Each utterance's encoder output, one utterance per call (exact), spread over the workers."""
        if len(audios) < 2 or not self.workers:
            return {i: self.encode(a) for i, a in audios.items()}
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self.workers), thread_name_prefix="moonshine-encoder")
        shares: list[list[int]] = [[] for _ in self.workers]
        load = [0] * len(self.workers)
        for i in sorted(audios, key=lambda i: -len(audios[i])):  # longest first to the least loaded worker
            w = load.index(min(load))
            shares[w].append(i)
            load[w] += len(audios[i])
        t0 = time.perf_counter()

        def run(w: int) -> dict[int, np.ndarray]:
            return {i: self.onnx.encode(_at_least(audios[i])[None], self.workers[w])[0] for i in shares[w]}

        out: dict[int, np.ndarray] = {}
        for part in self._pool.map(run, range(len(self.workers))):
            out.update(part)
        self.stats["encoder_ms"] += 1e3 * (time.perf_counter() - t0)
        self.stats["encoder_rows"] += len(audios)
        self.stats["encoder_audio_s"] += sum(len(a) for a in audios.values()) / 16000
        return out

    def decode(self, audios: Sequence[np.ndarray], prefixes: Sequence[Sequence[int]] | None = None,
               max_new: Sequence[int | None] | None = None, drafts: Sequence[Sequence[int]] | None = None,
               extra: Sequence[int | None] | None = None) -> list[list[int]]:
        """Greedy tokens of each utterance; with ``prefixes`` (torch decoder only), each row continues its
        forced prefix. A row stops at its end token, at ``max_tokens`` of its audio in all, or after
        ``max_new[i]`` new tokens when given. ``drafts``: guesses of the continuation, verified in one call
        (the torch decoder's speculative prefill; the result is the same greedy decode)."""
        n = len(audios)
        out: list[list[int]] = [[] for _ in range(n)]
        rows = [i for i in range(n) if len(audios[i])]
        if not rows:
            return out
        hidden = self.encode_rows({i: audios[i] for i in rows})
        t0 = time.perf_counter()
        if self.torch_decoder is not None:
            pre = [list(prefixes[i]) if prefixes is not None else [] for i in rows]
            cap = [max(1, self.max_tokens(len(audios[i])) - len(p)) for i, p in zip(rows, pre, strict=True)]
            if max_new is not None:
                cap = [c if max_new[i] is None else max(1, min(c, max_new[i])) for i, c in zip(rows, cap, strict=True)]
            with torch.inference_mode():
                new = self.torch_decoder.generate([torch.from_numpy(hidden[i]) for i in rows], pre, cap,
                                                  [list(drafts[i]) for i in rows] if drafts is not None else None,
                                                  [extra[i] for i in rows] if extra is not None else None)
            for i, p, t in zip(rows, pre, new, strict=True):
                out[i] = p + t
                self.stats["decoded_tokens"] += len(t) + 1
                self.stats["forced_tokens"] += len(p)
            self.stats["decoder_calls"] += 1
        else:
            groups: dict[int, list[int]] = {}
            for i in rows:
                groups.setdefault(hidden[i].shape[0], []).append(i)
            for idx in groups.values():
                h = np.stack([hidden[i] for i in idx])
                samples = max(len(audios[i]) for i in idx)
                for i, toks in zip(idx, self.onnx.generate(h, samples, self.max_tokens(samples)), strict=True):
                    out[i] = toks
                    self.stats["decoded_tokens"] += len(toks) + 1
                self.stats["decoder_calls"] += 1
        self.stats["decoder_rows"] += len(rows)
        self.stats["decoder_ms"] += 1e3 * (time.perf_counter() - t0)
        return out

    def transcribe(self, audios: Sequence[np.ndarray], max_batch: int = 32) -> list[str]:
        texts: list[str] = []
        for k in range(0, len(audios), max_batch):
            texts += [self.tokenizer.decode(t) for t in self.decode(audios[k: k + max_batch])]
        return texts

    def transcribe_whole(self, audios: Sequence[np.ndarray], max_s: float) -> list[str]:
        """Each utterance decoded whole up to ``max_s``; a longer one is split at the quietest point near each
        limit (``speech/pauses.py``) and its pieces' texts joined: the offline pass of Part 2's recognizer and
        of the streaming model alike."""
        from speechbench.speech.pauses import split_at_pauses

        pieces: list[np.ndarray] = []
        owner: list[int] = []
        for i, a in enumerate(audios):
            for part in split_at_pauses(np.asarray(a, dtype=np.float32), int(max_s * 16000)):
                pieces.append(part)
                owner.append(i)
        out = [""] * len(audios)
        for i, t in zip(owner, self.transcribe(pieces), strict=True):
            out[i] = f"{out[i]} {t}".strip()
        return out

    def starts_word(self, token: int) -> bool:
        piece = self.tokenizer.pieces[token] if 0 <= token < len(self.tokenizer) else b""
        return piece.startswith("\u2581".encode())


class MoonshineBatchRecognizer(Recognizer):
    """Moonshine tiny or base through ``MoonshineBatch``: each utterance decoded whole (up to
    ``max_utterance_s``; a longer one is split at the quietest point near each limit, as the streaming
    model's utterance cap does)."""

    precision = "int8 weights"  # the bundled uint8 weights; activations float32 (torch) or uint8 (ONNX)

    def __init__(self, model: str = "moonshine-tiny", threads: int | None = None, max_tokens_per_s: float = 13.0,
                 max_utterance_s: float = 30.0, decoder: str = "auto", name: str | None = None) -> None:
        from speechbench.asr.moonshine import count_ort_params

        self.batch = MoonshineBatch(model, threads, max_tokens_per_s, decoder)
        self.model = model
        self.max_utterance_s = max_utterance_s
        self.name = name or model
        path = self.batch.path
        self.params = count_ort_params([path / "encoder_model.ort", path / "decoder_model_merged.ort"])
        src = SOURCES[model]
        self.backend = (f"onnxruntime {metadata.version('onnxruntime')} encoder + "
                        f"{'torch ' + torch.__version__ if self.batch.decoder_kind == 'torch' else 'onnxruntime'} "
                        f"decoder ({src.package} {metadata.version(src.package)} weights)")

    def options(self) -> dict[str, Any]:
        return {"model": self.model, "decoder": self.batch.decoder_kind, "decoding": "greedy, KV cache",
                "max_tokens_per_s": self.batch.onnx.max_tokens_per_s, "max_utterance_s": self.max_utterance_s,
                "threads": self.batch.threads}

    def transcribe(self, batch: list[np.ndarray]) -> list[str]:
        return self.batch.transcribe_whole([as_waveform(a) for a in batch], self.max_utterance_s)

