"""Moonshine decoded many utterances at a time (asr/moonshine_onnx.py, moonshine_torch.py, moonshine_batch.py):
the tokenizer, the PyTorch decoder read from the bundled .ort file, and the properties batching rests on:
a row's tokens do not depend on its batch, a forced prefix or a draft never changes greedy decoding's
result, and the decoder recognizes the bundled recording."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from speechbench.asr.base import RecognizerUnavailable
from speechbench.asr.moonshine_onnx import Tokenizer, model_dir

pytestmark = pytest.mark.skipif(importlib.util.find_spec("moonshine_voice") is None,
                                reason="moonshine-voice not installed")
SR = 16000


def test_tokenizer_reads_length_prefixed_pieces_with_two_byte_lengths(tmp_path):
    long_piece = "\u2581" + "a" * 200  # 202 bytes: a two-byte length
    pieces = [b"<unk>", b"<s>", b"</s>"] + [bytes([i]) for i in range(256)] + [
        "\u2581hello".encode(), b",", "\u2581world".encode(), long_piece.encode()]
    data = b""
    for p in pieces:
        n = len(p)
        data += (bytes([n]) if n < 128 else bytes([0x80 | (n & 0x7F), n >> 7])) + p
    path = tmp_path / "tokenizer.bin"
    path.write_bytes(data)
    tok = Tokenizer(path)
    assert len(tok) == len(pieces)
    hello, comma, world, longest = 259, 260, 261, 262
    assert tok.decode([1, hello, comma, world, 2]) == "hello, world"  # specials dropped, word starts spaced
    assert tok.decode([longest]) == "a" * 200
    assert tok.decode([3 + ord("x"), 3 + ord("y")]) == "xy"  # byte pieces
    path.write_bytes(data[:-5])
    with pytest.raises(ValueError, match="not a Moonshine tokenizer"):
        Tokenizer(path)


def test_unknown_model_is_unavailable_with_the_known_names():
    with pytest.raises(RecognizerUnavailable, match="moonshine-tiny"):
        model_dir("moonshine-huge")


@pytest.fixture(scope="module")
def batch():
    from speechbench.asr.moonshine_batch import MoonshineBatch

    torch.set_num_threads(2)
    return MoonshineBatch("moonshine-tiny", threads=2)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Pieces of the bundled 10 s recording ("Ever tried. Ever failed. ..."), of different lengths."""
    from speechbench.speech.audio import load_audio
    from speechbench.speech.recorded import assets_dir

    a = load_audio(assets_dir() / "beckett.wav")
    return [a, a[: int(4.1 * SR)], a[int(2.3 * SR): int(7.0 * SR)], a[int(5.2 * SR):], a[: int(1.7 * SR)]]


def test_the_torch_decoder_recognizes_the_bundled_recording(batch, clips):
    from speechbench.streaming.loadgen import wer_counts

    text = batch.transcribe([clips[0]])[0]
    ref = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
    assert wer_counts([ref], [text])["wer"] <= 0.1, text


def test_a_rows_tokens_do_not_depend_on_its_batch(batch, clips):
    alone = [batch.decode([c])[0] for c in clips]
    together = batch.decode(clips)
    assert together == alone
    assert batch.decode(clips[::-1]) == alone[::-1]


def test_forced_prefixes_and_drafts_never_change_greedy_decoding(batch, clips):
    dec = batch.torch_decoder
    hidden = [torch.from_numpy(batch.encode(c)) for c in clips]
    caps = [batch.max_tokens(len(c)) for c in clips]
    free = dec.generate(hidden, [[]] * len(clips), caps)
    # the right draft (all accepted), a wrong one, a partly right one, an empty one, a too-long one
    drafts = [free[0], [7, 8, 9], free[2][:3] + [5], [], free[4] + [11, 12, 13]]
    assert dec.generate(hidden, [[]] * len(clips), caps, drafts) == free
    # a forced prefix that greedy decoding itself starts with: the same continuation after it
    prefixes = [t[: len(t) // 2] for t in free]
    cont = dec.generate(hidden, prefixes, [c - len(p) for c, p in zip(caps, prefixes, strict=True)],
                        [t[len(t) // 2:] for t in free])
    assert [p + c for p, c in zip(prefixes, cont, strict=True)] == free


def test_the_bfloat16_shortlist_picks_the_float32_argmax(batch):
    dec = batch.torch_decoder
    h = torch.randn(64, dec.cfg["dim"]) * 3
    exact = dec.logits(h).argmax(-1)
    saved = dec.shortlist
    try:
        dec.shortlist = dec.w("proj_out.weight").to(torch.bfloat16)
        assert torch.equal(dec.next_tokens(h), exact)
        dec.shortlist = None
        assert torch.equal(dec.next_tokens(h), exact)
    finally:
        dec.shortlist = saved


def test_padding_and_row_order_are_masked_in_cross_attention(batch, clips):
    dec = batch.torch_decoder
    hidden = [torch.from_numpy(batch.encode(c)) for c in clips[:3]]
    cross = dec.cross_kv(hidden)
    for i, h in enumerate(hidden):  # each row's K/V over its own frames equal those computed alone
        alone = dec.cross_kv([h])
        n = h.shape[0]
        assert torch.allclose(cross.k[0][i, :, :n], alone.k[0][0], atol=1e-5)
        assert torch.isinf(cross.mask[i, ..., n:]).all() and (cross.mask[i, ..., :n] == 0).all()


def test_the_batch_recognizer_splits_long_audio_at_pauses(clips):
    from speechbench.asr.moonshine_batch import MoonshineBatchRecognizer

    rec = MoonshineBatchRecognizer("moonshine-tiny", threads=2, max_utterance_s=4.0)
    long = np.concatenate([clips[0], clips[0]])
    text = rec.transcribe([long])[0]
    assert text.lower().count("ever tried") == 2 and text.lower().count("no matter") == 2, text
    assert rec.info()["params"] and "onnxruntime" in rec.backend


def test_audio_too_short_for_the_encoder_is_padded_not_an_error(batch):
    short = [np.zeros(n, np.float32) for n in (1, 300, 900)]
    assert [isinstance(t, list) for t in batch.decode(short + [np.zeros(0, np.float32)])] == [True] * 4


def test_moonshine_base_is_a_part2_recognizer(clips):
    pytest.importorskip("moonshine_cpp")
    from speechbench.asr.registry import available_recognizers, load_recognizer
    from speechbench.streaming.loadgen import wer_counts

    assert available_recognizers()["moonshine-base"] is None
    rec = load_recognizer("moonshine-base", threads=2)
    try:
        text = rec.transcribe([clips[0]])[0]
        ref = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
        assert wer_counts([ref], [text])["wer"] <= 0.2
        assert rec.info()["params"] > 50e6 and rec.batch.decoder_kind == "onnx"
    finally:
        rec.close()
