"""Moonshine as a batched re-decoding streaming model (streaming/models/moonshine_batched.py): token-level
LocalAgreement, finals equal to the offline decode of the same audio, batching that changes nothing, the
utterance cap that cuts at a pause and loses no audio, and the engine features it relies on (queue draining,
trailing-silence skips)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from speechbench.streaming.models.local_agreement import TokenAgreement

SR = 16000
needs_moonshine = pytest.mark.skipif(importlib.util.find_spec("moonshine_voice") is None,
                                     reason="moonshine-voice not installed")

WORD = {1, 3, 5, 7, 9, 11}  # token ids that start a word in these tests


def test_token_agreement_commits_whole_words_two_hypotheses_agree_on():
    la = TokenAgreement(lambda t: t in WORD)
    la.update([1, 2, 3])
    assert la.committed == [] and la.tail == [1, 2, 3]
    la.update([1, 2, 3, 4, 5])  # agree on 1 2 3; the word "3" is followed by the start of "5" in one only
    assert la.committed == [1, 2]
    la.update([1, 2, 3, 4, 5, 6])  # now "3 4" is followed by a word start in both
    assert la.committed == [1, 2, 3, 4] and la.tail == [5, 6]
    la.update([1, 2, 9, 9, 9])  # disagrees with the commit: the commit stands (positional tail)
    assert la.committed == [1, 2, 3, 4] and la.tokens[:4] == [1, 2, 3, 4]
    assert la.finish([1, 2, 3, 4, 5, 6, 7]) == [1, 2, 3, 4, 5, 6, 7] and not la.revised
    la.reset()
    la.update([1, 2, 3, 4])
    la.update([1, 2, 3, 4, 5])  # the word "3 4" ends the older hypothesis: it may still grow there
    assert la.committed == [1, 2]
    la.finish([1, 8, 5])
    assert la.revised  # a final that changed committed tokens says so


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    if importlib.util.find_spec("moonshine_voice") is None:
        pytest.skip("moonshine-voice not installed")
    from speechbench.speech.audio import load_audio
    from speechbench.speech.recorded import assets_dir

    return load_audio(assets_dir() / "beckett.wav")


def make(**kw):
    import torch

    from speechbench.streaming.models.moonshine_batched import MoonshineRedecode

    torch.set_num_threads(2)
    return MoonshineRedecode("moonshine-tiny", threads=2, **kw)


def run_stream(model, audio: np.ndarray, slot: int = 0, chunk_ms: int = 640) -> tuple[list[str], list[str]]:
    """Feed ``audio`` to one slot chunk by chunk (speech throughout), the last chunk final; handle the model's
    own segment ends as the engine does. Returns (partials, finals)."""
    step = chunk_ms * SR // 1000
    partials, finals = [], []
    for k in range(0, len(audio), step):
        part = audio[k: k + step]
        last = k + step >= len(audio)
        row = np.zeros((1, step), np.float32)
        row[0, : len(part)] = part
        out = model.step(np.array([slot]), row, np.array([last]), np.array([True]), np.array([len(part)]))
        if last or (out.ends is not None and out.ends[0]):
            finals.append(out.texts[0])
            model.reset([slot], new_stream=False)
        else:
            partials.append(out.texts[0])
    return partials, finals


@needs_moonshine
def test_final_equals_the_offline_decode_of_the_same_audio(beckett):
    model = make(final="full")
    model.allocate(4, 640)
    partials, finals = run_stream(model, beckett)
    assert len(finals) == 1
    assert finals[0] == model.batch.transcribe([beckett])[0]
    assert partials[-1] and all(isinstance(p, str) for p in partials)
    assert model.finals == 1


@needs_moonshine
def test_batched_streams_give_the_texts_each_gives_alone(beckett):
    a, b = beckett[: 7 * SR], beckett[2 * SR:]
    alone = []
    for x in (a, b):
        m = make()
        m.allocate(4, 640)
        alone.append(run_stream(m, x))
    m = make()
    m.allocate(4, 640)
    step = 640 * SR // 1000
    n = max(len(a), len(b))
    got = {0: ([], []), 1: ([], [])}
    for k in range(0, n, step):
        slots, rows, lens, fin = [], [], [], []
        for slot, x in ((0, a), (1, b)):
            if k >= len(x):
                continue
            part = x[k: k + step]
            slots.append(slot)
            r = np.zeros(step, np.float32)
            r[: len(part)] = part
            rows.append(r)
            lens.append(len(part))
            fin.append(k + step >= len(x))
        out = m.step(np.array(slots), np.stack(rows), np.array(fin), np.ones(len(slots), bool), np.array(lens))
        for i, slot in enumerate(slots):
            (got[slot][1] if fin[i] else got[slot][0]).append(out.texts[i])
    assert [got[0], got[1]] == [tuple(x) for x in alone]


@needs_moonshine
def test_a_long_utterance_is_cut_at_a_pause_and_no_audio_is_lost(beckett):
    model = make(max_utterance_s=4.0, cut_search_s=2.0)
    model.allocate(2, 640)
    audio = np.concatenate([beckett, beckett])  # 20 s, never finalized by an endpoint
    decoded: list[int] = []
    real_decode = model.batch.decode

    def spy(audios, *a, **kw):
        decoded.extend(len(x) for x in audios)
        return real_decode(audios, *a, **kw)

    model.batch.decode = spy
    step = 640 * SR // 1000
    cut_audio = 0
    finals = []
    for k in range(0, len(audio), step):
        part = audio[k: k + step]
        last = k + step >= len(audio)
        row = np.zeros((1, step), np.float32)
        row[0, : len(part)] = part
        decoded.clear()
        out = model.step(np.array([0]), row, np.array([last]), np.array([True]), np.array([len(part)]))
        if out.ends is not None and out.ends[0]:
            cut_audio += decoded[0]  # the cut-off part, decoded as this segment's final
            finals.append(out.texts[0])
            carried = int(model.carry[0].shape[0])
            model.reset([0], new_stream=False)
            assert model.nbuf[0] == carried  # the rest starts the next utterance
        elif last:
            cut_audio += decoded[0]
            finals.append(out.texts[0])
    assert model.cuts >= 3 and len(finals) == model.cuts + 1
    assert cut_audio == len(audio)  # every sample in exactly one utterance's final
    assert all(len(t.split()) >= 2 for t in finals)
    text = " ".join(finals).lower()
    assert text.count("ever tried") == 2 and "fail better" in text.replace("fale", "fail"), text


@needs_moonshine
def test_a_partial_whose_new_audio_is_silence_is_not_re_decoded(beckett):
    model = make()
    model.allocate(2, 640)
    run_stream(model, beckett[: 3 * SR])  # leaves slot 0 reset; start a new utterance with text
    model.reset([0], new_stream=True)
    step = 640 * SR // 1000
    model.step(np.array([0]), beckett[None, :step], np.array([False]), np.array([True]))
    model.step(np.array([0]), beckett[None, step: 2 * step], np.array([False]), np.array([True]))
    before = model.batch.stats["decoder_rows"]
    silent = np.zeros((1, step), np.float32)
    out = model.step(np.array([0]), silent, np.array([False]), np.array([True]), None, np.array([640.0]))
    assert model.batch.stats["decoder_rows"] == before and model.skipped == 1
    assert out.texts[0] and not out.changed[0]
    model.step(np.array([0]), silent, np.array([True]), np.array([True]), None, np.array([1280.0]))
    assert model.batch.stats["decoder_rows"] == before + 1  # the final always decodes


@needs_moonshine
def test_registry_serves_moonshine_batched_and_native_by_name():
    from speechbench.streaming.models.registry import KNOWN, load_streaming_model

    assert {"moonshine-tiny", "moonshine-base", "moonshine-tiny-native"} <= set(KNOWN)
    loaded = load_streaming_model("moonshine-tiny@final=full,max_utterance_s=15", threads=2)
    try:
        assert loaded.model.batching == "batched" and loaded.model.drains_queue
        assert loaded.model.options()["final"] == "full" and loaded.model.max_utterance_s == 15
        assert "same encoder and decoder" in loaded.offline_method
    finally:
        loaded.close()


def test_accuracy_by_source_pools_streams_with_a_bootstrap_interval():
    from speechbench.streaming.accuracy import by_source, stream_scores

    streams = [{"kind": "real", "utts": ["a", "b"], "hyp": "the cat sat on the mat", "committed": "the cat"},
               {"kind": "real", "utts": ["c"], "hyp": "a dog ran", "committed": "a dog ran"},
               {"kind": "synthetic", "utts": ["d"], "hyp": "hello world", "committed": None}]
    refs = ["the cat sat on a mat", "a dog ran", "hello world"]
    offline = {"a": "the cat sat", "b": "on a mat", "c": "a dog", "d": "hello world"}
    scores = stream_scores(streams, refs, offline)
    assert [s[:5] for s in scores] == [["real", 6, 1, 0, 4], ["real", 3, 0, 1, 0], ["synthetic", 2, 0, 0, None]]
    src = by_source([{"stream_scores": scores}, {"stream_scores": scores[:1]}])
    real = src["real"]
    assert real["streams"] == 3 and real["words"] == 15 and real["distinct_utterances"] == 3
    assert real["wer_final"] == pytest.approx(2 / 15) and real["wer_offline"] == pytest.approx(1 / 15)
    assert real["wer_committed"] == pytest.approx(8 / 15) and real["gap_points"] == pytest.approx(100 / 15)
    lo, hi = real["wer_final_ci95"]
    assert 0 <= lo <= real["wer_final"] <= hi <= 1
    assert src["synthetic"]["wer_final"] == 0 and src["synthetic"]["wer_final_ci95"] is None  # one stream
    assert "wer_committed" not in src["synthetic"]


def test_a_draining_model_is_admitted_by_queue_age_not_by_a_busy_scheduler():
    from speechbench.streaming.engine_types import StreamingEngineConfig
    from speechbench.streaming.models.registry import fit_engine_config

    class Redecoding:
        frame_ms, default_chunk_ms, drains_queue = None, 640, True
        default_max_wait_ms = default_max_batch = None

    ec = fit_engine_config(Redecoding(), StreamingEngineConfig(max_duty=0.9, overload_ms=250.0))
    assert ec.endpoint == "vad" and ec.max_duty > 1.0 and ec.overload_ms == 250.0 + 2 * 640
    ec = fit_engine_config(Redecoding(), StreamingEngineConfig(model_chunk_ms=320), ["model_chunk_ms"])
    assert ec.model_chunk_ms == 320 and ec.max_queue_ms >= 2 * 320 + ec.max_chunk_ms
