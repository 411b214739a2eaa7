"""The optimized TTS engine must reproduce the causal reference on the same weights.

A small config (hidden 64, 2+2 layers) keeps the naive reference loop fast; the same code runs the full
seed-size model in the benchmark's fidelity section.
"""

from __future__ import annotations

import pytest
import torch

from speechbench.tts.baseline import NaiveTTSInference
from speechbench.tts.engine import Request, TTSEngine, TTSEngineConfig, attention_spans
from speechbench.tts.fidelity import compare_mels
from speechbench.tts.length import LengthPolicy
from speechbench.tts.model import CharTokenizer, TextError, TTSModelConfig, build_tts_model
from speechbench.tts.scheduler import (
    BucketedStaticSchedule,
    BusyClock,
    ContinuousSchedule,
    StaticSchedule,
    decode_steps,
    make_arrivals,
    run_bucketed,
    run_continuous,
    run_interleaved,
    run_sequential,
    run_static,
)

SMALL = TTSModelConfig(hidden_dim=64, num_layers=2, num_heads=4, ff_dim=128)
TEXTS = ["Hi.", "Hello world!", "The quick brown fox jumps over the lazy dog.", "Good morning, how are you?"]


@pytest.fixture(autouse=True)
def no_grad():
    """Inference only; a scoped no_grad, so grad mode does not leak into later test modules (a global
    torch.set_grad_enabled(False) here once broke the CTC training tests when they ran after this file)."""
    with torch.no_grad():
        yield


def small_model(seed: int = 0):
    return build_tts_model(seed, config=SMALL)


def reference_mel(model, policy, text):
    return NaiveTTSInference(model, policy, causal=True).synthesize(text).mel


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_frames", [1, 7, 60])
def test_kv_cache_equals_causal_reference_fp32(seed, max_frames):
    model = small_model(seed)
    policy = LengthPolicy(max_frames=max_frames)
    eng = TTSEngine(model, TTSEngineConfig(num_slots=1), policy)
    for text in TEXTS[:3]:
        ref = reference_mel(model, policy, text)
        got = eng.synthesize(text).mel
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() <= 1e-4


def test_kv_cache_equals_reference_on_full_size_model():
    """The seed-size model (512 hidden, 6+6 layers), a short rollout: same bar."""
    model = build_tts_model(3)
    policy = LengthPolicy(max_frames=12)
    ref = reference_mel(model, policy, "Full size.")
    got = TTSEngine(model, TTSEngineConfig(), policy).synthesize("Full size.").mel
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-4


def test_seed_noncausal_loop_differs_from_reference():
    """The seed's missing mask is a real semantic difference (why the reference is causal)."""
    model = small_model(0)
    policy = LengthPolicy(max_frames=20)
    seed = NaiveTTSInference(model, policy, causal=False).synthesize("Hello world!").mel
    ref = reference_mel(model, policy, "Hello world!")
    assert (seed - ref).abs().max().item() > 1e-3
    assert torch.equal(seed[0], ref[0])  # first frame: one position, nothing to mask


def test_text_alone_equals_text_in_mixed_batch():
    model = small_model(1)
    policy = LengthPolicy(max_frames=50)
    eng = TTSEngine(model, TTSEngineConfig(num_slots=4), policy)
    alone = {t: eng.synthesize(t) for t in TEXTS}
    batch = eng.synthesize_batch(TEXTS)
    for t, c in zip(TEXTS, batch, strict=True):
        assert c.frames == alone[t].frames == policy.frames_for(len(t))
        assert (c.mel - alone[t].mel).abs().max().item() <= 1e-4


def test_continuous_batching_matches_sequential_and_admits_everyone():
    model = small_model(2)
    policy = LengthPolicy(max_frames=40)
    reqs = [Request(t, i) for i, t in enumerate(TEXTS * 3)]  # 12 requests through 3 slots
    seq = {c.request_id: c
           for c in run_sequential(TTSEngine(model, TTSEngineConfig(num_slots=1), policy), reqs).completed}
    eng = TTSEngine(model, TTSEngineConfig(num_slots=3), policy)
    res = run_continuous(eng, reqs)
    assert sorted(c.request_id for c in res.completed) == list(range(len(reqs)))
    assert eng.active == 0 and eng.free_slots == 3
    assert max(res.occupancy) == 3  # the pool was full while the queue had work
    assert res.slot_steps == sum(c.frames for c in res.completed)  # a finished slot costs nothing more
    for c in res.completed:
        assert c.frames == seq[c.request_id].frames
        assert (c.mel - seq[c.request_id].mel).abs().max().item() <= 1e-4


