"""The seed's ``SimpleTTSModel`` (kept faithful) and an explicit character tokenizer.

Architecture (the seed's): character embedding (vocab 256) -> 6-layer Transformer encoder (hidden 512,
8 heads, FF 2048, post-norm, ReLU; no positional encoding) -> autoregressive 6-layer Transformer decoder
over mel frames (a linear mel embedding in, a mel projection and a stop head out) -> a 3-layer
transposed-conv "vocoder" that upsamples 8x.

The module layout is kept identical to the seed's so a seed ``state_dict`` loads unchanged, and the
optimized engine loads the *same* state_dict into its own cached decoder.
"""

from __future__ import annotations

import logging
import unicodedata
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TTSModelConfig:
    vocab_size: int = 256
    hidden_dim: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ff_dim: int = 2048  # nn.Transformer*Layer's default, which the seed relied on
    mel_dim: int = 80
    # Audio framing used to turn frame counts into seconds (RTF): 22.05 kHz, hop 256 ~ 86 frames/s.
    sample_rate: int = 22050
    hop_length: int = 256

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


class SimpleTTSModel(nn.Module):
    """The seed's autoregressive transformer TTS (same submodule names, same shapes)."""

    def __init__(self, config: TTSModelConfig | None = None):
        super().__init__()
        cfg = config or TTSModelConfig()
        self.config = cfg
        self.vocab_size, self.hidden_dim, self.mel_dim = cfg.vocab_size, cfg.hidden_dim, cfg.mel_dim

        self.text_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_dim)
        with warnings.catch_warnings():
            # enable_nested_tensor warns when it cannot apply; it is an encoder fast path, not semantics.
            warnings.simplefilter("ignore", UserWarning)
            self.text_encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(cfg.hidden_dim, nhead=cfg.num_heads, dim_feedforward=cfg.ff_dim,
                                           batch_first=True),
                num_layers=cfg.num_layers,
            )
        self.mel_embedding = nn.Linear(cfg.mel_dim, cfg.hidden_dim)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(cfg.hidden_dim, nhead=cfg.num_heads, dim_feedforward=cfg.ff_dim,
                                       batch_first=True),
            num_layers=cfg.num_layers,
        )
        self.mel_projection = nn.Linear(cfg.hidden_dim, cfg.mel_dim)
        self.stop_token = nn.Linear(cfg.hidden_dim, 1)
        self.vocoder = nn.Sequential(
            nn.ConvTranspose1d(cfg.mel_dim, 256, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose1d(256, 128, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose1d(128, 1, 4, 2, 1),
            nn.Tanh(),
        )

    # -- pieces -----------------------------------------------------------------------------------

    def encode_text(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) tokens -> (B, S, H). ``padding_mask`` is True at pad positions (absent in the seed)."""
        with warnings.catch_warnings():
            # With a padding mask the encoder's fast path builds nested tensors and warns that the API is
            # a prototype; the result is the same as the masked slow path.
            warnings.simplefilter("ignore", UserWarning)
            return self.text_encoder(self.text_embedding(tokens), src_key_padding_mask=padding_mask)

    def decoder_step_full(
        self,
        mel_frames: torch.Tensor,
        memory: torch.Tensor,
        causal: bool,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the decoder over the whole prefix and return (next mel, stop logit) from the last position.

        ``causal=False`` is the seed's behaviour (no target mask: earlier positions attend to later frames).
        """
        t = mel_frames.size(1)
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(t, device=mel_frames.device) if causal else None
        out = self.decoder(
            self.mel_embedding(mel_frames), memory, tgt_mask=tgt_mask, tgt_is_causal=causal,
            memory_key_padding_mask=memory_padding_mask,
        )
        last = out[:, -1:, :]
        return self.mel_projection(last), self.stop_token(last)

    def vocoder_inference(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, mel_dim) -> (B, 8T) waveform. A toy vocoder: its sample count is not a duration."""
        return self.vocoder(mel.transpose(1, 2)).squeeze(1)

    def teacher_forced(self, tokens: torch.Tensor, mel_target: torch.Tensor, causal: bool = True):
        """Training-mode pass (the seed's ``forward`` with ``mel_target``), causal by default."""
        memory = self.encode_text(tokens)
        inp = mel_target[:, :-1, :]
        t = inp.size(1)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=inp.device) if causal else None
        out = self.decoder(self.mel_embedding(inp), memory, tgt_mask=mask, tgt_is_causal=causal)
        return self.mel_projection(out), self.stop_token(out)


def build_tts_model(seed: int = 0, checkpoint: str | None = None,
                    config: TTSModelConfig | None = None) -> SimpleTTSModel:
    """Seeded random weights (the seed's setting), or a state_dict from ``checkpoint``."""
    torch.manual_seed(seed)
    model = SimpleTTSModel(config)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {checkpoint} does not match SimpleTTSModel: missing={missing[:5]} "
                f"unexpected={unexpected[:5]}"
            )
        log.info("loaded TTS checkpoint %s", checkpoint)
    return model.eval()


# ------------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------------


class TextError(ValueError):
    """Input text the engine refuses (empty, whitespace only)."""


@dataclass
class Tokenized:
    ids: list[int]
    text: str  # the text the ids encode, after lowercasing and truncation
    truncated_from: int | None = None  # original character count when truncated
    non_ascii: int = 0  # characters outside ASCII, folded by the policy


class CharTokenizer:
    """The seed's character tokenizer, explicit about what it does to text it cannot represent.

    The seed maps ``ord(c) % 256`` after lowercasing, so a non-Latin-1 character silently aliases an
    unrelated one ("—", U+2014, becomes token 20). ``non_ascii="fold"`` keeps that behaviour (the
    baseline's, so outputs stay comparable) and *counts* what was folded; ``"ascii"`` first transliterates
    with NFKD and drops what is left; ``"error"`` refuses such text.
    """

    def __init__(self, vocab_size: int = 256, max_tokens: int = 1000, non_ascii: str = "fold"):
        if non_ascii not in ("fold", "ascii", "error"):
            raise ValueError(f"non_ascii must be fold|ascii|error, got {non_ascii!r}")
        self.vocab_size, self.max_tokens, self.non_ascii = vocab_size, max_tokens, non_ascii

    def __call__(self, text: str) -> Tokenized:
        if not isinstance(text, str):
            raise TextError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise TextError("empty text: nothing to synthesize")
        n_non_ascii = sum(1 for c in text if ord(c) > 127)
        if n_non_ascii and self.non_ascii == "error":
            raise TextError(f"text has {n_non_ascii} non-ASCII characters and non_ascii='error'")
        if n_non_ascii and self.non_ascii == "ascii":
            text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
            if not text.strip():
                raise TextError("text is empty after dropping non-ASCII characters")
        text = text.lower()
        truncated_from = None
        if len(text) > self.max_tokens:
            truncated_from = len(text)
            log.warning("text of %d characters truncated to max_tokens=%d", len(text), self.max_tokens)
            text = text[: self.max_tokens]
        ids = [ord(c) % self.vocab_size for c in text]
        return Tokenized(ids=ids, text=text, truncated_from=truncated_from, non_ascii=n_non_ascii)


def pad_batch(seqs: list[list[int]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists -> (tokens (B, S), padding_mask (B, S) True at pads)."""
    s = max(len(x) for x in seqs)
    tokens = torch.zeros(len(seqs), s, dtype=torch.long)
    mask = torch.ones(len(seqs), s, dtype=torch.bool)
    for i, x in enumerate(seqs):
        tokens[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = False
    return tokens.to(device), mask.to(device)
