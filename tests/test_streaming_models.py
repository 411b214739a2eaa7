"""Streaming models behind the engine's interface: LocalAgreement's commit logic on hand-made hypotheses,
the CTC model's batched step against per-stream steps, and Whisper streamed through the engine against its
offline transcript of the same sentence."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import torch

from speechbench.asr.ctc.features import FeatureConfig
from speechbench.asr.ctc.model import CTCModel, ModelConfig
from speechbench.streaming import StreamingEngine, StreamingEngineConfig
from speechbench.streaming.models.base import StepOutput, StreamingModel
from speechbench.streaming.models.ctc import CTCStreamingModel
from speechbench.streaming.models.local_agreement import LocalAgreement, common_prefix

SR = 16000


# --- LocalAgreement ----------------------------------------------------------------------------------------


def test_local_agreement_commits_what_two_hypotheses_agree_on():
    la = LocalAgreement(2)
    assert la.update("the") == ("", "the")  # one hypothesis: nothing agreed yet
    assert la.update("the quick") == ("the", "quick")
    assert la.update("the quick brown") == ("the quick", "brown")
    # a revision of the tentative word: nothing new agreed, the revised word stays tentative
    assert la.update("the quick brown fax") == ("the quick brown", "fax")
    assert la.update("the quick brown fox jumps") == ("the quick brown", "fox jumps")
    assert la.update("the quick brown fox jumps over") == ("the quick brown fox jumps", "over")
    assert la.finish("the quick brown fox jumps over the dog") == "the quick brown fox jumps over the dog"


def test_local_agreement_never_withdraws_a_commit_and_ignores_case_and_punctuation():
    la = LocalAgreement(2)
    la.update("Hello, world")
    # agreed despite case and comma; committed in the spelling of the hypothesis that committed them
    assert la.update("hello world again") == ("hello world", "again")
    # the new hypothesis rewrites the committed words: they stand, comparison goes on past them
    committed, tentative = la.update("Yellow word again and")
    assert committed == "hello world again" and tentative == "and"
    assert common_prefix(["A.", "b"], ["a", "B!"]) == 2


def test_local_agreement_3_needs_three_hypotheses():
    la = LocalAgreement(3)
    la.update("one two")
    assert la.update("one two three") == ("", "one two three")
    assert la.update("one two three four") == ("one two", "three four")
    la.reset()
    assert la.text == "" and la.update("x") == ("", "x")


# --- CTC: batched step == per-stream steps -------------------------------------------------------------------


def tiny_ctc(seed: int, layers: int = 1) -> CTCModel:
    """A small causal CTC model with a sharpened head, so greedy decoding emits symbols."""
    torch.manual_seed(seed)
    cfg = ModelConfig(name="t", conv_channels=(8, 8), proj=32, hidden=32, layers=layers, bidirectional=False,
                      causal=True)
    net = CTCModel(cfg).eval()
    with torch.no_grad():
        net.head.weight.mul_(30.0)
    return net


def test_ctc_batched_step_equals_per_stream_steps():
    net = tiny_ctc(3)
    rng = np.random.default_rng(0)
    chunks = rng.standard_normal((6, 3, 640)).astype(np.float32) * 0.1  # 6 steps x 3 streams
    batched = CTCStreamingModel(net, FeatureConfig())
    single = CTCStreamingModel(net, FeatureConfig())
    batched.allocate(4, 40)
    single.allocate(4, 40)
    slots = np.array([2, 0, 3])
    batched.reset(slots.tolist(), new_stream=True)
    single.reset(slots.tolist(), new_stream=True)
    no = np.zeros(3, dtype=bool)
    for k in range(6):
        out = batched.step(slots, chunks[k], no)
        for r, s in enumerate(slots):
            one = single.step(np.array([s]), chunks[k][r: r + 1], no[:1])
            assert one.texts[0] == out.texts[r]
            torch.testing.assert_close(one.frame_symbols[0], out.frame_symbols[r])
    assert any(batched.text(int(s)) for s in slots)


def test_ctc_traced_graph_step_is_bit_identical_to_eager():
    # The traced TorchScript step (the default) against the eager step on the same weights: every step's
    # log-probs, symbols and texts equal exactly, at varying batch sizes and slots.
    net = tiny_ctc(4, layers=2)
    graph, eager = CTCStreamingModel(net, FeatureConfig()), CTCStreamingModel(net, FeatureConfig(), graph=False)
    taps: dict[str, list[torch.Tensor]] = {"graph": [], "eager": []}
    for name, m in (("graph", graph), ("eager", eager)):
        m.allocate(8, 40)
        m.reset(list(range(8)), new_stream=True)
        m.tap = lambda slots, lp, name=name: taps[name].append(lp.clone())
    assert graph.graph is not None and eager.graph is None and graph.options()["graph"] == "torchscript trace"
    rng = np.random.default_rng(1)
    for k in range(8):
        slots = np.sort(rng.choice(8, size=1 + k % 6, replace=False))
        audio = (0.1 * rng.standard_normal((len(slots), 640))).astype(np.float32)
        no = np.zeros(len(slots), dtype=bool)
        a, b = graph.step(slots, audio, no), eager.step(slots, audio, no)
        assert a.texts == b.texts
        assert torch.equal(a.frame_symbols, b.frame_symbols)
    assert all(torch.equal(x, y) for x, y in zip(taps["graph"], taps["eager"], strict=True))
    assert any(graph.text(s) for s in range(8))
    # the graph writes the slot pools in place: every slot's carried state ends up the same as eager's
    for name in ("cache1", "cache2", "h", "c"):
        assert torch.equal(getattr(graph.pool, name), getattr(eager.pool, name)), name
    assert torch.equal(graph.ovl, eager.ovl) and torch.equal(graph.prev, eager.prev)


def test_ctc_graph_option_must_be_a_boolean():
    from speechbench.streaming.models.registry import load_streaming_model

    with pytest.raises(ValueError, match="graph=true or graph=false"):
        load_streaming_model("ctc-streaming@graph=no", checkpoint="random")
    assert load_streaming_model("ctc-streaming@graph=false", checkpoint="random").model.use_graph is False


def test_ctc_step_falls_back_to_eager_when_the_trace_is_refused(monkeypatch):
    from speechbench.streaming.models import ctc_graph

    def refuse(*a, **k):
        raise RuntimeError("traced CTC step differs from eager at batch 3")

    monkeypatch.setattr(ctc_graph, "traced_chunk_step", refuse)
    m = CTCStreamingModel(tiny_ctc(5), FeatureConfig())
    m.allocate(2, 40)
    m.reset([0, 1], new_stream=True)
    out = m.step(np.array([0, 1]), np.zeros((2, 640), np.float32), np.zeros(2, dtype=bool))
    assert m.graph is None and "differs" in m.options()["graph_error"] and len(out.texts) == 2


# --- Whisper with LocalAgreement ------------------------------------------------------------------------------

needs_whisper = pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is None,
                                   reason="faster-whisper not installed")


@needs_whisper
def test_whisper_streaming_transcript_matches_offline():
    from speechbench.asr import load_recognizer
    from speechbench.speech.audio import resample
    from speechbench.speech.espeak import EspeakVoice, synthesize_espeak
    from speechbench.speech.texts import normalize
    from speechbench.streaming.models.whisper_la import WhisperLocalAgreement

    speech, sr = synthesize_espeak("could you please turn off the lights in the kitchen before you leave",
                                   EspeakVoice("en-us"))
    speech = resample(speech, sr, SR).astype(np.float32)
    rng = np.random.default_rng(0)
    pad = np.zeros(SR // 2, np.float32)
    wave = np.concatenate([pad, speech, pad, pad]) + (1e-4 * rng.standard_normal(len(speech) + 3 * len(pad))
                                                      ).astype(np.float32)
    rec = load_recognizer("whisper-tiny.en", compute_type="int8", beam_size=1, cpu_threads=2)
    offline = rec.transcribe([wave])[0]
    # The final is the last decode of the whole segment; with the offline pass's 30 s window it is the
    # offline transcript (the default "fit" window may differ from it by a word: Part 3 measures that).
    model = WhisperLocalAgreement(rec, window="full")
    events = []
    eng = StreamingEngine(model, StreamingEngineConfig(endpoint="vad", max_streams=2, max_batch=2, max_wait_ms=0,
                                              max_queue_ms=3000, max_duty=2.0, overload_ms=1e9),
                          on_event=events.append)
    try:
        eng.add_stream("a")
        for k in range(0, len(wave), 640):
            eng.process_chunk("a", np.ascontiguousarray(wave[k: k + 640]))
            while eng.backlog_samples() > SR:  # back-pressure: a busy machine must not shed audio here
                time.sleep(0.005)
        final = eng.finalize_stream("a").result(timeout=60)
        assert eng.stats()["shed_chunks"] == 0
    finally:
        eng.stop()
        rec.close()
    finals = " ".join(e.text for e in events if e.kind == "final" and e.text)
    assert normalize(finals) == normalize(offline), (finals, offline)
    partials = [e.text for e in events if e.kind == "partial" and e.text]
    assert len(partials) >= 2  # it streamed: text appeared before the end
    assert final == "" or normalize(final) in normalize(finals)


# --- scoring a stream whose endpointer merged two utterances ---------------------------------------------------


def test_stream_scoring_is_robust_to_merged_segments():
    """One final covering two utterances (a short pause not taken as an endpoint) is owned by the second;
    the stream's transcript is still right, so the stream-level WER is 0 where per-utterance scoring
    would count every word of the first utterance twice."""
    from types import SimpleNamespace

    from speechbench.streaming.loadgen import Span, StreamTrack, UttAudio, score_tracks, wer_counts

    pool = [UttAudio("u0", "the cat sat", np.zeros(SR, np.float32), 0, SR),
            UttAudio("u1", "on the mat", np.zeros(SR, np.float32), 0, SR)]
    spans = [Span(0, 0, SR, SR + 4800), Span(1, SR + 4800, 2 * SR + 4800, 3 * SR)]
    tr = StreamTrack("s0", SimpleNamespace(spans=spans), start=0.0, admitted=True, sent=3 * SR)
    tr.finals.append((0, "The cat sat on the mat.", 100, 2 * SR, 3.0, "endpoint"))  # owned by u1
    scored = score_tracks([tr], pool, 3 * SR)
    per_utt = {r["utt"]: r["hyp"] for r in scored["utterances"]}
    assert per_utt == {"u0": "", "u1": "The cat sat on the mat."}
    assert scored["streams"] == [{"stream": "s0", "kind": "synthetic", "utts": ["u0", "u1"],
                                  "hyp": "The cat sat on the mat."}]
    assert wer_counts(["the cat sat on the mat"], [scored["streams"][0]["hyp"]])["wer"] == 0.0
    # per utterance: u0 three deletions, u1 three insertions: 6 errors on 6 words
    assert wer_counts(["the cat sat", "on the mat"], list(per_utt.values()))["wer"] == 1.0


# --- re-decoding models: final text, decoding loops, early joins ---------------------------------------------


def test_local_agreement_final_is_the_last_hypothesis_whole():
    la = LocalAgreement(2)
    la.update("I'm going")
    la.update("I'm going to")  # commits "I'm going"
    # the last decode of the whole segment splits the contraction: the final takes it whole (the old
    # positional splice kept "I'm going" and appended words from index 2: "I'm going going to the ...")
    assert la.finish("I am going to the shop") == "I am going to the shop"
    assert la.revised
    la.reset()
    la.update("see you")
    la.update("see you soon")
    assert la.finish("see you soon then") == "see you soon then" and not la.revised


def test_cut_repetition_stops_a_decoding_loop_and_keeps_ordinary_text():
    from speechbench.streaming.models.whisper_la import cut_repetition

    loop = "Light-inch truck met all oak tree during the night. Light-inch truck met all oak tree during the night. Li"
    assert cut_repetition(loop) == "Light-inch truck met all oak tree during the night."
    assert cut_repetition("the the the the cat sat") == "the"
    for ok in ("no no we went to the shop", "she said that that was fine", "one two three four"):
        assert cut_repetition(ok) == ok


class _RecordingModel(StreamingModel):
    """A re-decoding stand-in: records each step's rows and lengths; its text is the samples it holds."""

    name = "recording"
    default_chunk_ms = 400
    min_join_ms = 200
    frame_ms = None

    def allocate(self, capacity, chunk_ms):
        self.chunk_ms = chunk_ms
        self.held = np.zeros(capacity, dtype=np.int64)
        self.steps = []

    def reset(self, slots, new_stream):
        self.held[slots] = 0

    def step(self, slots, audio, final, speech=None, lengths=None):
        n = np.full(len(slots), audio.shape[1]) if lengths is None else lengths
        self.steps.append((slots.tolist(), n.tolist()))
        self.held[slots] += n
        return StepOutput([str(int(self.held[s])) for s in slots], np.ones(len(slots), bool))

    def text(self, slot):
        return str(int(self.held[slot]))