def test_static_batching_pads_work_but_keeps_each_output_length():
    model = small_model(0)
    policy = LengthPolicy(max_frames=40)
    reqs = [Request(t, i) for i, t in enumerate(TEXTS)]
    res = run_static(TTSEngine(model, TTSEngineConfig(num_slots=4), policy), reqs, batch_size=4)
    frames = {c.request_id: c.frames for c in res.completed}
    assert frames == {i: policy.frames_for(len(t)) for i, t in enumerate(TEXTS)}
    assert res.steps == max(frames.values())
    assert res.slot_steps == 4 * max(frames.values()) > sum(frames.values())


def test_decode_step_arithmetic_matches_the_schedulers():
    # By hand: lengths 5, 1, 1, 1 in 2 slots. Static: batches (5, 1) and (1, 1) -> 5 + 1 = 6 steps.
    # Continuous: the short slot is refilled twice while the long one runs -> 5 steps.
    assert decode_steps([5, 1, 1, 1], 2, "static") == 6
    assert decode_steps([5, 1, 1, 1], 2, "continuous") == 5
    with pytest.raises(ValueError):
        decode_steps([1], 2, "fifo")
    model = small_model(1)
    policy = LengthPolicy(max_frames=40)
    reqs = [Request(t, i) for i, t in enumerate(TEXTS * 2)]
    frames = [policy.frames_for(len(t)) for t in TEXTS * 2]
    eng = TTSEngine(model, TTSEngineConfig(num_slots=3), policy)
    assert run_static(eng, reqs, batch_size=3).steps == decode_steps(frames, 3, "static")
    assert run_continuous(eng, reqs).steps == decode_steps(frames, 3, "continuous")


def test_bucketed_static_batches_by_length_and_serves_what_sequential_does():
    """Length bucketing changes which requests share a batch, never a request's output: each mel equals
    the sequential engine's on the same weights (fp32), and all-at-once it takes the sorted-batch steps."""
    model = small_model(2)
    policy = LengthPolicy(max_frames=60)
    texts = TEXTS * 2 + ["Ok.", "A somewhat longer sentence here."]
    reqs = [Request(t, i) for i, t in enumerate(texts)]
    frames = [policy.frames_for(len(t)) for t in texts]
    seq = {c.request_id: c for c in run_sequential(TTSEngine(model, TTSEngineConfig(num_slots=1), policy),
                                                   reqs).completed}
    res = run_bucketed(TTSEngine(model, TTSEngineConfig(num_slots=3), policy), reqs, batch_size=3)
    assert res.steps == decode_steps(frames, 3, "bucketed") < decode_steps(frames, 3, "static")
    assert sorted(c.request_id for c in res.completed) == list(range(len(reqs)))
    for c in res.completed:
        assert c.frames == seq[c.request_id].frames
        assert (c.mel - seq[c.request_id].mel).abs().max().item() <= 1e-4
    # By hand: lengths 5, 1, 4, 1 in 2 slots. Bucketed: (5, 4) then (1, 1) -> 6 steps; FIFO: 5 + 4 = 9.
    assert decode_steps([5, 1, 4, 1], 2, "bucketed") == 6 and decode_steps([5, 1, 4, 1], 2, "static") == 9


def test_bucketed_batch_is_anchored_on_the_oldest_arrival():
    """Online, the oldest waiting request always goes in the next batch (no starvation), with the
    arrived requests nearest its length; requests that have not arrived are not taken."""
    eng = TTSEngine(small_model(), TTSEngineConfig(num_slots=2), LengthPolicy(max_frames=100))
    lens = {0: 50, 1: 5, 2: 48, 3: 6, 4: 49}
    reqs = [Request("x", i, arrival_s=[0.0, 0.1, 0.2, 0.3, 9.0][i], frames=f) for i, f in lens.items()]
    sched = BucketedStaticSchedule(eng, reqs, batch_size=2)
    assert [r.request_id for r in sched.next_batch(now=1.0)] == [0, 2]  # 4 (49) has not arrived yet
    assert [r.request_id for r in sched.next_batch(now=1.0)] == [1, 3]
    assert [r.request_id for r in sched.next_batch(now=9.0)] == [4]


