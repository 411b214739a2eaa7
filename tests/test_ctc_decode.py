from __future__ import annotations

import math

import pytest
import torch

from speechbench.asr.ctc.decode import (
    BeamConfig,
    CharNgramLM,
    StreamingGreedyDecoder,
    greedy_chunk,
    greedy_decode,
    prefix_beam_search,
)
from speechbench.asr.ctc.tokenizer import CHARS, Tokenizer, normalize_target, number_words

V = len(CHARS) + 1
TOK = Tokenizer()


def logits_for(path: list[int], sharp: float = 10.0) -> torch.Tensor:
    """(T, V) log-probs whose argmax follows ``path`` (0 = blank)."""
    x = torch.zeros(len(path), V)
    for t, i in enumerate(path):
        x[t, i] = sharp
    return x.log_softmax(-1)


def ids(text: str) -> list[int]:
    return TOK.encode(text, normalized=True)


def test_tokenizer_round_trip():
    text = "it's a quick test of the tokenizer's round trip"
    assert TOK.decode(TOK.encode(text)) == text
    assert TOK.vocab_size == 29 and 0 not in TOK.encode(text)
    assert TOK.decode([0, 0]) == ""


def test_normalize_target():
    assert normalize_target("Hello, World! It's 2 o'clock.") == "hello world it's two o'clock"
    assert normalize_target("Room 101 -- 'quoted' text") == "room one hundred one quoted text"
    assert normalize_target("Café déjà vu") == "cafe deja vu"
    assert number_words(2024) == "two thousand twenty four"
    assert normalize_target("agent 007") == "agent zero zero seven"


def test_greedy_collapses_repeats_and_drops_blanks():
    a, b = ids("a")[0], ids("b")[0]
    lp = logits_for([0, a, a, 0, a, b, b, 0, 0])
    assert greedy_decode(lp[None]) == [[a, a, b]]
    assert TOK.decode(greedy_decode(logits_for([0, 0, 0])[None])[0]) == ""
    assert greedy_decode(torch.zeros(2, 0, V)) == [[], []]


def test_greedy_batched_respects_lengths():
    a, b = ids("a")[0], ids("b")[0]
    x = torch.stack([logits_for([a, b, 0, a]), logits_for([b, b, a, a])])
    assert greedy_decode(x, torch.tensor([2, 4])) == [[a, b], [b, a]]


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_streaming_greedy_matches_offline_across_chunk_boundaries(split):
    a, b, c = ids("abc")
    path = [a, a, a, 0, a, b, b, 0, c, c, 0, 0, c, b]
    lp = logits_for(path)
    dec = StreamingGreedyDecoder(1)
    for s in range(0, len(path), split):
        dec.step(lp[None, s: s + split])
    assert dec.ids[0] == greedy_decode(lp[None])[0] == [a, a, b, c, c, b]


def test_streaming_greedy_batched_and_reset():
    a, b = ids("ab")
    x = torch.stack([logits_for([a, a, b, b]), logits_for([b, 0, b, a])])
    prev = torch.zeros(2, dtype=torch.long)
    first, prev = greedy_chunk(x[:, :2], prev)
    second, prev = greedy_chunk(x[:, 2:], prev)
    assert first == [[a], [b]] and second == [[b], [b, a]]
    dec = StreamingGreedyDecoder(2)
    dec.step(x[:, :2])
    dec.reset(0)
    dec.step(x[:, 2:])
    assert dec.ids == [[b], [b, b, a]]


def test_char_lm_prefers_seen_text_and_is_normalized():
    lm = CharNgramLM(order=4).fit(["the cat sat", "the dog sat", "a cat ran"])
    assert lm.score("the cat sat") > lm.score("tha cet sot")
    for history in ("", "the c", "zzz"):
        total = sum(math.exp(lm.log_prob(history, ch)) for ch in lm.vocab)
        assert total == pytest.approx(1.0, abs=1e-6)


def test_beam_search_without_lm_matches_greedy_on_sharp_logits():
    path = [0] + [i for ch in "hello world" for i in (ids(ch) or [ids(" ")[0]]) + [0]]
    lp = logits_for(path)
    assert prefix_beam_search(lp) == TOK.decode(greedy_decode(lp[None])[0]) == "hello world"
    assert prefix_beam_search(logits_for([0, 0])) == ""


def test_beam_search_lm_fixes_an_ambiguous_character():
    # One frame is torn between 'a' and 'e': "the cet" vs "the cat". The LM knows "cat".
    lm = CharNgramLM(order=5).fit(["the cat sat on the mat"] * 5)
    path = [ids(ch)[0] if ch != " " else ids(" ")[0] for ch in "the cat"]
    x = torch.full((len(path) * 2, V), -8.0)
    for t, i in enumerate(path):
        x[2 * t, i] = 0.0
        x[2 * t + 1, 0] = 0.0
    x[2 * 5, ids("a")[0]] = -0.8  # 'a' slightly less likely than 'e' at the vowel frame
    x[2 * 5, ids("e")[0]] = -0.6
    x = x.log_softmax(-1)
    assert prefix_beam_search(x) == "the cet"
    assert prefix_beam_search(x, lm, BeamConfig(lm_weight=1.0, char_bonus=0.0)) == "the cat"