def test_streams_with_half_a_chunk_join_a_step_of_a_re_decoding_model():
    model = _RecordingModel()
    eng = StreamingEngine(model, StreamingEngineConfig(endpoint="none", max_streams=3, max_wait_ms=0.0,
                                                       max_queue_ms=2000.0), start=False)
    eng.add_stream("full")
    eng.add_stream("half")
    eng.add_stream("little")
    chunk = model.chunk_samples
    eng.process_chunk("full", np.zeros(chunk, np.float32))
    eng.process_chunk("half", np.zeros(chunk // 2 + 160, np.float32))  # more than min_join_ms (200 of 400)
    eng.process_chunk("little", np.zeros(chunk // 4, np.float32))  # less: waits for a chunk of its own
    with eng._cond:
        batch, _ = eng._collect(time.perf_counter())
    eng._step(batch)
    slots, lengths = model.steps[0]
    assert len(slots) == 2 and sorted(lengths) == [chunk // 2 + 160, chunk]
    assert eng.stats()["early_joins"] == 1
    # each stream's model holds exactly the audio it sent: the joiner's zero padding was not fed as audio
    assert sorted(model.held.tolist()) == [0, chunk // 2 + 160, chunk]
    eng.stop()


def test_length_buckets_keep_each_batch_within_the_ratio():
    from speechbench.streaming.models.whisper_la import length_buckets

    sr = 16000
    lengths = [2 * sr, 9 * sr, 2 * sr + 100, 8 * sr, 30 * sr // 10]
    groups = length_buckets(lengths, 1.3, pad=sr)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row once
    for g in groups:
        ls = [lengths[i] + sr for i in g]
        assert max(ls) <= 1.3 * min(ls)
    assert [0, 2] in groups and [3, 1] in groups
    assert length_buckets(lengths, float("inf")) == [sorted(range(5), key=lengths.__getitem__)]
