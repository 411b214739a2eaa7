from __future__ import annotations

import numpy as np
import torch

from speechbench.asr.ctc.training.data import (
    AugmentConfig,
    BucketBatchSampler,
    SpeechDataset,
    active_span,
    augment_waveform,
    collate,
    spec_augment,
    split_by_sentence,
)
from speechbench.speech.audio import save_audio
from speechbench.speech.manifest import Utterance


def utt(i: int, text: str, accent: str = "en-us", path=None, duration: float = 2.0) -> Utterance:
    return Utterance(id=f"u{i}", audio_filepath=f"{i}.wav", text=text, duration=duration, dialect=accent,
                     audio_path=path)


def test_split_keeps_every_validation_sentence_out_of_training():
    texts = [f"Sentence number {i}." for i in range(100)]
    utts = [utt(i * 3 + k, t, a) for i, t in enumerate(texts) for k, a in enumerate(["en-us", "en", "piper"])]
    utts.append(utt(999, "sentence NUMBER 5"))  # same sentence after normalization, other id
    train, val = split_by_sentence(utts, val_fraction=0.1, val_max=50, seed=3)
    train_keys = {u.text.lower().strip(".") for u in train}
    assert val and len({u.text.lower().strip(".") for u in val}) == 10
    assert not train_keys & {u.text.lower().strip(".") for u in val}
    assert len(train) + len(val) == len(utts)
    again = split_by_sentence(utts, val_fraction=0.1, val_max=50, seed=3)
    assert [u.id for u in again[1]] == [u.id for u in val]
    train2, _ = split_by_sentence(utts, 0.1, 50, 3, exclude={"sentence number seven"})
    assert all(u.text != "Sentence number 7." for u in train2)


def test_bucketed_batches_are_seeded_and_cover_every_utterance():
    durations = list(np.random.default_rng(0).uniform(1, 6, 203))
    s = BucketBatchSampler(durations, batch_size=8, seed=1, pool_batches=5)
    b0 = s.batches(0)
    assert b0 == BucketBatchSampler(durations, 8, seed=1, pool_batches=5).batches(0)
    assert b0 != s.batches(1)
    assert sorted(i for b in b0 for i, _ in b) == list(range(203))
    spread = np.mean([np.ptp([durations[i] for i, _ in b]) for b in b0 if len(b) == 8])
    assert spread < 1.5  # sorted pools: similar lengths together (random batches spread ~3.5 s)


def test_waveform_augmentation_is_deterministic_per_seed():
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(8000), 0.3 * rng.standard_normal(16000), np.zeros(8000)])
    audio = audio.astype(np.float32)
    assert active_span(audio) == (8000, 24000)
    cfg = AugmentConfig()
    a = augment_waveform(audio, cfg, np.random.default_rng(5))
    b = augment_waveform(audio, cfg, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.dtype == np.float32 and np.abs(a).max() <= 1.0
    assert not np.array_equal(a, augment_waveform(audio, cfg, np.random.default_rng(6)))


def test_spec_augment_masks_within_lengths():
    feats = torch.zeros(2, 100, 80)
    fill = torch.full((80,), 7.0)
    spec_augment(feats, torch.tensor([100, 50]), AugmentConfig(), fill, torch.Generator().manual_seed(0))
    assert (feats == 7.0).any()
    assert (feats[1, 50:] == 0).all()


def test_dataset_and_collate(tmp_path):
    rng = np.random.default_rng(0)
    utts = []
    for i, text in enumerate(["Hello there.", "It's 5 o'clock!"]):
        wave = 0.1 * rng.standard_normal(8000 + 1000 * i).astype(np.float32)
        path = save_audio(tmp_path / f"{i}.wav", wave)
        utts.append(utt(i, text, path=path))
    utts.append(utt(9, "...", path=utts[0].audio_path))  # empty target: dropped
    ds = SpeechDataset(utts, augment=AugmentConfig())
    assert len(ds) == 2 and ds.texts == ["hello there", "it's five o'clock"]
    batch = collate([ds[(0, 1)], ds[1]])
    assert batch.audio.shape[0] == 2 and batch.audio_lengths[1] == 9000
    assert batch.target_lengths.tolist() == [11, 17] and batch.targets.numel() == 28