def test_interleaved_schedulers_serve_the_same_as_alone():
    """Taking turns changes when each scheduler runs, not what it computes or how many steps it takes."""
    model = small_model(1)
    policy = LengthPolicy(max_frames=40)
    reqs = [Request(t, i) for i, t in enumerate(TEXTS * 2)]
    frames = [policy.frames_for(len(t)) for t in TEXTS * 2]
    alone = {c.request_id: c
             for c in run_continuous(TTSEngine(model, TTSEngineConfig(num_slots=3), policy), reqs).completed}
    stat, cont = run_interleaved([
        StaticSchedule(TTSEngine(model, TTSEngineConfig(num_slots=3), policy), reqs, 3, clock=BusyClock()),
        ContinuousSchedule(TTSEngine(model, TTSEngineConfig(num_slots=3), policy), reqs, clock=BusyClock())])
    assert (stat.steps, cont.steps) == (decode_steps(frames, 3, "static"), decode_steps(frames, 3, "continuous"))
    for res in (stat, cont):
        assert sorted(c.request_id for c in res.completed) == list(range(len(reqs)))
        assert 0 < res.wall_s and all(0 < c.finished_s <= res.wall_s + 1e-9 for c in res.completed)
        for c in res.completed:
            assert c.frames == alone[c.request_id].frames
            assert (c.mel - alone[c.request_id].mel).abs().max().item() <= 1e-4
    engine = TTSEngine(model, TTSEngineConfig(num_slots=3), policy)
    with pytest.raises(ValueError, match="one engine each"):
        run_interleaved([ContinuousSchedule(engine, reqs, clock=BusyClock()),
                         StaticSchedule(engine, reqs, 3, clock=BusyClock())])
    with pytest.raises(ValueError, match="BusyClock"):
        run_interleaved([ContinuousSchedule(engine, reqs)])


def test_busy_clock_skips_idle_gaps_but_keeps_arrival_order():
    """Arrivals 30 s apart finish in well under a second of real time; no request starts before it arrives
    and each one's latency is its own service time, not the gap."""
    import time

    eng = TTSEngine(small_model(), TTSEngineConfig(num_slots=2), LengthPolicy(max_frames=5))
    reqs = [Request("hello", i, 30.0 * i) for i in range(3)]
    t0 = time.perf_counter()
    (res,) = run_interleaved([ContinuousSchedule(eng, reqs, clock=BusyClock())])
    assert time.perf_counter() - t0 < 20
    assert res.wall_s >= 60.0
    for c in sorted(res.completed, key=lambda c: c.request_id):
        assert c.admitted_s >= c.arrival_s and 0 < c.latency_s < 10


def test_retire_refills_slot_immediately():
    """Iteration-level scheduling: a slot freed at step k holds a newcomer at step k+1."""
    model = small_model(0)
    eng = TTSEngine(model, TTSEngineConfig(num_slots=2), LengthPolicy(max_frames=50))
    eng.prefill([Request("a", 0, frames=2), Request("b", 1, frames=5)])
    eng.step()
    assert eng.retire() == []
    eng.step()
    done = eng.retire()
    assert [c.request_id for c in done] == [0] and done[0].frames == 2
    assert eng.active == 1 and eng.slots[0].request.request_id == 1  # compacted into slot 0
    eng.prefill([Request("c", 2, frames=1)])
    assert eng.active == 2
    eng.step()
    assert [c.request_id for c in eng.retire()] == [2]
    while eng.active:
        eng.step()
        done = eng.retire()
    assert done[0].request_id == 1 and done[0].frames == 5


def test_prefill_refuses_more_than_free_slots():
    eng = TTSEngine(small_model(), TTSEngineConfig(num_slots=1), LengthPolicy(max_frames=5))
    with pytest.raises(RuntimeError, match="free slots"):
        eng.prefill([Request("a", 0), Request("b", 1)])


def test_poisson_arrivals_are_seeded_and_respected():
    a = make_arrivals(5, "poisson", rate_per_s=50.0, seed=3)
    assert a == make_arrivals(5, "poisson", rate_per_s=50.0, seed=3)
    assert all(x < y for x, y in zip(a, a[1:], strict=False))
    eng = TTSEngine(small_model(), TTSEngineConfig(num_slots=2), LengthPolicy(max_frames=5))
    res = run_continuous(eng, [Request("hello", i, t) for i, t in enumerate(a)])
    for c in res.completed:
        assert c.admitted_s >= c.arrival_s - 1e-6 and c.finished_s > c.arrival_s
    with pytest.raises(ValueError):
        make_arrivals(3, "poisson", rate_per_s=0)


def test_int8_and_bf16_within_five_percent_of_reference():
    model = build_tts_model(0)
    policy = LengthPolicy(max_frames=15)
    ref = reference_mel(model, policy, "Reduced precision.")
    for prec in ("int8", "bf16"):
        got = TTSEngine(model, TTSEngineConfig(precision=prec), policy).synthesize("Reduced precision.").mel
        f = compare_mels(got, ref)
        assert f["frames_equal"]
        assert f["rel_l2"] <= 0.05, (prec, f)
        assert f["max_abs_diff"] > 0  # it really ran in reduced precision


