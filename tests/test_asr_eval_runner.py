"""Model specs and shards: the work units a local pool or a distributed engine runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechbench.asr_eval.runner import make_shards, parse_model_spec, timing_subset, unavailable_reason


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


def _grid(n_dialects=9, n_sentences=10, conditions=("clean",)):
    return [{"id": f"{d}-{s}-{c}", "dialect": f"d{d}", "sentence": f"s{s}", "condition": c}
            for d in range(n_dialects) for s in range(n_sentences) for c in conditions]


def test_timing_subset_is_deterministic_and_spread():
    utts = _grid()
    ids = timing_subset(utts, 8)
    assert ids == [f"{k}-{k}-clean" for k in range(8)]  # the diagonal: 8 dialects, 8 sentences
    assert timing_subset(list(utts), 8) == ids
    quick = timing_subset(_grid(3, 2, ("clean", "noisy")), 2)
    assert quick == ["0-0-clean", "1-1-noisy"]  # conditions rotate too
    assert len(set(timing_subset(_grid(2, 2), 4))) == 4  # more picks than the diagonal: no repeats
    assert timing_subset(utts, 0) == [] and len(timing_subset(_grid(1, 2), 5)) == 2


def test_timing_passes_go_to_the_first_shard_of_each_model():
    utts = [{**u, "audio_path": "/a.wav", "text": "t"} for u in _grid(3, 4)]
    specs = [parse_model_spec("pocketsphinx"), parse_model_spec("whisper-tiny.en-int8")]
    shards = make_shards(specs, utts, 2, "cpu", 1, None, timing={"passes": 3, "utterances": 2})
    firsts = [s for s in shards if s["shard_index"] == 0]
    assert all(s["timing"] is None for s in shards if s["shard_index"] != 0)
    assert firsts[0]["timing"] == firsts[1]["timing"]  # the same subset for every model
    own = {u["id"] for u in firsts[0]["utterances"]}
    assert firsts[0]["timing"]["passes"] == 3 and set(firsts[0]["timing"]["ids"]) <= own
    assert all(s["timing"] is None for s in make_shards(specs, utts, 1, "cpu", 1, None,
                                                        timing={"passes": 0, "utterances": 2}))


def test_worker_timing_passes_and_their_summary():
    from speechbench.asr_eval.analysis import speed_rtf, timing_summary
    from speechbench.asr_eval.worker import _timing_passes

    class Fake:
        sample_rate = 100
        calls = 0

        def transcribe(self, waves):
            Fake.calls += 1
            return [""] * len(waves)

    rec = Fake()
    out = _timing_passes(rec, [("a", np.zeros(100)), ("b", np.zeros(300))], 3)
    assert Fake.calls == 6 and out["utterances"] == ["a", "b"] and out["audio_s"] == 4.0
    assert [p["pass"] for p in out["passes"]] == [1, 2, 3]
    assert all(len(p["latency_s"]) == 2 and p["rtf"] == p["compute_s"] / 4.0 for p in out["passes"])
    timing = {"utterances": ["a", "b"], "audio_s": 4.0, "passes": [{"rtf": 0.3}, {"rtf": 0.1}, {"rtf": 0.2}]}
    s = timing_summary(timing)
    assert s["rtf_passes"] == [0.3, 0.1, 0.2] and s["rtf_median"] == 0.2 and s["rtf_spread"] == [0.1, 0.3]
    assert (s["timing_passes"], s["timing_utterances"]) == (3, 2)
    assert timing_summary(None) == {} and speed_rtf({"rtf": 0.5}) == 0.5 and speed_rtf({"rtf": 0.5, **s}) == 0.2
