from __future__ import annotations

import numpy as np
import pytest
import torch

from speechbench.asr.ctc.features import FeatureConfig, LogMel, StreamingLogMel, waveforms_to_batch

CFG = FeatureConfig()


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2 + 123) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_offline_frame_count_and_shape(audio):
    feats, lengths = LogMel(CFG)(torch.from_numpy(audio))
    assert feats.shape == (1, len(audio) // CFG.hop_length, CFG.n_mels)
    assert int(lengths[0]) == feats.shape[1] and torch.isfinite(feats).all()
    assert LogMel(CFG)(torch.zeros(1, 100))[0].shape == (1, 0, CFG.n_mels)


@pytest.mark.parametrize("chunking", ["hop", "random", "tiny", "whole"])
def test_streaming_features_equal_offline(audio, chunking):
    offline = LogMel(CFG)(torch.from_numpy(audio))[0][0]
    stream = StreamingLogMel(CFG)
    rng = np.random.default_rng(1)
    sizes = {"hop": lambda: 3 * CFG.hop_length, "random": lambda: int(rng.integers(1, 4000)),
             "tiny": lambda: 37, "whole": lambda: len(audio)}[chunking]
    out, i = [], 0
    while i < len(audio):
        n = sizes()
        out.append(stream.accept(audio[i: i + n]))
        i += n
    online = torch.cat(out)
    assert online.shape == offline.shape
    torch.testing.assert_close(online, offline, atol=1e-4, rtol=1e-5)
    assert stream.frames_out == offline.shape[0]


def test_hop_aligned_chunks_give_a_fixed_frame_count(audio):
    stream = StreamingLogMel(CFG)
    chunk = 32 * CFG.hop_length  # 320 ms
    counts = [stream.accept(audio[i: i + chunk]).shape[0] for i in range(0, chunk * 5, chunk)]
    assert counts == [32] * 5


def test_batched_offline_equals_one_at_a_time(audio):
    waves = [audio, audio[:9000], audio[5000:20000]]
    batch, lengths = waveforms_to_batch(waves)
    feats, flen = LogMel(CFG)(batch, lengths)
    for i, w in enumerate(waves):
        single = LogMel(CFG)(torch.from_numpy(w))[0][0]
        torch.testing.assert_close(feats[i, : int(flen[i])], single, atol=1e-4, rtol=1e-5)
