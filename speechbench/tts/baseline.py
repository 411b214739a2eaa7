"""The seed's naive inference loop, and the causal reference the optimized engine must equal.

Both re-run the whole decoder over the whole prefix at every step, in fp32, one text at a time. They
differ in one thing only: the seed passes no target mask, so earlier frames attend to later ones (a KV
cache could never reproduce that); the reference adds the causal mask. Timing-wise they are the same
loop; fidelity is always measured against the reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from speechbench.common.measure import synchronize
from speechbench.tts.length import LengthPolicy
from speechbench.tts.model import CharTokenizer, SimpleTTSModel


@dataclass
class SynthesisResult:
    text: str
    mel: torch.Tensor  # (T, mel_dim), fp32 on CPU
    audio: torch.Tensor  # (8T,), toy vocoder output
    frames: int
    stop_step: int | None  # first step at which the stop head fired (None if it never did)
    latency_s: float = float("nan")
    meta: dict = field(default_factory=dict)


class NaiveTTSInference:
    """One text at a time, full-prefix recompute each step, fp32 (the seed's ``BaselineTTSInference``).

    ``causal=False`` is the seed's baseline; ``causal=True`` the reference semantics.
    """

    def __init__(
        self,
        model: SimpleTTSModel,
        length_policy: LengthPolicy,
        tokenizer: CharTokenizer | None = None,
        causal: bool = False,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.length_policy = length_policy
        self.tokenizer = tokenizer or CharTokenizer(model.config.vocab_size)
        self.causal = causal

    @torch.inference_mode()
    def synthesize(self, text: str) -> SynthesisResult:
        t0 = time.perf_counter()
        tok = self.tokenizer(text)
        max_frames = self.length_policy.frames_for(len(tok.ids))
        tokens = torch.tensor([tok.ids], dtype=torch.long, device=self.device)
        memory = self.model.encode_text(tokens)
        mel_input = torch.zeros(1, 1, self.model.mel_dim, device=self.device)
        outputs = []
        stop_step = None
        for step in range(max_frames):
            next_mel, stop_logit = self.model.decoder_step_full(mel_input, memory, causal=self.causal)
            outputs.append(next_mel)
            mel_input = torch.cat([mel_input, next_mel], dim=1)
            if torch.sigmoid(stop_logit).item() > self.length_policy.stop_threshold:
                stop_step = step if stop_step is None else stop_step
                if self.length_policy.honor_stop:
                    break
        mel = torch.cat(outputs, dim=1)
        audio = self.model.vocoder_inference(mel)
        synchronize(self.device)
        return SynthesisResult(
            text=tok.text, mel=mel[0].float().cpu(), audio=audio[0].float().cpu(), frames=mel.size(1),
            stop_step=stop_step, latency_s=time.perf_counter() - t0,
        )