def test_fp16_refused_on_cpu_and_bad_precision():
    with pytest.raises(ValueError, match="GPU"):
        TTSEngine(small_model(), TTSEngineConfig(precision="fp16"), device="cpu")
    with pytest.raises(ValueError, match="precision"):
        TTSEngineConfig(precision="int4")


def test_stop_head_is_honoured_when_asked():
    model = small_model(0)
    with torch.no_grad():  # make the stop head fire on every step
        model.stop_token.bias.fill_(50.0)
    honour = TTSEngine(model, TTSEngineConfig(), LengthPolicy(max_frames=30, honor_stop=True)).synthesize("hello")
    ignore = TTSEngine(model, TTSEngineConfig(), LengthPolicy(max_frames=30)).synthesize("hello")
    assert honour.frames == 1 and honour.stop_step == 0
    assert ignore.frames == LengthPolicy(max_frames=30).frames_for(5) and ignore.stop_step == 0
    ref = NaiveTTSInference(model, LengthPolicy(max_frames=30, honor_stop=True), causal=True).synthesize("hello")
    assert ref.frames == 1


# -- edge cases ---------------------------------------------------------------------------------------------


def test_empty_and_whitespace_text_are_clear_errors():
    eng = TTSEngine(small_model(), TTSEngineConfig(), LengthPolicy(max_frames=5))
    for bad in ("", "   ", "\n\t"):
        with pytest.raises(TextError, match="empty"):
            eng.synthesize(bad)
    assert eng.active == 0  # a refused request leaves no slot behind
    with pytest.raises(TextError):
        CharTokenizer()(None)  # type: ignore[arg-type]


def test_one_character_text():
    c = TTSEngine(small_model(), TTSEngineConfig(), LengthPolicy()).synthesize("a")
    assert c.frames == LengthPolicy().frames_for(1) >= 1
    assert c.audio.numel() == 8 * c.frames  # the toy vocoder upsamples 8x


def test_long_text_is_truncated_with_a_record(caplog):
    tok = CharTokenizer(max_tokens=50)
    with caplog.at_level("WARNING"):
        t = tok("x" * 120)
    assert len(t.ids) == 50 and t.truncated_from == 120
    assert "truncated" in caplog.text
    eng = TTSEngine(small_model(), TTSEngineConfig(), LengthPolicy(max_frames=5), tokenizer=tok)
    assert eng.synthesize("y" * 500).meta["truncated_from"] == 500


def test_non_ascii_policies():
    fold = CharTokenizer()("Café—x")
    assert fold.non_ascii == 2 and fold.ids[3] == ord("é") % 256 and fold.ids[4] == 0x2014 % 256
    assert CharTokenizer(non_ascii="ascii")("Café").text == "cafe"
    with pytest.raises(TextError, match="non-ASCII"):
        CharTokenizer(non_ascii="error")("Café")
    with pytest.raises(TextError):
        CharTokenizer(non_ascii="ascii")("東京")


def test_batch_mixing_one_and_max_frames():
    model = small_model(0)
    policy = LengthPolicy(max_frames=500)
    eng = TTSEngine(model, TTSEngineConfig(num_slots=2), policy)
    res = run_continuous(eng, [Request("a", 0, frames=1), Request("a long one", 1, frames=500)])
    frames = {c.request_id: c.frames for c in res.completed}
    assert frames == {0: 1, 1: 500}
    alone = TTSEngine(model, TTSEngineConfig(num_slots=1), policy)
    alone.prefill([Request("a long one", 0, frames=500)])
    while alone.active:
        alone.step()
        out = alone.retire()
    long_mel = next(c.mel for c in res.completed if c.request_id == 1)
    assert (long_mel - out[0].mel).abs().max().item() <= 1e-4


def test_length_policy_clamps():
    p = LengthPolicy(frames_per_char=6.0, min_frames=2, max_frames=100)
    assert p.frames_for(0) == 2 and p.frames_for(10) == 60 and p.frames_for(1000) == 100


def test_checkpoint_round_trip(tmp_path):
    m = small_model(5)
    path = tmp_path / "tts.pt"
    torch.save(m.state_dict(), path)
    m2 = build_tts_model(0, str(path), config=SMALL)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match"):
        build_tts_model(0, str(tmp_path / "bad.pt"), config=SMALL)


