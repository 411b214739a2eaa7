"""Moonshine tiny (English) through moonshine-voice's own native runtime (libmoonshine + ONNX Runtime).

The ``moonshine-voice==0.0.73`` wheel bundles the tiny-en model (``assets/tiny-en/encoder_model.ort``,
``decoder_model_merged.ort``, ``tokenizer.bin``), so it loads with no network; later releases download
their weights, hence the exact pin. Nothing here calls ``get_model_for_language()`` (it downloads).

Decoding, and why:
* Offline: ``Transcriber.transcribe_without_streaming`` on the whole utterance.
* VAD off by default (``vad_threshold=0``: every window counts as speech, so an utterance is decoded as one
  line). The library's own VAD is not repeatable from call to call in 0.0.73 (the same clip's line onset
  moves by a 32 ms window between calls, which can change the words: "Could you" vs "Come, you"), and
  the inputs here are segmented utterances, as for Whisper's ``vad_filter=False``. Without VAD the decoder
  covers one segment only, so clips longer than ``whole_max_s`` (30 s) go through the library's VAD
  segmentation instead (a second transcriber, loaded on first need); ``vad=True`` uses it for all.
* ``return_audio_data=false``: otherwise every line carries a copy of its audio back into Python.
* Threads: the library exposes no thread option; ONNX Runtime uses its default pool (one thread per
  physical core).

Parameters are counted from the .ort files themselves (``count_ort_params``); precision is as stored:
dynamically quantized int8 (uint8) matrix multiplies, float32 convolutions, norms and biases.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.asr.base import Recognizer, RecognizerUnavailable, as_waveform

log = logging.getLogger(__name__)

PACKAGE = "moonshine-voice"
MODEL_DIR = "tiny-en"
MODEL_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
WHOLE_MAX_S = 30.0


def tiny_en_path() -> Path:
    """The bundled tiny-en model folder (``get_assets_path() / "tiny-en"``), for ``Transcriber(model_path=...,
    model_arch=ModelArch.TINY)``. RecognizerUnavailable if the package or a model file is missing.

    Importing ``moonshine_voice`` downloads nothing (only ``get_model_for_language`` and friends do)."""
    if importlib.util.find_spec("moonshine_voice") is None:
        raise RecognizerUnavailable(f"{PACKAGE} is not installed (uv sync; pinned to 0.0.73, which bundles "
                                    "tiny-en)")
    from moonshine_voice.utils import get_assets_path

    path = Path(get_assets_path()) / MODEL_DIR
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise RecognizerUnavailable(f"Moonshine tiny-en files missing in {path}: {', '.join(missing)} "
                                    f"({PACKAGE} 0.0.73 bundles them; later versions do not)")
    return path


def check_available() -> str | None:
    """Why Moonshine tiny cannot load here, without loading it; None if it should."""
    try:
        tiny_en_path()
    except RecognizerUnavailable as e:
        return str(e)
    return None


def _ort_schema() -> Any:
    """ONNX Runtime's generated flatbuffers bindings for .ort files, imported without importing onnxruntime
    itself (that loads its native library, ~2 s): they live under onnxruntime/tools/ort_format_model and
    import each other as the top-level package ``ort_flatbuffers_py``."""
    if "ort_flatbuffers_py" not in sys.modules:
        spec = importlib.util.find_spec("onnxruntime")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("onnxruntime is not installed")
        parent = str(Path(next(iter(spec.submodule_search_locations))) / "tools" / "ort_format_model")
        sys.path.insert(0, parent)
        try:
            import ort_flatbuffers_py.fbs  # noqa: F401
        finally:
            sys.path.remove(parent)
    from ort_flatbuffers_py.fbs import InferenceSession, TensorDataType

    return InferenceSession.InferenceSession, TensorDataType.TensorDataType


def count_ort_params(paths: Iterable[str | Path]) -> int | None:
    """Parameters stored in ONNX Runtime (.ort) model files: every float / int8 initializer of rank >= 1
    (subgraphs included, each name once), except quantization scales and zero points and integer shape
    constants; a large tensor stored twice (a tied embedding kept again, transposed, as the output
    projection) counts once. None if the files cannot be read this way."""
    try:
        session_cls, dtypes = _ort_schema()
        weight_types = {dtypes.FLOAT, dtypes.FLOAT16, dtypes.BFLOAT16, dtypes.DOUBLE, dtypes.INT8, dtypes.UINT8}
        total = 0
        for path in paths:
            buf = Path(path).read_bytes()
            graphs = [session_cls.GetRootAsInferenceSession(buf, 0).Model().Graph()]
            tensors: dict[str, Any] = {}
            while graphs:
                g = graphs.pop()
                for i in range(g.InitializersLength()):
                    t = g.Initializers(i)
                    tensors.setdefault(t.Name().decode(), t)
                for i in range(g.NodesLength()):
                    node = g.Nodes(i)
                    if node.OpType() not in (b"If", b"Loop", b"Scan"):
                        continue
                    for a in range(node.AttributesLength()):
                        attr = node.Attributes(a)
                        if attr.G() is not None:
                            graphs.append(attr.G())
                        graphs.extend(attr.Graphs(k) for k in range(attr.GraphsLength()))
            by_shape: dict[tuple[int, ...], list[tuple[tuple[int, ...], Any]]] = {}
            for name, t in tensors.items():
                if (t.DataType() not in weight_types or t.DimsLength() == 0
                        or name.endswith(("_scale", "_zero_point"))):
                    continue
                dims = tuple(t.Dims(d) for d in range(t.DimsLength()))
                size = int(np.prod(dims))
                total += size
                if size >= 65536:
                    by_shape.setdefault(tuple(sorted(dims)), []).append((dims, t))
            for group in by_shape.values():  # only same-sized large tensors can be copies of each other
                if len(group) < 2:
                    continue
                seen: set[bytes] = set()
                for dims, t in group:
                    raw = t.RawDataAsNumpy()
                    if raw is None or raw.size == 0:
                        continue
                    keys = {hashlib.sha1(raw.tobytes()).digest()}
                    if len(dims) == 2:
                        keys.add(hashlib.sha1(np.ascontiguousarray(raw.reshape(dims).T).tobytes()).digest())
                    if keys & seen:
                        total -= int(np.prod(dims))
                    seen |= keys
        return total
    except Exception as e:  # an unknown layout or missing bindings: say nothing rather than guess
        log.debug("cannot count .ort parameters: %s: %s", type(e).__name__, e)
        return None


class MoonshineRecognizer(Recognizer):
    name = "moonshine-tiny"
    precision = "int8"  # as stored: uint8 dynamically quantized MatMuls; convs, norms, biases float32

    def __init__(self, vad: bool = False, whole_max_s: float = WHOLE_MAX_S,
                 engine_options: dict[str, Any] | None = None, name: str | None = None) -> None:
        """``vad``: segment every clip with the library's VAD (default off, see the module docstring).
        ``whole_max_s``: longer clips are segmented by the VAD even with ``vad=False``.
        ``engine_options``: extra libmoonshine transcriber options (strings, e.g. ``max_tokens_per_second``)."""
        path = tiny_en_path()
        try:
            from moonshine_voice import ModelArch, Transcriber
        except Exception as e:
            raise RecognizerUnavailable(f"{PACKAGE} failed to import: {type(e).__name__}: {e}") from e
        self._transcriber_cls, self._arch = Transcriber, ModelArch.TINY
        self.path = path
        self.vad = vad
        self.whole_max_s = whole_max_s
        self.engine_options = {"return_audio_data": "false", **{k: str(v) for k, v in
                                                                 (engine_options or {}).items()}}
        self._whole = None if vad else self._load({"vad_threshold": "0"})
        self._segmented = self._load({}) if vad else None  # loaded on first long clip otherwise
        self.name = name or self.name
        self.params = count_ort_params(path / f for f in MODEL_FILES if f.endswith(".ort"))
        self.backend = f"{PACKAGE} {metadata.version(PACKAGE)} (libmoonshine, ONNX Runtime)"

    def _load(self, extra: dict[str, str]) -> Any:
        try:
            return self._transcriber_cls(model_path=str(self.path), model_arch=self._arch,
                                         options={**self.engine_options, **extra})
        except Exception as e:
            raise RecognizerUnavailable(f"cannot load Moonshine tiny-en from {self.path}: "
                                        f"{type(e).__name__}: {e}") from e

    def options(self) -> dict[str, Any]:
        return {"model": MODEL_DIR, "vad": self.vad, "whole_max_s": self.whole_max_s,
                "engine_options": dict(self.engine_options), "threads": "library default"}

    def transcribe_one(self, audio: np.ndarray) -> str:
        audio = as_waveform(audio)
        if audio.size == 0:
            return ""
        if self.vad or audio.size > self.whole_max_s * self.sample_rate:
            if self._segmented is None:
                self._segmented = self._load({})
            transcriber = self._segmented
        else:
            transcriber = self._whole
        transcript = transcriber.transcribe_without_streaming(audio.tolist(), self.sample_rate)
        return " ".join(line.text.strip() for line in transcript.lines if line.text.strip())

    def transcribe(self, batch: list[np.ndarray]) -> list[str]:
        return [self.transcribe_one(a) for a in batch]

    def close(self) -> None:
        for attr in ("_whole", "_segmented"):
            t = getattr(self, attr, None)
            if t is not None:
                t.close()
            setattr(self, attr, None)
