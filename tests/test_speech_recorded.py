"""The recorded-speech manifest: the clips moonshine-voice bundles, with their published texts."""

from __future__ import annotations

import importlib.util
import json

import pytest

from speechbench.speech.manifest import read_manifest
from speechbench.speech.recorded import TEXTS, write_recorded_manifest


@pytest.mark.skipif(importlib.util.find_spec("moonshine_voice") is None, reason="moonshine-voice not installed")
def test_recorded_manifest_reads_back_with_audio(tmp_path):
    path = write_recorded_manifest(tmp_path / "m" / "manifest.jsonl")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["sentence_id"] for r in rows] == list(TEXTS)
    res = read_manifest(path)
    assert not res.failures and len(res.utterances) == 2
    assert {u.condition for u in res.utterances} == {"recorded"}
    assert all(r["duration"] > 5 for r in rows)


def test_recorded_manifest_names_the_missing_package(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="moonshine-voice is not installed"):
        write_recorded_manifest(tmp_path / "x.jsonl")
