"""Streaming synthesis: the chunks, joined, are the one-shot vocoder's audio; every frame is sent once, in
order; TTFA, underruns and the knee are computed as defined. Small seeded models; no timing assertions."""

from __future__ import annotations

import pytest
import torch

from speechbench.tts.engine import Request, TTSEngine, TTSEngineConfig
from speechbench.tts.length import LengthPolicy
from speechbench.tts.model import TTSModelConfig, build_tts_model
from speechbench.tts.scheduler import BusyClock, ContinuousSchedule, StaticSchedule, make_arrivals, run_interleaved
from speechbench.tts.sections.ttfa import knee
from speechbench.tts.streaming import AudioStreamer, StreamingConfig, StreamRecord, stream_summary, vocode_window

SMALL = TTSModelConfig(hidden_dim=64, num_layers=2, num_heads=4, ff_dim=128)
TEXTS = ["Hi.", "Hello world!", "The quick brown fox jumps over the lazy dog.", "Good morning, how are you?"]


@pytest.fixture(scope="module")
def engine_factory():
    torch.manual_seed(0)
    model = build_tts_model(seed=0, config=SMALL).eval()

    def make(slots: int = 4) -> TTSEngine:
        return TTSEngine(model, TTSEngineConfig(num_slots=slots), LengthPolicy(max_frames=40))
    return make


def _chunked(engine: TTSEngine, mel: torch.Tensor, chunk: int, context: int) -> torch.Tensor:
    return torch.cat([vocode_window(engine, mel, a, min(a + chunk, mel.size(0)), context)
                      for a in range(0, mel.size(0), chunk)])


@torch.inference_mode()
def test_joined_chunks_equal_the_one_shot_vocoder(engine_factory):
    eng = engine_factory()
    mel = torch.randn(57, SMALL.mel_dim, generator=torch.Generator().manual_seed(1))
    one_shot = eng.model.vocoder_inference(mel.unsqueeze(0))[0]
    for chunk in (1, 4, 8, 13, 57):
        joined = _chunked(eng, mel, chunk, StreamingConfig().context_frames)
        assert joined.shape == one_shot.shape
        assert (joined - one_shot).abs().max() < 1e-5, chunk  # fp32: summation order only
    # without context the chunk edges are wrong: the test can fail
    assert (_chunked(eng, mel, 8, 0) - one_shot).abs().max() > 1e-3


@torch.inference_mode()
@pytest.mark.parametrize("kind", ["continuous", "static"])
def test_streamed_requests_carry_every_frame_once_and_the_same_audio(engine_factory, kind):
    reqs = [Request(t, i, a) for i, (t, a) in enumerate(zip(TEXTS * 2, make_arrivals(8, "poisson", 50.0, 0),
                                                              strict=True))]
    eng = engine_factory(slots=3)
    streamer = AudioStreamer(eng, StreamingConfig(chunk_frames=5))
    sched = (ContinuousSchedule(eng, reqs, clock=BusyClock(), streamer=streamer) if kind == "continuous"
             else StaticSchedule(eng, reqs, 3, clock=BusyClock(), streamer=streamer))
    done = run_interleaved([sched])[0].completed
    assert sorted(c.request_id for c in done) == list(range(8))
    for c in done:
        rec = streamer.streams[c.request_id]
        spans = [(a, b) for a, b, _ in rec.chunks]
        assert spans[0][0] == 0 and spans[-1][1] == c.frames
        assert all(b1 == a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))  # contiguous, once
        assert all(b - a <= 5 for a, b in spans)
        sent = [t for _, _, t in rec.chunks]
        assert sent == sorted(sent) and c.arrival_s <= sent[0] <= c.finished_s
        ref = eng.model.vocoder_inference(c.mel.unsqueeze(0))[0]
        assert (c.audio - ref).abs().max() < 1e-5
        assert c.meta["ttfa_s"] == pytest.approx(sent[0] - c.arrival_s)
    summ = stream_summary(streamer, 86.13)
    assert summ["requests"] == 8 and 0 <= summ["underrun_share"] <= 1
    assert summ["ttfa_ms_p50"] <= summ["ttfa_ms_p95"] <= summ["ttfa_ms_max"]


def test_underrun_is_lateness_against_playback_from_the_first_chunk():
    fps = 10.0  # 10 frames per second of audio: a 5-frame chunk plays for 0.5 s
    on_time = StreamRecord(0, 0.0, [(0, 5, 1.0), (5, 10, 1.4), (10, 15, 1.9)])
    assert on_time.ttfa_s() == 1.0 and on_time.underrun_s(fps) == 0.0
    late = StreamRecord(1, 0.5, [(0, 5, 1.0), (5, 10, 1.7), (10, 15, 2.0)])  # needed by 1.5, sent at 1.7
    assert late.ttfa_s() == 0.5 and late.underrun_s(fps) == pytest.approx(0.2)


def test_knee_is_where_ttfa_p95_crosses_the_target_for_good():
    levels = [{"rate_per_s": r, "c": {"ttfa_ms_p95": p}} for r, p in ((1, 50), (2, 120), (3, 260), (4, 900))]
    assert knee(levels, "c", 200) == {"first_rate_over_target": 3, "last_rate_within_target": 2,
                                      "lower_rates_over_target": []}
    assert knee(levels, "c", 1000)["first_rate_over_target"] is None
    assert knee(levels, "c", 10) == {"first_rate_over_target": 1, "last_rate_within_target": None,
                                     "lower_rates_over_target": []}
    # a noisy low-load p95 over the target below a rate within it is listed, not taken as the knee
    levels[0]["c"]["ttfa_ms_p95"] = 249
    assert knee(levels, "c", 200) == {"first_rate_over_target": 3, "last_rate_within_target": 2,
                                      "lower_rates_over_target": [1]}
