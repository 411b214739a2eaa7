"""Character CTC models: the seed's conv + LSTM recipe, offline (bidirectional) and streaming (causal).

Shape of every model (``ModelConfig``): global feature normalization (mean/std buffers, saved with the
weights) -> two Conv2d 3x3, stride 2 in frequency and ``time_strides`` in time, ReLU (x2 time subsampling
by default: 10 ms frames in, 20 ms out) -> a linear projection of the flattened conv map -> LSTM -> linear
head over 29 symbols.

Why x2 and not the seed's x4: characters come at up to ~15 per second and CTC needs a blank between
repeated letters, so 40 ms frames leave ~1.3 frames per character (measured on the training corpus,
median) and as little as 1.0 for the fast Piper voice. Two x4 runs stayed on the all-blank plateau for
1,000+ steps (CER 90%, logs in models/failed-runs/); x2 doubles the slack, as
DeepSpeech 2 found for character outputs.

The projection is our addition to the seed's SimpleASRModel: without it the first LSTM layer takes
channels x 20 frequency bins (2,560 inputs for the seed's 128 channels) and holds most of the weights.

Streaming (``causal=True``): the convs pad only on the left in time, so an output frame depends on no
input frame after its own last one (no look-ahead), and the LSTM is unidirectional. ``forward_chunk``
carries each conv's unconsumed input frames and the LSTM (h, c) in a ``StreamState`` and gives, over
any split of an utterance into chunks, the same outputs as ``forward`` on the whole utterance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechbench.asr.ctc.tokenizer import CHARS

KERNEL = 3
STRIDE = 2  # in frequency always; in time per ModelConfig.time_strides


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small"
    n_mels: int = 80
    vocab_size: int = len(CHARS) + 1
    conv_channels: tuple[int, int] = (32, 32)
    proj: int = 192  # LSTM input size
    hidden: int = 192  # per direction
    layers: int = 2
    bidirectional: bool = True
    causal: bool = False  # left-only time padding in the convs; needs bidirectional=False to stream
    dropout: float = 0.15
    layer_norm: bool = False  # LayerNorm on the LSTM input (per frame, so it streams); off: no gain measured
    time_strides: tuple[int, int] = (2, 1)  # conv1, conv2 in time: x2 subsampling (see the module doc)
    # A skip connection around the LSTM stack (the head sees LSTM output + LSTM input). Without it the
    # LSTM sat on CTC's blank plateau for 1,000+ steps; with it a 2 x 128 probe overfitting 32 utterances
    # reached loss 1.0 in 100 steps, against 2.9 (no progress) without. Per frame, so it streams.
    residual: bool = True

    def validate(self) -> None:
        if self.causal and self.bidirectional:
            raise ValueError("a causal (streaming) model cannot have a bidirectional LSTM")
        if len(self.conv_channels) != 2 or len(self.time_strides) != 2:
            raise ValueError("two conv layers are expected")
        if any(s not in (1, 2) for s in self.time_strides):
            raise ValueError(f"time strides must be 1 or 2, got {self.time_strides}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("conv_channels", "time_strides"):
            if key in d:
                d[key] = tuple(d[key])
        d.setdefault("time_strides", (2, 2))  # checkpoints from before the field existed were x4
        d.setdefault("residual", False)  # ... and had no skip connection
        return cls(**d)


# Rescaled from the seed (hidden 128/256/512, 2/4/8 layers, 64/128 conv channels) to fit a 2-core CPU
# training budget of 10-25 minutes each; see models/README.md for the measurements behind the choice.
SIZES: dict[str, ModelConfig] = {
    "small": ModelConfig(name="small", conv_channels=(32, 32), proj=192, hidden=192, layers=2),
    "medium": ModelConfig(name="medium", conv_channels=(32, 32), proj=256, hidden=256, layers=3),
    "large": ModelConfig(name="large", conv_channels=(32, 64), proj=320, hidden=320, layers=3),
    # 3 x 256 rather than 320: x2 subsampling doubles the LSTM's frames, and steps limit these models more
    # than size does.
    "streaming": ModelConfig(name="streaming", conv_channels=(32, 32), proj=256, hidden=256, layers=3,
                             bidirectional=False, causal=True),
}


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of a (B, T, D) batch within its own length; padding frames stay in place.
    Its own inverse."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


class BiLSTM(nn.Module):
    """A bidirectional LSTM stack over padded batches, without packing.

    Same function as ``nn.LSTM(bidirectional=True)`` on a ``PackedSequence`` (a test checks it), but each
    direction is a plain unidirectional LSTM over a padded batch: the backward one runs on every sequence
    reversed within its length, so its padding comes after the valid frames and cannot reach them.
    Why: packed LSTMs on CPU took 5.7x longer per training step (forward + backward, 2 x 192, batch 16,
    2.5 s utterances: 3.8 s against 0.66 s), which decided how far the offline models could train here.
    """

    def __init__(self, input_size: int, hidden: int, layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden] * (layers - 1)
        self.fw = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes)
        self.bw = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(dropout)  # between layers, as nn.LSTM's dropout

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for i, (fw, bw) in enumerate(zip(self.fw, self.bw, strict=True)):
            if i > 0:
                x = self.dropout(x)
            y_fw, _ = fw(x)
            y_bw, _ = bw(reverse_within_length(x, lengths))
            x = torch.cat([y_fw, reverse_within_length(y_bw, lengths)], dim=-1)
        return x


def conv_out_len(n: torch.Tensor | int) -> torch.Tensor | int:
    """Frames out of one stride-2, kernel-3 conv with 2 frames of padding (either side or left only)."""
    return (n - 1) // STRIDE + 1 if not isinstance(n, int) else max(0, (n - 1) // STRIDE + 1)


@dataclass
class StreamState:
    """Per-stream carry-over between chunks, batched on dim 0 (caches) / dim 1 (LSTM states).

    cache1: (B, 1, k, n_mels) normalized input frames conv1 has not consumed (starts as 2 zero frames,
    the left padding); cache2: (B, C1, k, n_mels/2) the same for conv2; h, c: (layers, B, hidden).
    When every chunk is a multiple of the model's subsampling (frames), k stays 2, so states of different
    streams have equal shapes and stack into one batch.
    """

    cache1: torch.Tensor
    cache2: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.h.shape[1]

    def select(self, index: torch.Tensor | list[int]) -> StreamState:
        """Gather the states of some streams (a new, smaller batch)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.h.device)
        return StreamState(self.cache1.index_select(0, idx), self.cache2.index_select(0, idx),
                           self.h.index_select(1, idx), self.c.index_select(1, idx))

    def scatter_(self, index: torch.Tensor | list[int], other: StreamState) -> None:
        """Write ``other`` (a batch of len(index) streams) back into slots ``index`` of this one, in place."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.h.device)
        if other.cache1.shape[2] != self.cache1.shape[2] or other.cache2.shape[2] != self.cache2.shape[2]:
            raise ValueError("conv cache lengths differ: feed chunks of a multiple of model.subsampling frames "
                             "to every stream")
        self.cache1.index_copy_(0, idx, other.cache1)
        self.cache2.index_copy_(0, idx, other.cache2)
        self.h.index_copy_(1, idx, other.h)
        self.c.index_copy_(1, idx, other.c)

    @staticmethod
    def stack(states: list[StreamState]) -> StreamState:
        lengths = {(s.cache1.shape[2], s.cache2.shape[2]) for s in states}
        if len(lengths) > 1:
            raise ValueError(f"conv cache lengths differ across streams {sorted(lengths)}: feed chunks of a "
                             "multiple of model.subsampling frames to every stream")
        return StreamState(torch.cat([s.cache1 for s in states]), torch.cat([s.cache2 for s in states]),
                           torch.cat([s.h for s in states], 1), torch.cat([s.c for s in states], 1))

    def unbind(self) -> list[StreamState]:
        return [self.select([i]) for i in range(self.batch_size)]


class CTCModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c1, c2 = cfg.conv_channels
        time_pad = 0 if cfg.causal else 1  # causal: the left padding is added by hand (or by the cache)
        s1, s2 = cfg.time_strides
        self.conv1 = nn.Conv2d(1, c1, KERNEL, stride=(s1, STRIDE), padding=(time_pad, 1))
        self.conv2 = nn.Conv2d(c1, c2, KERNEL, stride=(s2, STRIDE), padding=(time_pad, 1))
        freq = conv_out_len(conv_out_len(cfg.n_mels))
        self.proj = nn.Linear(c2 * freq, cfg.proj)
        self.norm = nn.LayerNorm(cfg.proj) if cfg.layer_norm else nn.Identity()
        dropout = cfg.dropout if cfg.layers > 1 else 0.0
        self.lstm: nn.Module = (BiLSTM(cfg.proj, cfg.hidden, cfg.layers, dropout) if cfg.bidirectional else
                                nn.LSTM(cfg.proj, cfg.hidden, cfg.layers, batch_first=True, dropout=dropout))
        self.dropout = nn.Dropout(cfg.dropout)
        out_dim = cfg.hidden * (2 if cfg.bidirectional else 1)
        self.skip: nn.Module | None = None
        if cfg.residual:
            self.skip = nn.Identity() if out_dim == cfg.proj else nn.Linear(cfg.proj, out_dim, bias=False)
        self.head = nn.Linear(out_dim, cfg.vocab_size)
        # Global feature statistics (set from training data); identity until then.
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.n_mels))

    @property
    def subsampling(self) -> int:
        """Input (10 ms) frames per output frame; streaming chunks must be a multiple of it."""
        return self.cfg.time_strides[0] * self.cfg.time_strides[1]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp_min(1e-3))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        s1, s2 = self.cfg.time_strides
        return ((lengths - 1) // s1 + 1 - 1) // s2 + 1

    def _normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.feat_mean) / self.feat_std

    @staticmethod
    def _mask_time(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero frames past each utterance's end, so a batch gives the same result as one at a time."""
        t = torch.arange(x.shape[2], device=x.device)
        return x * (t[None, :] < lengths[:, None]).to(x.dtype)[:, None, :, None]

    def _conv_out(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T', F') -> (B, T', C*F') -> projection."""
        b, c, t, f = x.shape
        return self.norm(self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f)))

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) log-mel + frame lengths -> (B, T/subsampling, vocab) log-probs + output lengths."""
        lengths = lengths.to(feats.device)
        x = self._mask_time(self._normalize(feats).unsqueeze(1), lengths)
        s1, s2 = self.cfg.time_strides
        l1 = (lengths - 1) // s1 + 1
        if self.cfg.causal:
            x = F.pad(x, (0, 0, KERNEL - 1, 0))
        x = self._mask_time(F.relu(self.conv1(x)), l1)
        l2 = (l1 - 1) // s2 + 1
        if self.cfg.causal:
            x = F.pad(x, (0, 0, KERNEL - 1, 0))
        x = self._mask_time(F.relu(self.conv2(x)), l2)
        x = self.dropout(self._conv_out(x))
        if self.cfg.bidirectional:
            y = self.lstm(x, l2)  # the backward direction starts at each utterance's own end
        else:
            y, _ = self.lstm(x)  # causal: padding at the end cannot reach earlier frames
        if self.skip is not None:
            y = y + self.skip(x)
        y = self.head(self.dropout(y))
        return y.log_softmax(-1), l2

    # --- streaming ------------------------------------------------------------------------------------

    def init_state(self, batch: int = 1, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> StreamState:
        if not self.cfg.causal:
            raise RuntimeError(f"model {self.cfg.name!r} is bidirectional (offline); it cannot stream")
        c1, _ = self.cfg.conv_channels
        device = device if device is not None else self.feat_mean.device
        f1 = conv_out_len(self.cfg.n_mels)
        return StreamState(
            torch.zeros(batch, 1, KERNEL - 1, self.cfg.n_mels, device=device, dtype=dtype),
            torch.zeros(batch, c1, KERNEL - 1, f1, device=device, dtype=dtype),
            torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device, dtype=dtype),
            torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device, dtype=dtype),
        )

    @staticmethod
    def _conv_step(conv: nn.Conv2d, cache: torch.Tensor, x: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run a causal strided conv over cache + new frames; return (outputs, new cache)."""
        x = torch.cat([cache, x], dim=2)
        stride = conv.stride[0]
        n = (x.shape[2] - KERNEL) // stride + 1 if x.shape[2] >= KERNEL else 0
        if n == 0:
            return x.new_zeros(x.shape[0], conv.out_channels, 0, conv_out_len(x.shape[3])), x
        y = F.relu(conv(x[:, :, : stride * (n - 1) + KERNEL]))
        return y, x[:, :, stride * n:]

    def forward_chunk(self, feats: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """(B, t, n_mels) new log-mel frames of B streams + their states -> (B, t', vocab) log-probs, states.

        Any t works for one stream; for B > 1 every stream must bring the same t. With t a multiple of
        ``subsampling`` every chunk yields exactly t/subsampling outputs and the state shapes never change.
        """
        if feats.shape[0] != state.batch_size:
            raise ValueError(f"{feats.shape[0]} chunks for {state.batch_size} states")
        x = self._normalize(feats).unsqueeze(1)
        y1, cache1 = self._conv_step(self.conv1, state.cache1, x)
        y2, cache2 = self._conv_step(self.conv2, state.cache2, y1)
        if y2.shape[2] == 0:
            out = feats.new_zeros(feats.shape[0], 0, self.cfg.vocab_size)
            return out, StreamState(cache1, cache2, state.h, state.c)
        x = self._conv_out(y2)
        z, (h, c) = self.lstm(x, (state.h, state.c))
        if self.skip is not None:
            z = z + self.skip(x)
        return self.head(z).log_softmax(-1), StreamState(cache1, cache2, h, c)


def build_ctc_model(size: str | ModelConfig) -> CTCModel:
    cfg = size if isinstance(size, ModelConfig) else SIZES[size]
    return CTCModel(cfg)
