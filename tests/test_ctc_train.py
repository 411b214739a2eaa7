"""End to end: a --quick training run on a tiny synthesized corpus, then the backend on its checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import train_asr
from speechbench.asr import RecognizerUnavailable, available_recognizers, load_recognizer
from speechbench.asr.ctc import CTCRecognizer, register_ctc_checkpoint
from speechbench.asr.ctc.checkpoint import load_checkpoint
from speechbench.asr.ctc.features import StreamingLogMel
from speechbench.asr.registry import unregister_backend


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctc")
    out = root / "models" / "ctc-streaming.pt"
    rc = train_asr.main(["--model", "streaming", "--quick", "--corpus-root", str(root / "corpora"),
                         "--out", str(out), "--no-progress", "--corpus-workers", "2"])
    assert rc == 0
    return out


def test_quick_run_writes_checkpoint_card_and_log(quick_run):
    out = quick_run
    card = out.with_name("ctc-streaming.md").read_text()
    rows = [json.loads(line) for line in out.with_name("ctc-streaming.train.jsonl").read_text().splitlines()]
    assert [r["event"] for r in rows][0] == "start" and rows[-1]["event"] == "end"
    assert any(r["event"] == "val" and "val_cer" in r for r in rows)
    assert rows[-1]["steps"] == train_asr.QUICK["steps"]
    assert "parameters" in card and "validation `heldout`" in card and "en-us" in card
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert payload["state_dict"]["head.weight"].dtype == torch.float16
    assert payload["state_dict"]["feat_mean"].dtype == torch.float32
    model, feat_cfg, meta = load_checkpoint(out)
    assert model.cfg.causal and not model.training and meta["meta"]["total_steps"] == train_asr.QUICK["steps"]


def test_backend_loads_and_transcribes(quick_run):
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(16000).astype(np.float32), np.zeros(3000, np.float32),
             np.zeros(50, np.float32)]
    register_ctc_checkpoint("ctc-test-quick", quick_run)
    try:
        rec = load_recognizer("ctc-test-quick", threads=2)
        texts = rec.transcribe(waves)
        assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
        info = rec.info()
        assert info["params"] == rec.model.num_params and info["precision"] == "float32" and rec.streaming
        beam = CTCRecognizer(quick_run, decoder="beam")
        assert len(beam.transcribe(waves[:1])) == 1
    finally:
        unregister_backend("ctc-test-quick")


def test_streaming_checkpoint_chunked_equals_offline(quick_run):
    model, feat_cfg, _ = load_checkpoint(quick_run)
    audio = 0.1 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    stream, state, outs = StreamingLogMel(feat_cfg), model.init_state(1), []
    with torch.no_grad():
        for i in range(0, len(audio), 640 * 2):  # 80 ms chunks: 8 frames, 2 outputs each
            out, state = model.forward_chunk(stream.accept(audio[i: i + 1280])[None], state)
            outs.append(out)
        from speechbench.asr.ctc.features import LogMel

        feats, flen = LogMel(feat_cfg)(torch.from_numpy(audio))
        whole, _ = model(feats, flen)
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=1e-4, rtol=1e-4)


def test_missing_checkpoint_is_reported_unavailable(tmp_path):
    register_ctc_checkpoint("ctc-test-missing", tmp_path / "nope.pt", size="small")
    try:
        reason = available_recognizers()["ctc-test-missing"]
        assert reason and "no checkpoint" in reason and "train_asr.py --model small" in reason
        with pytest.raises(RecognizerUnavailable, match="no checkpoint"):
            load_recognizer("ctc-test-missing")
    finally:
        unregister_backend("ctc-test-missing")
    for name in ("ctc-small", "ctc-medium", "ctc-large", "ctc-streaming"):
        assert name in available_recognizers()
    with pytest.raises(RecognizerUnavailable):
        CTCRecognizer(tmp_path / "nope.pt")


def test_init_from_continues_from_a_checkpoint(quick_run, tmp_path):
    out = tmp_path / "more.pt"
    rc = train_asr.main(["--model", "streaming", "--quick", "--steps", "2", "--init-from", str(quick_run),
                         "--corpus-root", str(quick_run.parent.parent / "corpora"), "--out", str(out),
                         "--no-progress"])
    assert rc == 0 and "started from" in out.with_name("more.md").read_text()
    first, _, _ = load_checkpoint(quick_run)
    second, _, _ = load_checkpoint(out)
    assert torch.equal(first.feat_mean, second.feat_mean)  # statistics carried over, not re-measured
    assert train_asr.main(["--model", "small", "--init-from", str(tmp_path / "missing.pt"), "--steps", "1"]) == 2


def test_init_from_a_smaller_model_grows_it(quick_run, tmp_path, capsys):
    """--model large --init-from a medium checkpoint widens it (grow.py) and says so in the card; a model
    of another depth or direction is refused with the reason."""
    corpora = str(quick_run.parent.parent / "corpora")
    medium = tmp_path / "medium.pt"
    common = ["--quick", "--steps", "1", "--corpus-root", corpora, "--no-progress"]
    assert train_asr.main(["--model", "medium", *common, "--out", str(medium)]) == 0
    large = tmp_path / "large.pt"
    assert train_asr.main(["--model", "large", *common, "--init-from", str(medium), "--out", str(large)]) == 0
    assert "widened into this one" in large.with_name("large.md").read_text()
    grown, _, _ = load_checkpoint(large)
    assert grown.cfg.name == "large" and torch.equal(grown.feat_mean, load_checkpoint(medium)[0].feat_mean)
    rc = train_asr.main(["--model", "large", *common, "--init-from", str(quick_run), "--out", str(large)])
    assert rc == 2 and "bidirectional differs" in capsys.readouterr().err


def test_score_writes_per_accent_scores_and_the_card_renders_them(quick_run, tmp_path):
    """`train_asr.py --score`: every accent of the evaluation manifest scored greedy and beam + LM, the
    beam weights tuned on training-corpus utterances, the card re-rendered with the table."""
    corpus = quick_run.parent.parent / "corpora"
    manifest = next(corpus.glob("ctc-tiny-*/manifest.jsonl"))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:6]
    for i, r in enumerate(rows):  # pose as an evaluation set with a held-out accent
        r["audio_filepath"] = str(manifest.parent / r["audio_filepath"])
        r["dialect"] = r["dialect"] if i % 2 else "en-029"
    ev_manifest = tmp_path / "eval.jsonl"
    ev_manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = train_asr.main(["--score", str(quick_run), "--val-manifest", str(ev_manifest), "--corpus", "tiny",
                         "--corpus-root", str(corpus), "--no-progress", "--threads", "1"])
    assert rc == 0
    ev = json.loads(quick_run.with_name("ctc-streaming.eval.json").read_text())
    assert ev["per_accent"]["en-029"]["in_domain"] is False
    assert ev["held_out"]["greedy"]["n"] == 3 and ev["in_domain"]["greedy"]["n"] == 3
    assert 0 <= ev["in_domain"]["beam_lm"]["wer"] and ev["beam_tuning"]["grid"]
    card = quick_run.with_name("ctc-streaming.md").read_text()
    assert "## Evaluation corpus, by accent" in card and "| en-029 | held out | 3 |" in card


def test_score_needs_an_evaluation_manifest(quick_run):
    assert train_asr.main(["--score", str(quick_run)]) == 2
