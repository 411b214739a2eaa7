from __future__ import annotations

import json
import math

import numpy as np
import soundfile as sf

from speechbench.speech.manifest import Utterance, read_manifest, write_manifest


def _wav(path, seconds=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(np.arange(int(16000 * seconds)) / 5)).astype(np.float32), 16000)
    return path


def test_round_trip_keeps_fields_and_relative_paths(tmp_path, monkeypatch):
    _wav(tmp_path / "corpus" / "wavs" / "a.wav", 0.5)
    _wav(tmp_path / "corpus" / "wavs" / "b.wav", 1.0)
    utts = [
        Utterance("a", "wavs/a.wav", "hello there", 0.5, "en-us", "en-us-s0", "clean",
                  {"sentence_id": "eval-1"}),
        Utterance("b", "wavs/b.wav", "caf\u00e9 au lait", 1.0, "en-029", "en-029-s1", "white-snr10"),
    ]
    path = write_manifest(tmp_path / "corpus" / "manifest.jsonl", utts)
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the manifest's folder, not the cwd
    res = read_manifest(path)
    assert res.ok and len(res.utterances) == 2
    a, b = res.utterances
    assert a.to_json() == utts[0].to_json() and b.to_json() == utts[1].to_json()
    assert a.audio_path == (tmp_path / "corpus" / "wavs" / "a.wav").resolve()
    assert a.extra == {"sentence_id": "eval-1"}
    # same utterances -> same bytes (stable key order, UTF-8 kept)
    text = path.read_text(encoding="utf-8")
    assert "caf\u00e9" in text
    write_manifest(tmp_path / "again.jsonl", res.utterances)
    assert (tmp_path / "again.jsonl").read_text(encoding="utf-8") == text


def test_bad_lines_are_reported_not_fatal(tmp_path):
    good = _wav(tmp_path / "good.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"not a wav file" * 20)
    lines = [
        json.dumps({"id": "ok1", "audio_filepath": "good.wav", "text": "fine"}),  # 1
        '{"id": "broken", "audio_filepath": "good.wav", "text": ',  # 2 malformed JSON
        json.dumps({"id": "notext", "audio_filepath": "good.wav"}),  # 3 missing field
        json.dumps({"id": "gone", "audio_filepath": "missing.wav", "text": "x"}),  # 4 missing file
        json.dumps({"id": "empty", "audio_filepath": "empty.wav", "text": "x"}),  # 5 empty file
        json.dumps({"id": "junk", "audio_filepath": "junk.wav", "text": "x"}),  # 6 unreadable
        "",  # 7 blank: skipped silently
        json.dumps(["not", "an", "object"]),  # 8
        json.dumps({"id": "ok1", "audio_filepath": "good.wav", "text": "dup"}),  # 9 duplicate id
        json.dumps({"audio_filepath": str(good), "text": "absolute", "duration": "abc"}),  # 10 bad duration
        json.dumps({"audio_filepath": str(good), "text": "nemo style", "duration": 0.5}),  # 11 absolute path
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    res = read_manifest(path)
    assert [u.text for u in res.utterances] == ["fine", "nemo style"]
    reasons = {f.line: f.reason for f in res.failures}
    assert set(reasons) == {2, 3, 4, 5, 6, 8, 9, 10}
    assert "malformed JSON" in reasons[2]
    assert "missing field(s): text" in reasons[3]
    assert "not found" in reasons[4]
    assert "empty" in reasons[5]
    assert "unreadable" in reasons[6]
    assert "JSON object" in reasons[8]
    assert "duplicate id" in reasons[9]
    assert "duration" in reasons[10]
    assert res.summary()["failed_lines"] == 8


def test_defaults_for_nemo_manifest_and_duration_from_file(tmp_path):
    _wav(tmp_path / "x.wav", 0.75)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "x.wav", "text": "hi"}) + "\n")
    (u,) = read_manifest(tmp_path / "m.jsonl").utterances
    assert (u.dialect, u.speaker, u.condition) == ("unknown", "unknown", "clean")
    assert u.id == "x-L1"
    assert math.isclose(u.duration, 0.75)


def test_unchecked_read_keeps_unknown_duration_writable(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "nowhere.wav", "text": "hi"}) + "\n")
    res = read_manifest(tmp_path / "m.jsonl", check_audio=False)
    assert res.ok and math.isnan(res.utterances[0].duration)
    write_manifest(tmp_path / "out.jsonl", res.utterances)
    assert json.loads((tmp_path / "out.jsonl").read_text())["duration"] is None
