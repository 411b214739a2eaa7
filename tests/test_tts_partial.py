"""A run that dies inside the baseline keeps what it measured: its texts and the headline's optimized runs."""

from __future__ import annotations

import json

from speechbench.tts.baseline import NaiveTTSInference
from speechbench.tts.benchmark import TTSBenchConfig, TTSBenchmark


def test_baseline_failure_keeps_measured_texts_and_headline_runs(tmp_path, monkeypatch):
    out = tmp_path / "tts.json"
    bm = TTSBenchmark(TTSBenchConfig.quick_preset(max_frames=6, headline_repeats=4), out, progress=False)
    headline_id = bm.texts.index(bm.latency_text())
    rounds = bm.cfg.headline_baseline_repeats
    crash_at = 1 + headline_id + rounds  # the warm-up, the texts before the headline, its runs; the next fails
    assert headline_id < len(bm.texts) - 1, "the quick texts must have one after the headline"
    real = NaiveTTSInference.synthesize
    calls = {"n": 0}

    def flaky(self, text):
        calls["n"] += 1
        if calls["n"] > crash_at:
            raise RuntimeError("simulated crash")
        return real(self, text)

    monkeypatch.setattr(NaiveTTSInference, "synthesize", flaky)
    assert bm.section("baseline", bm.measure_baseline) is None
    saved = json.loads(out.read_text())
    assert saved["failures"][0]["section"] == "baseline" and "simulated crash" in saved["failures"][0]["error"]
    base = saved["baseline"]
    assert base["partial"] and len(base["per_text"]) == headline_id + 1
    head = base["headline_optimized"]
    assert head["text_id"] == headline_id and len(head["latency_s"]) == 4
    assert head["group"] == list(range(rounds + 1)) and len(base["per_text"][headline_id]["latency_s"]) == rounds
