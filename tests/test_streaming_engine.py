"""The streaming engine: exactness against the offline pass, batching, joins/leaves, isolation, admission,
shedding, endpointing, barge-in. A seeded random-weight causal model keeps these independent of training."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from speechbench.asr.ctc.decode import greedy_decode
from speechbench.asr.ctc.features import FeatureConfig, LogMel
from speechbench.asr.ctc.model import CTCModel, ModelConfig
from speechbench.asr.ctc.tokenizer import Tokenizer
from speechbench.streaming import (
    AdmissionError,
    BadChunkError,
    StreamingEngine,
    StreamingEngineConfig,
    UnknownStreamError,
)
from speechbench.streaming.endpoint import BlankEndpointer, EndpointDecision
from speechbench.streaming.metrics import Histogram
from speechbench.streaming.models.ctc import CTCStreamingModel

ROOT = Path(__file__).resolve().parents[1]
CFG = ModelConfig(name="t", conv_channels=(8, 8), proj=48, hidden=48, layers=2, bidirectional=False, causal=True)
FEAT = FeatureConfig()
SR = 16000


def ctc(model: CTCModel, feat: FeatureConfig = FEAT, tokenizer: Tokenizer | None = None) -> CTCStreamingModel:
    return CTCStreamingModel(model, feat, tokenizer)


@pytest.fixture(scope="module")
def model() -> CTCModel:
    torch.manual_seed(1)
    m = CTCModel(CFG).eval()
    m.set_feature_stats(torch.full((80,), -4.0), torch.full((80,), 3.0))
    with torch.no_grad():  # larger gains so the random model emits varied characters, not one symbol
        m.head.weight.mul_(30.0)
        m.proj.weight.mul_(4.0)
    return m


def audio(seed: int, seconds: float) -> np.ndarray:
    """100 ms segments of random level, tone and noise: enough variety for the random model's output."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n, np.float32)
    for k in range(0, n, 1600):
        m = min(1600, n - k)
        t = np.arange(m) / SR
        amp = 10 ** rng.uniform(-3, -0.5)
        out[k: k + m] = amp * (rng.standard_normal(m) * rng.random() + np.sin(2 * np.pi * rng.uniform(100, 3000) * t))
    return out


def offline(model: CTCModel, wave: np.ndarray, step: int = 640) -> tuple[torch.Tensor, str]:
    """Whole-utterance pass (log-probs, greedy text), with the zero padding the engine adds to the last
    model chunk (``step`` samples)."""
    padded = np.concatenate([wave, np.zeros((-len(wave)) % step, np.float32)])
    with torch.no_grad():
        feats, flen = LogMel(FEAT)(torch.from_numpy(padded)[None])
        lp, olen = model(feats, flen)
    return lp[0], Tokenizer().decode(greedy_decode(lp, olen)[0])


def offline_text(model: CTCModel, wave: np.ndarray) -> str:
    return offline(model, wave)[1]


def ecfg(**kw) -> StreamingEngineConfig:
    """Engine settings for tests: load-based admission off (a busy CI machine must not refuse streams),
    except where a test sets it."""
    kw.setdefault("max_duty", 2.0)
    kw.setdefault("overload_ms", 1e9)
    return StreamingEngineConfig(**kw)


def feed(eng: StreamingEngine, sid: str, wave: np.ndarray, chunk: int, pause: float = 0.0) -> None:
    for k in range(0, len(wave), chunk):
        eng.process_chunk(sid, wave[k: k + chunk])
        if pause:
            time.sleep(pause)
        while eng.backlog_samples() > 3000:
            time.sleep(0.002)


