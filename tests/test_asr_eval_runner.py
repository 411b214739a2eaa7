"""Model specs and shards: the work units a local pool or a distributed engine runs."""

from __future__ import annotations

import json

import pytest

from speechbench.asr_eval.runner import make_shards, parse_model_spec, unavailable_reason


def test_model_specs():
    s = parse_model_spec("whisper-tiny.en-fp32")
    assert (s.label, s.backend, s.options) == ("whisper-tiny.en-fp32", "whisper-tiny.en", {"compute_type": "float32"})
    s = parse_model_spec("ctc-large@decoder=beam,batch_size=4")
    assert s.backend == "ctc-large" and s.options == {"decoder": "beam", "batch_size": 4} and s.own
    s = parse_model_spec("whisper-tiny.en-int8@beam_size=1")
    assert s.options == {"compute_type": "int8", "beam_size": 1} and not s.own
    assert parse_model_spec("ctc:models/x.pt").backend == "ctc:models/x.pt"
    with pytest.raises(ValueError, match="key=value"):
        parse_model_spec("pocketsphinx@beam")


def test_unavailable_reasons(tmp_path):
    assert "no CTC checkpoint" in unavailable_reason(parse_model_spec(f"ctc:{tmp_path}/none.pt"), "cpu")
    assert "needs CUDA" in unavailable_reason(parse_model_spec("whisper-tiny.en-fp16"), "cpu")
    assert "unknown recognizer" in unavailable_reason(parse_model_spec("nonesuch"), "cpu")
    assert unavailable_reason(parse_model_spec("pocketsphinx"), "cpu") is None


def test_shards_are_self_contained_and_interleaved():
    utts = [{"id": f"u{i}", "audio_path": f"/a/{i}.wav", "text": "t", "dialect": "d" + str(i % 3)} for i in range(7)]
    specs = [parse_model_spec("pocketsphinx"), parse_model_spec("whisper-tiny.en-int8")]
    shards = make_shards(specs, utts, workers=3, device="cpu", threads=1, batch_effect={"sizes": [1], "utterances": 2})
    assert len(shards) == 6
    first = [s for s in shards if s["model"]["label"] == "pocketsphinx"]
    assert sorted(u["id"] for s in first for u in s["utterances"]) == sorted(u["id"] for u in utts)
    assert [u["id"] for u in first[1]["utterances"]] == ["u1", "u4"]
    assert first[0]["batch_effect"] and first[1]["batch_effect"] is None
    assert json.loads(json.dumps(shards)) == shards  # plain JSON: can be shipped anywhere
