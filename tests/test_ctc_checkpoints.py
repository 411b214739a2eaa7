"""The committed checkpoints (models/ctc-*.pt) load and recognize speech they never heard.

Sentences from the evaluation set (never in the training text), spoken by an in-domain voice, are
synthesized fresh here and transcribed by every committed model. The bound is loose on purpose (a few
sentences are a small sample), but a broken checkpoint, front end or decoder scores ~100% CER.
"""

from __future__ import annotations

import importlib.util

import jiwer
import numpy as np
import pytest
import torch

from speechbench.asr import load_recognizer
from speechbench.asr.ctc.backend import CTC_NAMES, default_checkpoint
from speechbench.asr.ctc.decode import greedy_decode
from speechbench.asr.ctc.features import StreamingLogMel
from speechbench.asr.ctc.tokenizer import normalize_target
from speechbench.speech.conditions import noise_floor, pad_silence
from speechbench.speech.corpus import CorpusConfig
from speechbench.speech.texts import eval_sentences

MAX_CER = 0.20  # per model, over the sentences below; trained models score well under it (see model cards)

SENTENCES = eval_sentences()[:4]


def _corpus_like(audio: np.ndarray, seed: int) -> np.ndarray:
    cfg = CorpusConfig()
    return noise_floor(pad_silence(audio, cfg.pad_s, cfg.pad_s), cfg.noise_floor_dbfs,
                       np.random.default_rng(seed))


@pytest.fixture(scope="module")
def speech() -> list[tuple[str, np.ndarray]]:
    """Evaluation sentences by an in-domain espeak voice, synthesized in a fresh process (espeak-ng keeps
    state between utterances, so this keeps the audio independent of what ran before)."""
    if importlib.util.find_spec("espeakng_loader") is None:
        pytest.skip("espeakng-loader not installed")
    from concurrent.futures import ProcessPoolExecutor

    from speechbench.speech.corpus import _worker_context
    from speechbench.speech.synth import synthesize_texts

    with ProcessPoolExecutor(1, mp_context=_worker_context(), max_tasks_per_child=1) as pool:
        audios = pool.submit(synthesize_texts, "en-us", 0, 0, SENTENCES).result()
    return [(text, _corpus_like(a, i)) for i, (text, a) in enumerate(zip(SENTENCES, audios, strict=True))]


def _cer(refs: list[str], hyps: list[str]) -> float:
    return jiwer.cer([normalize_target(r) for r in refs], [normalize_target(h) or "-" for h in hyps])


@pytest.mark.parametrize("name", CTC_NAMES)
def test_committed_checkpoint_transcribes_unseen_sentences(name, speech):
    path = default_checkpoint(name)
    if not path.exists():
        pytest.skip(f"{path} not trained yet (see models/README.md)")
    rec = load_recognizer(name, threads=2)
    hyps = rec.transcribe([a for _, a in speech])
    cer = _cer([t for t, _ in speech], hyps)
    assert cer <= MAX_CER, f"{name}: CER {cer:.3f} on {list(zip(SENTENCES, hyps, strict=True))}"


def test_streaming_checkpoint_chunk_by_chunk_equals_whole_utterance(speech):
    """Real audio through the streaming front end and the carried model state, 320 ms at a time, gives
    the same characters as one offline pass of the same causal model."""
    path = default_checkpoint("ctc-streaming")
    if not path.exists():
        pytest.skip(f"{path} not trained yet (see models/README.md)")
    rec = load_recognizer("ctc-streaming", threads=2)
    text, audio = speech[0]
    offline = rec.transcribe([audio])[0]
    model = rec.model
    front = StreamingLogMel(rec.feat_cfg)
    state = model.init_state(1)
    outs = []
    with torch.no_grad():
        for start in range(0, len(audio), 5120):  # 320 ms
            feats = front.accept(audio[start: start + 5120])
            lp, state = model.forward_chunk(feats.unsqueeze(0), state)
            outs.append(lp)
    streamed = rec.tokenizer.decode(greedy_decode(torch.cat(outs, 1))[0])
    assert streamed == offline


def test_scorecard_scores_by_accent_and_reports_the_beam_tuning_set(speech, tmp_path):
    """``train_asr.py --score``: per-accent greedy and beam+LM scores, plus the held-out training-grammar
    sentences the beam weights were tuned on, rendered into the model card."""
    from speechbench.asr.ctc.training.scorecard import render_scorecard, score_checkpoint
    from speechbench.speech.audio import save_audio
    from speechbench.speech.manifest import Utterance, write_manifest

    path = default_checkpoint("ctc-small")
    if not path.exists():
        pytest.skip(f"{path} not trained yet (see models/README.md)")
    utts = []
    for i, (text, audio) in enumerate(speech):
        wav = save_audio(tmp_path / f"u{i}.wav", audio)
        # the labels are metadata only: half the clips stand in for a held-out accent
        utts.append(Utterance(id=f"u{i}", audio_filepath=wav.name, text=text, duration=len(audio) / 16000,
                              dialect="en-us" if i % 2 == 0 else "en-029", audio_path=wav))
    manifest = write_manifest(tmp_path / "manifest.jsonl", utts)
    ev = score_checkpoint(path, manifest, tune_utts=utts[:2], threads=2)
    assert set(ev["per_accent"]) == {"en-us", "en-029"}
    assert ev["per_accent"]["en-us"]["in_domain"] and not ev["per_accent"]["en-029"]["in_domain"]
    assert ev["in_domain"]["greedy"]["n"] == 2 and ev["held_out"]["greedy"]["n"] == 2
    chosen = (ev["beam"]["lm_weight"], ev["beam"]["char_bonus"])
    best = min(ev["beam_tuning"]["grid"], key=lambda r: (r["wer"], r["cer"]))
    assert chosen == (best["lm_weight"], best["char_bonus"])
    assert ev["heldout_text"]["beam_lm"]["wer"] == best["wer"] and ev["heldout_text"]["greedy"]["n"] == 2
    assert ev["in_domain"]["greedy"]["cer"] <= MAX_CER
    card = "\n".join(render_scorecard(ev))
    assert "held-out training-grammar sentences" in card and "| en-029 | held out | 2 |" in card