def test_batched_step_equals_per_stream_steps(model):
    torch.manual_seed(3)
    feats = torch.randn(5, 8, 80)
    with torch.no_grad():
        pool = model.init_state(5)
        for _ in range(3):  # give the states some history first
            _, pool = model.forward_chunk(torch.randn(5, 8, 80), pool)
        batched, new = model.forward_chunk(feats, pool)
        for i in range(5):
            one, st = model.forward_chunk(feats[i: i + 1], pool.select([i]))
            torch.testing.assert_close(batched[i: i + 1], one, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(new.select([i]).h, st.h, atol=1e-5, rtol=1e-5)
        # gather a subset, step, scatter back: the others are untouched
        idx = [3, 1]
        before = pool.select([0, 2, 4]).h.clone()
        _, sub = model.forward_chunk(feats[idx], pool.select(idx))
        pool.scatter_(idx, sub)
        torch.testing.assert_close(pool.select([0, 2, 4]).h, before)
        torch.testing.assert_close(pool.select(idx).h, sub.h)


@pytest.mark.parametrize("chunk_ms,model_chunk_ms", [(20, 20), (20, 40), (30, 80), (40, 40)])
def test_engine_equals_offline_with_streams_joining_and_leaving(model, chunk_ms, model_chunk_ms):
    """Three streams of different lengths, started at different times, batched together: each stream's
    transcript equals the offline whole-utterance pass exactly (state carried across chunks and steps)."""
    waves = [audio(1, 1.9), audio(2, 0.7), audio(3, 1.3)]
    ref = [offline(model, w, model_chunk_ms * SR // 1000) for w in waves]
    expected = [r[1] for r in ref]
    assert len(set(expected)) == 3 and sum(map(len, expected)) >= 8  # the random model emits text
    sizes = []
    eng = StreamingEngine(ctc(model), ecfg(model_chunk_ms=model_chunk_ms, endpoint="none", max_wait_ms=30))
    tapped: dict[str, list[torch.Tensor]] = {s: [] for s in "abc"}

    def tap(slots: np.ndarray, lp: torch.Tensor) -> None:
        owner = {s.slot: s.id for s in list(eng._streams.values())}
        for i, slot in enumerate(slots.tolist()):
            tapped[owner[slot]].append(lp[i].clone())

    eng.model.tap = tap
    chunk = chunk_ms * SR // 1000
    try:
        futs = {}
        eng.add_stream("a")
        pos = {"a": 0}
        t = 0
        while pos or not futs:
            if t == 10:
                eng.add_stream("b")
                pos["b"] = 0
            if t == 20:
                eng.add_stream("c")
                pos["c"] = 0
            for sid in list(pos):
                w = waves["abc".index(sid)]
                eng.process_chunk(sid, w[pos[sid]: pos[sid] + chunk])
                pos[sid] += chunk
                if pos[sid] >= len(w):
                    futs[sid] = eng.finalize_stream(sid)
                    del pos[sid]
            t += 1
            time.sleep(0.003)
            while eng.backlog_samples() > 3000:  # back-pressure: a slow (busy) machine must not shed here
                time.sleep(0.002)
            if t > 20 and not pos:
                break
        got = [futs[s].result(timeout=30) for s in "abc"]
        stats = eng.stats()
        sizes = stats["batch_size_hist"]
        assert stats["shed_chunks"] == 0
    finally:
        eng.stop()
    assert got == expected
    assert max(sizes) >= 2  # streams really shared steps
    for sid, (lp, _) in zip("abc", ref, strict=True):
        torch.testing.assert_close(torch.cat(tapped[sid]), lp, atol=1e-4, rtol=1e-4)


def test_batch_size_does_not_change_transcripts(model):
    waves = [audio(10 + i, 1.0) for i in range(4)]
    outs = []
    for max_batch in (1, 4):
        eng = StreamingEngine(ctc(model), ecfg(max_batch=max_batch, endpoint="none", max_wait_ms=20))
        try:
            for i in range(4):
                eng.add_stream(f"s{i}")
            for k in range(0, SR, 640):
                for i, w in enumerate(waves):
                    eng.process_chunk(f"s{i}", w[k: k + 640])
                while eng.backlog_samples() > 3000:
                    time.sleep(0.002)
            outs.append([eng.finalize_stream(f"s{i}").result(timeout=30) for i in range(4)])
            assert eng.stats()["shed_chunks"] == 0
        finally:
            eng.stop()
    assert outs[0] == outs[1] == [offline_text(model, w) for w in waves]


def test_misbehaving_stream_is_isolated(model):
    events = []
    eng = StreamingEngine(ctc(model), ecfg(endpoint="none", max_chunk_ms=200), on_event=events.append)
    good = audio(5, 1.0)
    try:
        eng.add_stream("good")
        bad_inputs = {
            "nan": (np.array([0.0, np.nan] * 160, np.float32), None),
            "int16": (np.zeros(320, np.int16), None),
            "float64": (np.zeros(320, np.float64), None),
            "stereo": (np.zeros((2, 320), np.float32), None),
            "rate": (np.zeros(320, np.float32), 8000),
            "oversize": (np.zeros(SR, np.float32), None),
            "list": ([0.0] * 320, None),
        }
        piece = len(good) // 8
        for k, (name, (chunk, sr)) in enumerate(bad_inputs.items()):
            eng.add_stream(name)
            eng.process_chunk(name, np.zeros(320, np.float32))
            with pytest.raises(BadChunkError):
                eng.process_chunk(name, chunk, sample_rate=sr)
            with pytest.raises(UnknownStreamError):  # failed and closed: no more audio
                eng.process_chunk(name, np.zeros(320, np.float32))
            feed(eng, "good", good[k * piece: (k + 1) * piece], 640)
        with pytest.raises(UnknownStreamError):
            eng.process_chunk("never-added", np.zeros(320, np.float32))
        feed(eng, "good", good[piece * len(bad_inputs):], 640)
        text = eng.finalize_stream("good").result(timeout=30)
        stats = eng.stats()
    finally:
        eng.stop()
    assert text == offline_text(model, good)
    errors = {e.stream_id: e.reason for e in events if e.kind == "error"}
    assert set(errors) == set(bad_inputs)
    assert "NaN" in errors["nan"] and "int16" in errors["int16"] and "8000 Hz" in errors["rate"]
    assert "oversize" in errors["oversize"] and "1-D" in errors["stereo"]
    assert stats["failed_streams"] == len(bad_inputs) and stats["alive"]


def test_admission_control(model):
    eng = StreamingEngine(ctc(model), ecfg(max_streams=2, endpoint="none"))
    try:
        eng.add_stream("a")
        eng.add_stream("b")
        with pytest.raises(AdmissionError) as e:
            eng.add_stream("c")
        assert e.value.kind == "capacity" and "capacity" in str(e.value)
        with pytest.raises(AdmissionError) as e:
            eng.add_stream("a")
        assert e.value.kind == "duplicate"
        eng.finalize_stream("a").result(timeout=10)
        eng.add_stream("c")  # the freed slot is reused
        with pytest.raises(AdmissionError) as e:
            eng.add_stream("d", sample_rate=44100)
        assert e.value.kind == "bad_request"  # the request is checked before capacity
        assert eng.stats()["refused_streams"] == 3
    finally:
        eng.stop()
    with pytest.raises(AdmissionError) as e:
        eng.add_stream("late")
    assert e.value.kind == "stopped"


def test_shedding_and_overload_refusal(model):
    eng = StreamingEngine(ctc(model), ecfg(max_queue_ms=600, max_chunk_ms=200, overload_ms=100,
                                                   max_duty=1.01, endpoint="none"), start=False)
    eng.add_stream("a")
    old = time.perf_counter() - 1.0
    for _ in range(25):  # 25 x 40 ms into a 600 ms queue that nobody drains yet
        eng.process_chunk("a", np.zeros(640, np.float32), arrival_time=old)
    s = eng.stats()
    assert s["shed_chunks"] == 10 and s["chunks_in"] == 25
    with pytest.raises(AdmissionError) as e:  # the oldest queued audio waited 1 s > overload_ms
        eng.add_stream("b")
    assert e.value.kind == "overloaded" and "overloaded" in str(e.value)
    eng.start()
    try:
        deadline = time.time() + 20
        while eng.backlog_samples() and time.time() < deadline:
            time.sleep(0.01)
        eng.add_stream("b")  # drained: admitted again
        eng.cfg.max_duty = 0.9
        time.sleep(0.05)
        with eng._cond:  # a scheduler that was busy 95% of the last second refuses newcomers
            eng._busy.append((time.perf_counter(), 0.95))
        with pytest.raises(AdmissionError) as e:
            eng.add_stream("c")
        assert e.value.kind == "overloaded" and "busy" in str(e.value)
        eng.process_chunk("a", np.zeros(640, np.float32))
        eng.finalize_stream("a").result(timeout=10)
        s = eng.stats()
        assert s["chunks_processed"] == 16 and s["dropped_chunks"] == 0 and s["alive"]
        assert s["chunk_latency_ms"]["max"] >= 1000  # latency counts from arrival, not from enqueueing
    finally:
        eng.stop()


class ScriptedEndpointer:
    """Fires an endpoint on chosen steps of a stream (engine logic under test, not the model's blanks)."""

    name = "scripted"

    def __init__(self, fire_at: set[int]) -> None:
        self.fire_at = fire_at
        self.n = 0

    def reset(self, slots) -> None:
        pass

    def step(self, slots, ids, audio) -> EndpointDecision:
        self.n += 1
        fire = self.n in self.fire_at
        b = len(slots)
        return EndpointDecision(np.full(b, fire), np.full(b, True), np.zeros(b))


def test_endpoint_emits_final_and_stream_continues(model):
    events = []
    eng = StreamingEngine(ctc(model), ecfg(endpoint="none"), on_event=events.append)
    eng.endpointer = ScriptedEndpointer({10, 20})
    wave = audio(7, 1.2)  # 30 steps of 40 ms
    try:
        eng.add_stream("a")
        feed(eng, "a", wave, 640, pause=0.002)
        last = eng.finalize_stream("a").result(timeout=10)
    finally:
        eng.stop()
    finals = [e for e in events if e.kind == "final"]
    assert [f.reason for f in finals] == ["endpoint", "endpoint", "finalize"]
    assert [f.segment for f in finals] == [0, 1, 2] and finals[-1].text == last
    assert [f.audio_end for f in finals] == [6400, 12800, len(wave)]
    # after each final the partials start over (new segment, state reset)
    seg1 = [e for e in events if e.kind == "partial" and e.segment == 1]
    assert seg1 and all(e.audio_end > 6400 for e in seg1)
    # the model state was reset at the endpoint: segment 2 equals an offline pass over its audio alone (the
    # feature front end keeps its 240-sample window overlap: real audio, not zeros, precedes the segment)
    with torch.no_grad():
        feats = LogMel(FEAT).frames(torch.from_numpy(wave[6400 - 240: 12800])[None])
        lp, olen = model(feats, torch.tensor([feats.shape[1]]))
    assert finals[1].text == Tokenizer().decode(greedy_decode(lp, olen)[0])


def test_blank_endpointer_counts_trailing_blanks():
    ep = BlankEndpointer(4, frame_ms=40, silence_ms=120)
    slots = np.array([0, 2])
    d = ep.step(slots, torch.tensor([[0, 0], [0, 5]]))
    assert d.speech.tolist() == [False, True] and not d.endpoint.any()
    d = ep.step(slots, torch.tensor([[0, 0], [0, 0]]))
    assert d.trailing_ms.tolist() == [160, 80] and not d.endpoint.any()  # no speech yet in slot 0
    d = ep.step(slots, torch.tensor([[0, 0], [0, 0]]))
    assert d.endpoint.tolist() == [False, True]
    ep.reset([2])
    assert not ep.speech[2] and ep.trailing[2] == 0


def test_barge_in_reset_and_idle_timeout(model):
    events = []
    eng = StreamingEngine(ctc(model), ecfg(endpoint="none", idle_timeout_s=0.3), on_event=events.append)
    w1, w2 = audio(8, 0.6), audio(9, 0.8)
    try:
        eng.add_stream("a")
        feed(eng, "a", w1, 640)
        deadline = time.time() + 10
        while eng.backlog_samples() and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        assert eng.partial("a")
        eng.reset_stream("a")  # barge-in: the utterance in progress is dropped
        assert eng.partial("a") == ""
        feed(eng, "a", w2, 640)
        done = threading.Event()
        deadline = time.time() + 10
        while not any(e.kind == "closed" for e in events) and time.time() < deadline:
            done.wait(0.05)  # no more audio: the idle timeout finalizes and closes the stream
        stats = eng.stats()
    finally:
        eng.stop()
    kinds = [e.kind for e in events if e.kind != "partial"]
    assert kinds == ["reset", "final", "closed"]
    final = next(e for e in events if e.kind == "final")
    assert final.reason == "idle_timeout" and final.segment == 1
    # a barge-in reset is a hard reset (model state, decoder, feature overlap): the new utterance decodes
    # exactly as if the stream had just started
    assert final.text == offline_text(model, w2)
    assert stats["idle_timeouts"] == 1


def test_histogram_percentiles():
    h = Histogram(limit=100, resolution=0.5)
    vals = np.arange(1, 101, dtype=float)
    h.add_many(vals[:50])
    for v in vals[50:]:
        h.add(v)
    assert h.n == 100 and h.max == 100
    assert abs(h.percentile(50) - 50) <= 0.5 and abs(h.percentile(95) - 95) <= 0.5
    h.add(1e6)  # overflow bin: the percentile is capped at the exact max
    assert h.percentile(100) == 1e6


@pytest.mark.skipif(not (ROOT / "models" / "ctc-streaming.pt").exists(),
                    reason="models/ctc-streaming.pt not trained yet (uv run train_asr.py --model streaming)")
def test_real_checkpoint_endpoints_between_utterances():
    """The trained model on real speech: two utterances with a silence between give two endpoint finals."""
    from speechbench.asr.ctc.checkpoint import load_checkpoint
    from speechbench.speech.audio import load_audio
    from speechbench.speech.corpus import build_corpus, preset
    from speechbench.speech.manifest import read_manifest

    m, fc, payload = load_checkpoint(ROOT / "models" / "ctc-streaming.pt")
    man = read_manifest(build_corpus(preset("quick"), progress=False).manifest)
    utts = [u for u in man.utterances if u.condition == "clean" and u.dialect == "en-us"][:2]
    waves = [load_audio(u.audio_path) for u in utts]
    silence = np.zeros(SR, np.float32) + 1e-3 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    stream = np.concatenate([waves[0], silence, waves[1], silence]).astype(np.float32)
    events = []
    eng = StreamingEngine(ctc(m, fc, Tokenizer(payload["chars"])), ecfg(), on_event=events.append)
    try:
        eng.add_stream("a")
        feed(eng, "a", stream, 320)
        eng.finalize_stream("a").result(timeout=30)
    finally:
        eng.stop()
    finals = [e for e in events if e.kind == "final" and e.text]
    assert sum(f.reason == "endpoint" for f in finals) >= 2
    assert finals[0].last_token_sample <= len(waves[0]) + SR


def test_vad_endpointer_on_speech_and_silence(model):
    """silero-vad batched across streams, on real speech: windows are cut from any chunk size, state is per
    slot (a silent stream beside a speaking one never reports speech), and an endpoint fires only once the
    speech is over and the trailing silence has lasted the configured time."""
    from speechbench.speech.audio import resample
    from speechbench.speech.espeak import EspeakVoice, synthesize_espeak
    from speechbench.streaming.endpoint import VadEndpointer

    speech, sr = synthesize_espeak("the quick brown fox jumps over the lazy dog", EspeakVoice("en-us"))
    speech = resample(speech, sr, SR)
    rng = np.random.default_rng(0)
    lead, tail = int(0.5 * SR), int(0.8 * SR)
    talker = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    talker += (1e-4 * rng.standard_normal(talker.size)).astype(np.float32)
    quiet = (1e-4 * rng.standard_normal(talker.size)).astype(np.float32)
    ep = VadEndpointer(4, silence_ms=200)
    slots = np.array([1, 3])  # slot 1 talks, slot 3 stays silent
    chunk = 640  # not a multiple of the VAD's 512-sample window
    first_speech = first_endpoint = None
    for k in range(0, talker.size - chunk + 1, chunk):
        d = ep.step(slots, None, np.stack([talker[k: k + chunk], quiet[k: k + chunk]]))
        end_s = (k + chunk) / SR
        assert not d.speech[1] and not d.endpoint[1], f"the silent stream reported speech at {end_s:.2f} s"
        if d.speech[0] and first_speech is None:
            first_speech = end_s
        if d.endpoint[0] and first_endpoint is None:
            first_endpoint = end_s
    speech_end = (lead + speech.size) / SR
    assert first_speech is not None and 0.5 <= first_speech < 1.0, first_speech
    # Not before 200 ms of silence (less 0.3 s: espeak's last samples are near-silent anyway), so a pause
    # between words must not end the utterance; measured here: 0.29 s after the clip ends.
    assert first_endpoint is not None and speech_end - 0.1 <= first_endpoint <= speech_end + 0.6, (
        first_endpoint, speech_end)
    assert ep.nres[1] < VadEndpointer.WINDOW  # every full window of the silent stream was consumed
    eng = StreamingEngine(ctc(model), ecfg(endpoint="vad"))
    try:
        eng.add_stream("a")
        feed(eng, "a", audio(4, 0.5), 320)
        eng.finalize_stream("a").result(timeout=20)
        assert eng.stats()["alive"]
    finally:
        eng.stop()


def test_vad_endpointer_leaves_torch_threads_alone():
    """silero-vad's package sets torch's thread count to 1 when imported; the endpointer only reads its ONNX
    file, so a process's torch threads stay what it set (checked in a fresh interpreter: this one may have
    imported the package already)."""
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(2)\n"
            "from speechbench.streaming.endpoint import VadEndpointer\n"
            "VadEndpointer(4)\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "2"


def test_engine_holds_gil_switch_interval_while_running(model):
    """The scheduler must win the GIL back quickly from feeding threads: a running engine shortens the
    interpreter's switch interval, and the last engine to stop restores the caller's."""
    import sys

    before = sys.getswitchinterval()
    a = StreamingEngine(ctc(model), ecfg(gil_switch_ms=0.5))
    b = StreamingEngine(ctc(model), ecfg(gil_switch_ms=0.5))
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        a.stop()
        assert sys.getswitchinterval() == pytest.approx(0.0005)  # b still runs
    finally:
        a.stop()
        b.stop()
    assert sys.getswitchinterval() == pytest.approx(before)
    with StreamingEngine(ctc(model), ecfg(gil_switch_ms=0)):
        assert sys.getswitchinterval() == pytest.approx(before)  # 0: left alone
    with pytest.raises(ValueError, match="gil_switch_ms"):
        ecfg(gil_switch_ms=-1).validate()


def test_engine_freezes_gc_heap_while_running(model):
    """A full garbage collection must not walk the startup heap mid-load: a running engine freezes the
    objects that exist when it starts, and the last engine to stop unfreezes them."""
    import gc

    before = gc.get_freeze_count()
    assert before == 0  # nothing else in the test process freezes
    a = StreamingEngine(ctc(model), ecfg())
    b = StreamingEngine(ctc(model), ecfg())
    try:
        assert gc.get_freeze_count() > 0
        a.stop()
        assert gc.get_freeze_count() > 0  # b still runs
    finally:
        a.stop()
        b.stop()
    assert gc.get_freeze_count() == 0
    with StreamingEngine(ctc(model), ecfg(gc_freeze=False)):
        assert gc.get_freeze_count() == 0


def test_staggered_streams_step_together_as_soon_as_all_are_ready(model):
    """Live streams whose chunks arrive one after another ride in one step, which starts when the last of
    them is ready, not at the max_wait deadline: the chunk that completes the batch wakes the scheduler
    (which is not woken by every chunk)."""
    n, chunk, periods = 6, 640, 25
    wave = audio(5, periods * 0.04)
    with StreamingEngine(ctc(model), ecfg(endpoint="none", max_wait_ms=3000)) as eng:
        for k in range(n):
            eng.add_stream(f"s{k}")
        t0 = time.perf_counter()
        for p in range(periods):  # real-time pacing, the streams 4 ms apart within each 40 ms
            for k in range(n):
                eng.process_chunk(f"s{k}", wave[p * chunk: (p + 1) * chunk])
                time.sleep(0.004)
            time.sleep(max(0.0, t0 + 0.04 * (p + 1) - time.perf_counter()))
        for k in range(n):
            eng.finalize_stream(f"s{k}").result(timeout=10)
        st = eng.stats()
    assert st["chunk_latency_ms"]["p95"] < 250, st["chunk_latency_ms"]  # a missed wake-up waits for the 3 s deadline
    assert st["batch_size_mean"] > n / 2


def test_shed_audio_is_reported_to_its_stream_and_marks_the_final(model):
    events = []
    eng = StreamingEngine(ctc(model), ecfg(max_queue_ms=600, max_chunk_ms=200, endpoint="none"),
                          on_event=events.append, start=False)
    eng.add_stream("a")
    eng.add_stream("b")
    for _ in range(20):  # 20 x 40 ms into a 600 ms queue: 5 shed
        eng.process_chunk("a", np.zeros(640, np.float32))
    eng.process_chunk("b", np.zeros(640, np.float32))
    dropped = [e for e in events if e.kind == "dropped"]
    assert len(dropped) == 5 and {e.stream_id for e in dropped} == {"a"}
    assert dropped[-1].shed == 5 and "dropped" in dropped[-1].reason and "incomplete" in dropped[-1].reason
    eng.start()
    try:
        eng.finalize_stream("a").result(timeout=10)
        eng.finalize_stream("b").result(timeout=10)
    finally:
        eng.stop()
    finals = {e.stream_id: e for e in events if e.kind == "final"}
    assert finals["a"].segment_shed == 5 and finals["b"].segment_shed == 0


class DrainingModel:
    """A re-decoding model's contract for the engine: records how much audio each step brought."""

    name, batching, sample_rate, default_chunk_ms, frame_ms = "drain", "batched", SR, 200, None
    needs_final_step, drains_queue, uses_trailing_silence, min_join_ms = True, True, False, None
    default_max_wait_ms = default_max_batch = max_segment_s = None
    chunk_ms = 200

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def allocate(self, capacity, chunk_ms):
        self.chunk_ms = chunk_ms

    def reset(self, slots, new_stream):
        pass

    def warmup(self, batch_sizes=(1, 8)):
        pass

    def step(self, slots, audio, final, speech=None, lengths=None):
        from speechbench.streaming.models.base import StepOutput

        time.sleep(0.3)  # slower than the audio arrives: the queue grows between steps
        self.lengths += [int(n) for n in lengths]
        return StepOutput(["x"] * len(slots), np.ones(len(slots), bool))

    def text(self, slot):
        return "x"


def test_a_draining_model_takes_all_queued_audio_so_nothing_is_shed():
    m = DrainingModel()
    eng = StreamingEngine(m, ecfg(model_chunk_ms=200, max_queue_ms=1000, max_chunk_ms=200, endpoint="none"))
    try:
        eng.add_stream("a")
        for _ in range(30):  # 1.2 s of audio in 40 ms chunks, faster than the 0.3 s steps consume 0.2 s each
            eng.process_chunk("a", np.zeros(640, np.float32))
            time.sleep(0.02)
        eng.finalize_stream("a").result(timeout=10)
        s = eng.stats()
    finally:
        eng.stop()
    assert s["shed_chunks"] == 0
    assert sum(m.lengths) == 30 * 640 and max(m.lengths) > 3200  # some steps took more than one model chunk
