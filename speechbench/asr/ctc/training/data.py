"""Training data for the CTC models: corpora, a sentence-level train/validation split, augmentation, batches.

Audio comes from the shared corpus builder (``speechbench.speech.corpus``), which synthesizes once and
caches by config; here it is only read. Features are computed on the fly in the training loop (after
waveform augmentation, so speed and noise change them), which keeps nothing but WAVs on disk.

Augmentation is drawn from a generator seeded per (run seed, epoch, utterance), so a run is repeatable
whatever the loading order or number of loader workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.fft
import torch

from speechbench.asr.ctc.tokenizer import Tokenizer, normalize_target
from speechbench.speech import SAMPLE_RATE
from speechbench.speech.audio import active_rms, load_audio, peak_limit
from speechbench.speech.conditions import speed
from speechbench.speech.corpus import CorpusConfig
from speechbench.speech.manifest import Utterance

IN_DOMAIN_ACCENTS: tuple[str, ...] = ("en-us", "en", "piper")
"""Accents the models are trained on (American and British espeak-ng, the Piper voice); every other
accent of the evaluation corpus is held out, so Part 2 measures accent robustness on unheard accents."""

# Training corpora (configs of the shared builder). "split": each sentence spoken once, by one of
# 8 seeded speakers per accent. Clean only: noise and speed are added on the fly, differently each epoch.
TRAIN_CORPORA: dict[str, CorpusConfig] = {
    "tiny": CorpusConfig(name="ctc-tiny", accents=("en-us", "en"), sentences="train", num_sentences=40,
                         layout="split", speakers_per_accent=2, seed=1),
    "ctc-4k": CorpusConfig(name="ctc-train", accents=IN_DOMAIN_ACCENTS, sentences="train", num_sentences=4000,
                           layout="split", speakers_per_accent=8),
    "ctc-8k": CorpusConfig(name="ctc-train", accents=IN_DOMAIN_ACCENTS, sentences="train", num_sentences=8000,
                           layout="split", speakers_per_accent=8),
    "ctc-12k": CorpusConfig(name="ctc-train", accents=IN_DOMAIN_ACCENTS, sentences="train",
                            num_sentences=12000, layout="split", speakers_per_accent=8),
    # The same grammar with a ~8,600-word vocabulary instead of ~2,000 (texts._wide_words).
    "ctc-12k-wide": CorpusConfig(name="ctc-train-wide", accents=IN_DOMAIN_ACCENTS, sentences="train-wide",
                                 num_sentences=12000, layout="split", speakers_per_accent=8),
}


@dataclass(frozen=True)
class AugmentConfig:
    speed_factors: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)  # Kaldi-style speed perturbation
    noise_prob: float = 0.5  # share of utterances that get additive noise
    snr_db: tuple[float, float] = (5.0, 30.0)  # uniform range, against the active speech level
    noise_colors: tuple[str, ...] = ("white", "pink")
    gain_db: tuple[float, float] = (-6.0, 6.0)
    # The corpus pads every utterance with 0.5 s of near-silence each side; training keeps a random
    # margin (saves ~15% of the compute on silence) that still reaches the full 0.5 s seen in evaluation.
    trim_margin_s: tuple[float, float] | None = (0.1, 0.5)
    freq_masks: int = 2  # SpecAugment (Park et al. 2019), LibriSpeech "LD" policy scaled down
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_max: int = 30  # frames (10 ms)
    time_mask_frac: float = 0.05  # and at most this share of the utterance per mask

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


NO_AUGMENT = AugmentConfig(speed_factors=(1.0,), noise_prob=0.0, gain_db=(0.0, 0.0), trim_margin_s=None,
                           freq_masks=0, time_masks=0)


# --- split -------------------------------------------------------------------------------------------------


def sentence_key(utt: Utterance) -> str:
    """What makes two utterances 'the same sentence': the normalized target text (stronger than
    sentence_id: two ids with the same words still count as one sentence)."""
    return normalize_target(utt.text)


def split_by_sentence(utts: list[Utterance], val_fraction: float = 0.03, val_max: int = 200, seed: int = 0,
                      exclude: set[str] | None = None) -> tuple[list[Utterance], list[Utterance]]:
    """(train, validation): validation sentences (every utterance of them) never occur in training.

    ``exclude``: normalized texts kept out of training altogether (e.g. an external validation set's).
    Sentences are picked by a seeded hash, so adding utterances does not reshuffle earlier choices.
    """
    exclude = exclude or set()
    keys = sorted({sentence_key(u) for u in utts} - exclude)
    n_val = min(val_max, max(1, round(len(keys) * val_fraction))) if val_fraction > 0 and len(keys) > 1 else 0

    def rank(k: str) -> str:
        return hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()

    val_keys = set(sorted(keys, key=rank)[:n_val])
    train = [u for u in utts if (k := sentence_key(u)) not in val_keys and k not in exclude]
    val = [u for u in utts if sentence_key(u) in val_keys]
    return train, val


# --- augmentation ------------------------------------------------------------------------------------------


def active_span(audio: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -35.0) -> tuple[int, int]:
    """(first, last+1) sample of 10 ms frames within ``threshold_db`` of the loudest frame."""
    hop = sr // 100
    n = len(audio) // hop
    if n == 0:
        return 0, len(audio)
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-20)
    active = np.nonzero(20 * np.log10(rms / rms.max()) > threshold_db)[0]
    if active.size == 0:
        return 0, len(audio)
    return int(active[0]) * hop, int(active[-1] + 1) * hop


def noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise. Pink is shaped at an FFT-friendly length and cropped:
    ``conditions.pink_noise`` transforms the exact length, which for odd lengths costs ~15 ms a clip,
    more than the rest of the augmentation together."""
    if color == "white" or n == 0:
        return rng.standard_normal(n)
    m = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(rng.standard_normal(m))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    out = scipy.fft.irfft(spectrum / np.sqrt(f), m)[:n]
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def augment_noise(audio: np.ndarray, snr_db: float, color: str, rng: np.random.Generator,
              sr: int = SAMPLE_RATE) -> np.ndarray:
    """Training augmentation: additive noise at ``snr_db`` against the active speech level, like
    ``speech.conditions.add_noise`` but unscaled and not peak-limited (the corpus condition scales the sum)."""
    level = active_rms(audio, sr)
    if level == 0:
        return audio
    return (audio + noise(audio.size, color, rng) * (level / 10 ** (snr_db / 20))).astype(np.float32)


def augment_waveform(audio: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
                     sr: int = SAMPLE_RATE) -> np.ndarray:
    if cfg.trim_margin_s is not None:
        start, end = active_span(audio, sr)
        lo, hi = cfg.trim_margin_s
        start = max(0, start - int(rng.uniform(lo, hi) * sr))
        end = min(len(audio), end + int(rng.uniform(lo, hi) * sr))
        audio = audio[start:end]
    factor = float(rng.choice(cfg.speed_factors))
    if factor != 1.0:
        audio = speed(audio, factor, sr)
    if rng.random() < cfg.noise_prob:
        color = str(rng.choice(cfg.noise_colors))
        audio = augment_noise(audio, float(rng.uniform(*cfg.snr_db)), color, rng, sr)
    gain = float(rng.uniform(*cfg.gain_db))
    if gain:
        audio = audio * np.float32(10 ** (gain / 20))
    return peak_limit(audio.astype(np.float32))  # scale, not clip, as the corpus builder does


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, cfg: AugmentConfig, fill: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """Frequency and time masks on (B, T, F) log-mel, in place; masked cells get ``fill`` (the feature
    mean, i.e. zero after the model's normalization)."""
    b, _, f = feats.shape
    for i in range(b):
        t_len = int(lengths[i])
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_mask_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, f - w), (1,), generator=generator))
            feats[i, :t_len, f0: f0 + w] = fill[f0: f0 + w]
        t_max = min(cfg.time_mask_max, int(t_len * cfg.time_mask_frac))
        for _ in range(cfg.time_masks):
            if t_max < 1:
                break
            w = int(torch.randint(0, t_max + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, t_len - w), (1,), generator=generator))
            feats[i, t0: t0 + w, :] = fill
    return feats