# -- static cache / compile paths (the GPU configuration, exercised on CPU) ------------------------------------


def test_static_shapes_equal_dynamic_shapes():
    """Attending over the whole preallocated cache under a mask must not change the output."""
    model = small_model(4)
    policy = LengthPolicy(max_frames=30)
    reqs = [Request(t, i) for i, t in enumerate(TEXTS)]
    dyn = run_continuous(TTSEngine(model, TTSEngineConfig(num_slots=2), policy), reqs).completed
    sta = run_continuous(TTSEngine(model, TTSEngineConfig(num_slots=2, static_shapes=True), policy), reqs).completed
    by_id = {c.request_id: c for c in dyn}
    for c in sta:
        assert c.frames == by_id[c.request_id].frames
        assert (c.mel - by_id[c.request_id].mel).abs().max().item() <= 1e-4


def test_compile_failure_falls_back_to_eager_and_says_so(monkeypatch):

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = small_model(0)
    policy = LengthPolicy(max_frames=10)
    eng = TTSEngine(model, TTSEngineConfig(static_shapes=True, compile=True), policy)
    assert any("falling back" in n or "running eager" in n for n in eng.notes)
    ref = reference_mel(model, policy, "fallback")
    assert (eng.synthesize("fallback").mel - ref).abs().max().item() <= 1e-4


def test_compiled_step_failing_at_first_run_falls_back(monkeypatch):
    monkeypatch.setattr(torch, "compile",
                        lambda fn, **kw: (lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))))
    eng = TTSEngine(small_model(0), TTSEngineConfig(static_shapes=True, compile=True), LengthPolicy(max_frames=5))
    eng.warmup_compiled()
    assert any("first run" in n for n in eng.notes)
    assert eng.synthesize("still works").frames == 5


def test_attention_spans_split_only_when_reads_drop_by_a_fifth():
    # One group pads every row to the longest prefix: 8 x 451 = 3608 keys. Split after the 4 long rows:
    # 4 x 451 + 4 x 11 = 1848, about half.
    assert attention_spans([450] * 4 + [10] * 4) == [(0, 4, 451, False), (4, 8, 11, False)]
    assert attention_spans([450] * 4 + [10] * 4, split=False) == [(0, 8, 451, True)]
    assert attention_spans([7, 7, 7]) == [(0, 3, 8, False)]  # same position: one unmasked group
    assert attention_spans([5]) == [(0, 1, 6, False)]
    # 3 x 101 + 1 x 91 = 394 against 4 x 101 = 404: not worth a second call
    assert attention_spans([100, 100, 100, 90]) == [(0, 4, 101, True)]
    # The best split point, wherever it falls, and a group's own mask when its positions differ.
    assert attention_spans([300, 290, 20, 10]) == [(0, 2, 301, True), (2, 4, 21, True)]


def test_split_attention_serves_the_same_and_keeps_admission_order(monkeypatch):
    """Continuous batching with split self-attention equals the unsplit engine and the sequential one, and
    retirement keeps the pool in admission order (positions falling along the rows)."""
    import speechbench.tts.engine as engine_mod

    model = small_model(3)
    policy = LengthPolicy(max_frames=40)
    lengths = [40, 3, 25, 2, 40, 5, 12, 1, 33, 4]
    reqs = [Request(TEXTS[i % len(TEXTS)], i, frames=f) for i, f in enumerate(lengths)]
    spans_seen, orders = [], []
    real_spans = engine_mod.attention_spans

    def spy(positions, split=True, **kw):
        out = real_spans(positions, split, **kw)
        if split:
            spans_seen.append(len(out))
            orders.append(positions)
        return out

    monkeypatch.setattr(engine_mod, "attention_spans", spy)
    split = {c.request_id: c
             for c in run_continuous(TTSEngine(model, TTSEngineConfig(num_slots=4), policy), reqs).completed}
    whole = {c.request_id: c for c in run_continuous(
        TTSEngine(model, TTSEngineConfig(num_slots=4, split_attention=False), policy), reqs).completed}
    seq = {c.request_id: c
           for c in run_sequential(TTSEngine(model, TTSEngineConfig(num_slots=1), policy), reqs).completed}
    assert 2 in spans_seen  # the split path ran
    assert all(p == sorted(p, reverse=True) for p in orders)  # admission order = falling positions
    for i in range(len(reqs)):
        assert split[i].frames == whole[i].frames == seq[i].frames == lengths[i]
        assert (split[i].mel - whole[i].mel).abs().max().item() <= 1e-5
        assert (split[i].mel - seq[i].mel).abs().max().item() <= 1e-4
