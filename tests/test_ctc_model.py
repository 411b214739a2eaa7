from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechbench.asr.ctc.model import (
    SIZES,
    BiLSTM,
    CTCModel,
    ModelConfig,
    StreamState,
    build_ctc_model,
    reverse_within_length,
)

# Small widths keep the test fast; the streaming logic does not depend on size.
STREAM_CFG = ModelConfig(name="t", conv_channels=(8, 8), proj=32, hidden=32, layers=2, bidirectional=False,
                         causal=True)


@pytest.fixture(scope="module")
def streaming() -> CTCModel:
    torch.manual_seed(0)
    m = CTCModel(STREAM_CFG).eval()
    m.set_feature_stats(torch.randn(80), torch.rand(80) + 0.5)
    return m


def test_sizes_build_and_output_lengths():
    for name, cfg in SIZES.items():
        m = build_ctc_model(name)
        assert m.cfg == cfg and m.num_params > 0
    m = build_ctc_model("small").eval()
    assert m.subsampling == 2
    lengths = torch.tensor([0, 1, 4, 5, 8, 301])
    assert m.output_lengths(lengths).tolist() == [0, 1, 2, 3, 4, 151]
    with torch.no_grad():
        lp, olen = m(torch.randn(2, 301, 80), torch.tensor([301, 150]))
    assert lp.shape == (2, 151, 29) and olen.tolist() == [151, 75]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 151), atol=1e-5)
    x4 = CTCModel(ModelConfig(time_strides=(2, 2)))
    assert x4.subsampling == 4 and x4.output_lengths(lengths).tolist() == [0, 1, 1, 2, 2, 76]


def test_offline_batch_equals_one_at_a_time():
    torch.manual_seed(0)
    m = CTCModel(ModelConfig(conv_channels=(8, 8), proj=32, hidden=32, layers=2)).eval()
    feats = torch.randn(3, 120, 80)
    lengths = torch.tensor([120, 77, 31])
    with torch.no_grad():
        lp, olen = m(feats, lengths)
        for i in range(3):
            single, sl = m(feats[i: i + 1, : lengths[i]], lengths[i: i + 1])
            torch.testing.assert_close(lp[i, : int(olen[i])], single[0], atol=1e-5, rtol=1e-5)


def test_bilstm_equals_packed_nn_lstm_on_same_weights():
    """The unpacked BiLSTM is an exact re-implementation of a packed bidirectional nn.LSTM."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(12, 16, 2, batch_first=True, bidirectional=True).eval()
    ours = BiLSTM(12, 16, 2).eval()
    with torch.no_grad():
        for layer in range(2):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ours.fw[layer], f"{name}_l0").copy_(getattr(ref, f"{name}_l{layer}"))
                getattr(ours.bw[layer], f"{name}_l0").copy_(getattr(ref, f"{name}_l{layer}_reverse"))
    x = torch.randn(4, 30, 12)
    lengths = torch.tensor([30, 17, 1, 25])
    with torch.no_grad():
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        want, _ = pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=30)
        got = ours(x, lengths)
    valid = torch.arange(30)[None, :] < lengths[:, None]
    torch.testing.assert_close(got[valid], want[valid], atol=1e-6, rtol=1e-5)
    assert torch.equal(reverse_within_length(reverse_within_length(x, lengths), lengths), x)


@pytest.mark.parametrize("strides", [(2, 1), (2, 2)])
@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 16, 32])
def test_chunked_causal_forward_equals_whole_utterance(chunk, strides):
    torch.manual_seed(0)
    streaming = CTCModel(replace(STREAM_CFG, time_strides=strides)).eval()
    streaming.set_feature_stats(torch.randn(80), torch.rand(80) + 0.5)
    torch.manual_seed(1)
    feats = torch.randn(1, 203, 80)
    with torch.no_grad():
        whole, olen = streaming(feats, torch.tensor([203]))
        state, outs = streaming.init_state(1), []
        for s in range(0, 203, chunk):
            out, state = streaming.forward_chunk(feats[:, s: s + chunk], state)
            outs.append(out)
    chunked = torch.cat(outs, dim=1)
    assert chunked.shape == whole.shape == (1, int(olen[0]), 29)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_batched_streaming_step_equals_per_stream_steps(streaming):
    torch.manual_seed(2)
    n, chunk, steps = 4, 8, 3
    feats = torch.randn(n, chunk * steps, 80)
    with torch.no_grad():
        singles = []
        for i in range(n):
            st, outs = streaming.init_state(1), []
            for k in range(steps):
                o, st = streaming.forward_chunk(feats[i: i + 1, k * chunk: (k + 1) * chunk], st)
                outs.append(o)
            singles.append(torch.cat(outs, 1))
        # A pool of per-stream slots; each step gathers some streams, runs them together, scatters back.
        pool = StreamState.stack([streaming.init_state(1) for _ in range(n)])
        outs = [[] for _ in range(n)]
        for k in range(steps):
            for group in ([0, 2], [1, 3]) if k % 2 == 0 else ([3, 2, 1, 0],):
                st = pool.select(group)
                o, st = streaming.forward_chunk(feats[group, k * chunk: (k + 1) * chunk], st)
                pool.scatter_(group, st)
                for j, i in enumerate(group):
                    outs[i].append(o[j: j + 1])
    for i in range(n):
        torch.testing.assert_close(torch.cat(outs[i], 1), singles[i], atol=1e-5, rtol=1e-5)


def test_state_stack_unbind_round_trip(streaming):
    states = [streaming.init_state(1) for _ in range(3)]
    for i, s in enumerate(states):
        s.h += i
    stacked = StreamState.stack(states)
    assert stacked.batch_size == 3
    for i, s in enumerate(stacked.unbind()):
        assert torch.equal(s.h, states[i].h)
    with torch.no_grad():
        _, odd = streaming.forward_chunk(torch.randn(1, 3, 80), streaming.init_state(1))
    with pytest.raises(ValueError, match="multiple of model.subsampling"):
        StreamState.stack([odd, streaming.init_state(1)])


def test_offline_model_refuses_to_stream():
    with pytest.raises(RuntimeError, match="cannot stream"):
        build_ctc_model("small").init_state(1)
    with pytest.raises(ValueError):
        ModelConfig(causal=True, bidirectional=True).validate()