# --- dataset and batches -----------------------------------------------------------------------------------


@dataclass
class Example:
    index: int
    audio: np.ndarray
    target: list[int]


@dataclass
class Batch:
    audio: torch.Tensor  # (B, N) zero-padded
    audio_lengths: torch.Tensor
    targets: torch.Tensor  # (sum of target lengths,) concatenated, as ctc_loss takes them
    target_lengths: torch.Tensor
    indices: list[int]


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances -> (audio, target ids). Indexed by ``(index, augment_seed)``; seed -1 = no augmentation."""

    def __init__(self, utts: list[Utterance], tokenizer: Tokenizer | None = None,
                 augment: AugmentConfig | None = None, sample_rate: int = SAMPLE_RATE) -> None:
        self.tokenizer = tokenizer or Tokenizer()
        self.augment = augment
        self.sample_rate = sample_rate
        self.utts = [u for u in utts if normalize_target(u.text)]  # nothing to learn from an empty target
        self.targets = [self.tokenizer.encode(u.text) for u in self.utts]
        self.texts = [normalize_target(u.text) for u in self.utts]
        self.durations = [u.duration if np.isfinite(u.duration) else 0.0 for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key: int | tuple[int, int]) -> Example:
        index, seed = key if isinstance(key, tuple) else (key, -1)
        utt = self.utts[index]
        audio = load_audio(utt.audio_path or utt.audio_filepath, self.sample_rate)
        if self.augment is not None and seed >= 0:
            audio = augment_waveform(audio, self.augment, np.random.default_rng(seed), self.sample_rate)
        return Example(index, audio, self.targets[index])


def collate(examples: list[Example]) -> Batch:
    lengths = torch.tensor([len(e.audio) for e in examples], dtype=torch.long)
    audio = torch.zeros(len(examples), int(lengths.max()))
    for i, e in enumerate(examples):
        audio[i, : len(e.audio)] = torch.from_numpy(e.audio)
    targets = torch.tensor([t for e in examples for t in e.target], dtype=torch.long)
    target_lengths = torch.tensor([len(e.target) for e in examples], dtype=torch.long)
    return Batch(audio, lengths, targets, target_lengths, [e.index for e in examples])


class BucketBatchSampler:
    """Endless, seeded, length-bucketed batches of ``(index, augment_seed)``.

    Each epoch: shuffle, cut into pools of ``pool_batches`` batches, sort each pool by duration, cut into
    batches, shuffle the batches. Similar lengths share a batch (little padding) while the order stays random.
    """

    def __init__(self, durations: list[float], batch_size: int, seed: int = 0, pool_batches: int = 50,
                 augment: bool = True) -> None:
        if not durations:
            raise ValueError("no training utterances")
        self.durations = np.asarray(durations)
        self.batch_size = batch_size
        self.seed = seed
        self.pool = batch_size * pool_batches
        self.augment = augment
        self.epoch = 0

    def batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.durations))
        out: list[list[int]] = []
        for start in range(0, len(order), self.pool):
            pool = order[start: start + self.pool]
            pool = pool[np.argsort(self.durations[pool], kind="stable")]
            out.extend(pool[i: i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size))
        rng.shuffle(out)  # type: ignore[arg-type]
        n = len(self.durations)

        def aug_seed(i: int) -> int:
            return (self.seed * 1_000_003 + epoch * n + i) % (2**63) if self.augment else -1

        return [[(i, aug_seed(i)) for i in batch] for batch in out]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            yield from self.batches(self.epoch)
            self.epoch += 1


def eval_batches(durations: list[float], batch_size: int) -> list[list[int]]:
    """Validation batches: sorted by length (least padding), no augmentation."""
    order = np.argsort(np.asarray(durations), kind="stable").tolist()
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def corpus_hours(utts: list[Utterance]) -> dict[str, float]:
    """Audio hours per accent (dialect), for the model card."""
    out: dict[str, float] = {}
    for u in utts:
        if np.isfinite(u.duration):
            out[u.dialect] = out.get(u.dialect, 0.0) + u.duration / 3600
    return {k: round(v, 3) for k, v in sorted(out.items())}
