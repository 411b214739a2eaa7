"""80-bin log-mel features, offline and streaming, frame for frame the same.

Framing is causal and hop-aligned: the signal is preceded by ``win_length - hop_length`` zeros, so frame
t covers samples [(t+1)*hop - win, (t+1)*hop) and N samples give exactly N // hop frames. Why: a
streaming client that sends k*hop samples gets exactly k new frames each time, every stream advances in
lock step (a 320 ms chunk is always 32 frames), and the model's state tensors keep one shape, so states
of many streams stack into one batch (Part 3). The offline extractor uses the same framing, so a model
trained offline sees the very features a stream produces.

Normalization is a fixed global per-bin mean/std computed from training data and stored in the model
(``CTCModel.feat_mean``/``feat_std``), not per-utterance statistics, which a stream cannot know until
the utterance ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms at 16 kHz
    win_length: int = 400
    hop_length: int = 160  # 10 ms
    n_mels: int = 80
    f_min: float = 20.0
    f_max: float = 7600.0  # below Nyquist: the telephone condition and resamplers leave the top edge empty
    log_floor: float = 1e-6  # power floor before the log: digital silence would otherwise be -inf

    @property
    def left_context(self) -> int:
        """Samples of zeros before the signal (the part of a window reaching back before sample 0)."""
        return self.win_length - self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LogMel(nn.Module):
    """Waveforms (B, N) -> log-mel (B, N // hop, n_mels). No parameters; deterministic."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
            hop_length=cfg.hop_length, f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels,
            power=2.0, center=False,  # framing is done here (left context), not by torch.stft
        )

    def frames(self, padded: torch.Tensor) -> torch.Tensor:
        """Log-mel of audio that already carries its left context: every complete window, (B, T, n_mels)."""
        if padded.shape[-1] < self.cfg.win_length:
            return padded.new_zeros(*padded.shape[:-1], 0, self.cfg.n_mels)
        spec = self.mel(padded)  # (B, n_mels, T)
        return torch.log(spec.clamp_min(self.cfg.log_floor)).transpose(-1, -2)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) float waveforms (zero-padded past ``lengths``) -> (features, frame lengths)."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[-1], dtype=torch.long)
        padded = torch.nn.functional.pad(wave, (self.cfg.left_context, 0))
        # frames() returns (N + left - win) // hop + 1 == N // hop frames
        feats = self.frames(padded)
        return feats, torch.div(lengths, self.cfg.hop_length, rounding_mode="floor")


def waveforms_to_batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of 1-D float arrays -> zero-padded (B, N) tensor and lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.as_tensor(np.asarray(w, dtype=np.float32))
    return batch, lengths


class StreamingLogMel:
    """One stream's features, chunk by chunk: same frames as ``LogMel`` on the concatenated audio.

    Keeps the last ``win - hop`` samples (plus any remainder shorter than a hop) between calls, starting
    from the same zeros the offline extractor puts before the signal. Audio chunks may be any size.
    """

    def __init__(self, cfg: FeatureConfig = FeatureConfig(), extractor: LogMel | None = None) -> None:
        self.cfg = cfg
        self.extractor = extractor or LogMel(cfg)
        self.reset()

    def reset(self) -> None:
        self._buf = torch.zeros(self.cfg.left_context)
        self.frames_out = 0

    def accept(self, chunk: np.ndarray | torch.Tensor) -> torch.Tensor:
        """New frames (T, n_mels) for this chunk of samples; T may be 0."""
        chunk = torch.as_tensor(np.asarray(chunk, dtype=np.float32)).reshape(-1)
        buf = torch.cat([self._buf, chunk])
        win, hop = self.cfg.win_length, self.cfg.hop_length
        n = (buf.numel() - win) // hop + 1 if buf.numel() >= win else 0
        if n <= 0:
            self._buf = buf
            return torch.zeros(0, self.cfg.n_mels)
        used = (n - 1) * self.cfg.hop_length + self.cfg.win_length
        with torch.no_grad():
            feats = self.extractor.frames(buf[:used].unsqueeze(0))[0]
        self._buf = buf[n * self.cfg.hop_length:].clone()  # the next window starts n hops in
        self.frames_out += n
        return feats
