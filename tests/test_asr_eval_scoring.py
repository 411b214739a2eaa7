"""Alignment, S/D/I, WER and CER against hand-computed examples and jiwer; trn export; pairing checks."""

from __future__ import annotations

import jiwer
import pytest

from speechbench.asr_eval.analysis import PairingError, aggregate, compare_pair
from speechbench.asr_eval.errors import error_analysis
from speechbench.asr_eval.export import trn_id, write_trn
from speechbench.asr_eval.scoring import align, corpus_wer, score, score_normalized


@pytest.mark.parametrize("ref, hyp, s, d, i", [
    ("the cat sat on the mat", "the cat sit on mat", 1, 1, 0),  # sat->sit, 'the' deleted
    ("a b c", "x a b c", 0, 0, 1),
    ("a b c d", "", 0, 4, 0),
    ("hello world", "hello big wide world", 0, 0, 2),
    ("a b", "c d e", 2, 0, 1),
    ("one two three", "one two three", 0, 0, 0),
    ("a b c d e f", "a c d x e f g", 0, 1, 2),  # b deleted, x and g inserted
])
def test_alignment_counts_by_hand(ref, hyp, s, d, i):
    a = align(ref.split(), hyp.split())
    assert (a.subs, a.dels, a.ins) == (s, d, i)
    assert a.hits == len(ref.split()) - s - d
    assert a.hits + a.subs + a.ins == len(hyp.split())
    out = jiwer.process_words(ref, hyp) if ref else None
    if out is not None:  # the total is the edit distance, whichever equal-cost alignment is picked
        assert out.substitutions + out.deletions + out.insertions == s + d + i


def test_alignment_details():
    a = align("the cat sat on the mat".split(), "the cat sit on mat".split())
    assert a.ref_word_status() == ["C", "C", "S", "C", "D", "C"]
    assert a.substitution_pairs() == [("sat", "sit")]
    assert a.insertions_by_gap() == [0] * 7
    b = align("a b c".split(), "z a b y c w".split())
    assert b.insertions_by_gap() == [1, 0, 1, 1]
    assert "REF:" in b.pretty() and "***" in b.pretty()


def test_cer_by_hand():
    s = score_normalized("abc def", "abd def")
    assert s.char_errors == 1 and s.ref_chars == 7
    s = score_normalized("ab", "")
    assert s.char_errors == 2 and s.dele == 1
    assert jiwer.cer("abc def", "abd def") == pytest.approx(1 / 7)


def test_corpus_wer_equals_jiwer_and_is_not_mean_of_utterance_wers():
    pairs = [("She sells fresh fish.", "She sells fish"), ("Hello world", "hello word world"),
             ("A long sentence with many many words in it", "a long sentence with many words in it"),
             ("It's 4 o'clock", "It is four o'clock")]
    scored = [score(r, h) for r, h in pairs]
    ours = corpus_wer([s.errors for s in scored], [s.ref_words for s in scored])
    assert ours == pytest.approx(jiwer.wer([s.ref for s in scored], [s.hyp for s in scored]))
    mean_of_wers = sum(s.errors / s.ref_words for s in scored) / len(scored)
    assert ours != pytest.approx(mean_of_wers)
    recs = [{**s.to_json(), "id": str(k), "speaker": "s", "duration_s": 1.0, "latency_s": 0.1}
            for k, s in enumerate(scored)]
    agg = aggregate(recs, 1000, 0)
    assert agg["wer"] == pytest.approx(ours)
    assert agg["cer"] == pytest.approx(jiwer.cer([s.ref for s in scored], [s.hyp for s in scored]))
    assert agg["wer_ci95"][0] <= agg["wer"] <= agg["wer_ci95"][1]


def _recs(model_hyps: list[str], refs: list[str], ids: list[str] | None = None) -> list[dict]:
    out = []
    for k, (r, h) in enumerate(zip(refs, model_hyps, strict=True)):
        s = score(r, h)
        out.append({**s.to_json(), "id": (ids or [f"u{j}" for j in range(len(refs))])[k], "speaker": f"s{k % 2}",
                    "dialect": "d", "sentence": str(k), "condition": "clean", "duration_s": 2.0 + k,
                    "latency_s": 0.1})
    return out


def test_paired_tests_refuse_different_utterance_sets():
    refs = ["a b c", "d e f", "g h i"]
    a = _recs(["a b c", "d x f", "g h"], refs)
    b = _recs(["a b c", "d e f", "g h i"], refs, ids=["u0", "u1", "other"])
    with pytest.raises(PairingError, match="not scored on the same utterances"):
        compare_pair(a, b, 1000, 0, "A", "B")
    c = compare_pair(a, _recs(["a b c", "d e f", "g h i"], refs), 1000, 0, "A", "B")
    assert c["wer_a"] == pytest.approx(2 / 9) and c["wer_b"] == 0
    assert set(c["tests"]) == {"mapsswe", "wilcoxon", "sign", "paired_t", "mcnemar"}


def test_error_analysis_classes():
    refs = ["the cat sat on the mat", "a bird in the hand"]
    recs = _recs(["the cat sit on mat", "a bird in the hand"], refs)
    ea = error_analysis(recs, vocab_counts={"cat": 5, "the": 200}, own_vocab={"the", "cat", "on", "mat"})
    assert ea["word_class"]["function"]["errors"] == 1  # 'the' deleted
    assert ea["word_class"]["content"]["errors"] == 1  # 'sat' substituted
    assert ea["top_substitutions"] == [{"ref": "sat", "hyp": "sit", "count": 1}]
    assert ea["top_deletions"] == [{"word": "the", "count": 1}]
    assert ea["frequency_band"]["100+"]["words"] == 3
    assert ea["oov"]["out of vocabulary"]["words"] == 5  # sat, a, bird, in, hand


def test_trn_export(tmp_path):
    recs = _recs(["the cat sit", ""], ["the cat sat", "a b"])
    for r, m in zip(recs, ["en_us_s0", "en-us-s1"], strict=True):
        r["speaker"] = m
    files = write_trn(tmp_path, {"whisper:x/y": recs})
    hyp = (tmp_path / "whisper_x_y.hyp.trn").read_text().splitlines()
    ref = (tmp_path / "whisper_x_y.ref.trn").read_text().splitlines()
    assert hyp == ["the cat sit (en-us-s0_u0)", " (en-us-s1_u1)"]
    assert ref == ["the cat sat (en-us-s0_u0)", "a b (en-us-s1_u1)"]
    assert files["whisper:x/y"]["hyp"].endswith("whisper_x_y.hyp.trn")
    assert trn_id("spk (1)", "a b") == "spk-1-_a-b"
