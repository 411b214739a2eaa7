"""The project's CTC checkpoints as ``Recognizer``s: ctc-small, ctc-medium, ctc-large, ctc-streaming.

Registered on import of ``speechbench.asr.ctc``. Each name points at ``models/<name>.pt``; while that file
does not exist the name is listed as unavailable, with the command that trains it. Any other checkpoint
loads with ``CTCRecognizer("path/to/x.pt")``, or goes into the registry under a name of its own with
``register_ctc_checkpoint("ctc-mine", "path/to/x.pt")`` (the registry checks the default file before it
calls a factory, so ``load_recognizer("ctc-small", checkpoint=...)`` works only once models/ctc-small.pt
exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechbench.asr.base import Recognizer, RecognizerUnavailable, as_waveform
from speechbench.asr.ctc.decode import BeamConfig, CharNgramLM, greedy_decode, prefix_beam_search
from speechbench.asr.ctc.features import LogMel, waveforms_to_batch
from speechbench.asr.ctc.tokenizer import Tokenizer
from speechbench.asr.registry import register_backend, registered

MODELS_DIR = Path(__file__).resolve().parents[3] / "models"
CTC_NAMES = ("ctc-small", "ctc-medium", "ctc-large", "ctc-streaming")


def default_checkpoint(name: str) -> Path:
    return MODELS_DIR / f"{name}.pt"


def check_checkpoint(path: Path, size: str | None = None) -> str | None:
    if not path.exists():
        how = f"uv run train_asr.py --model {size}" if size else "uv run train_asr.py"
        return f"no checkpoint at {path}; train it first ({how}, see models/README.md)"
    return None


class CTCRecognizer(Recognizer):
    def __init__(self, checkpoint: str | Path, name: str | None = None, decoder: str = "greedy",
                 beam: BeamConfig | None = None, lm_order: int = 6, device: str = "cpu",
                 threads: int | None = None, batch_size: int = 16) -> None:
        """``decoder``: "greedy" or "beam" (prefix beam search with a character n-gram LM trained on the
        checkpoint's own training transcripts). ``threads``: torch intra-op threads (None: leave as is)."""
        from speechbench.asr.ctc.checkpoint import load_checkpoint

        path = Path(checkpoint)
        reason = check_checkpoint(path)
        if reason:
            raise RecognizerUnavailable(reason)
        if decoder not in ("greedy", "beam"):
            raise ValueError(f"decoder must be 'greedy' or 'beam', got {decoder!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        try:
            self.model, self.feat_cfg, payload = load_checkpoint(path, device)
        except Exception as e:
            raise RecognizerUnavailable(f"cannot load {path}: {type(e).__name__}: {e}") from e
        self.path = path
        self.device = torch.device(device)
        self.extractor = LogMel(self.feat_cfg).to(self.device)
        self.tokenizer = Tokenizer(payload["chars"])
        self.meta = payload.get("meta", {})
        self.decoder = decoder
        self.beam = beam or BeamConfig()
        self.lm: CharNgramLM | None = None
        if decoder == "beam":
            texts = payload.get("lm_texts") or []
            if not texts:
                raise RecognizerUnavailable(f"{path} carries no training transcripts for the beam-search LM")
            self.lm = CharNgramLM(lm_order, self.tokenizer.chars).fit(texts)
        self.lm_order = lm_order
        self.threads = threads
        self.batch_size = batch_size
        self.name = name or self.meta.get("name") or path.stem
        self.params = self.model.num_params
        self.precision = "float32"  # stored as float16, computed in float32
        self.sample_rate = self.feat_cfg.sample_rate
        self.streaming = self.model.cfg.causal
        kind = "causal" if self.streaming else "bidirectional"
        self.backend = f"torch {torch.__version__} (speechbench CTC, {kind})"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"checkpoint": str(self.path), "decoder": self.decoder,
                                "device": str(self.device), "threads": self.threads,
                                "batch_size": self.batch_size}
        if self.decoder == "beam":
            opts.update({"beam_size": self.beam.beam_size, "lm_weight": self.beam.lm_weight,
                         "char_bonus": self.beam.char_bonus, "lm_order": self.lm_order})
        return opts

    @torch.no_grad()
    def transcribe(self, batch: list[np.ndarray]) -> list[str]:
        waves = [as_waveform(a) for a in batch]
        out = [""] * len(waves)
        # Similar lengths share a batch: less padding to compute.
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            audio, lengths = waveforms_to_batch([waves[i] for i in idx])
            feats, flen = self.extractor(audio.to(self.device), lengths.to(self.device))
            lp, olen = self.model(feats, flen)
            if self.decoder == "greedy":
                texts = [self.tokenizer.decode(ids) for ids in greedy_decode(lp, olen)]
            else:
                texts = [prefix_beam_search(lp[j, : int(olen[j])], self.lm, self.beam, self.tokenizer.chars)
                         for j in range(len(idx))]
            for i, text in zip(idx, texts, strict=True):
                out[i] = text
        return out

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self.lm = None


def register_ctc_checkpoint(name: str, path: str | Path, description: str = "",
                            size: str | None = None) -> None:
    """Make ``load_recognizer(name, **options)`` load the checkpoint at ``path`` (re-registering replaces)."""
    path = Path(path)

    def factory(**options: Any) -> Recognizer:
        checkpoint = options.pop("checkpoint", path)
        return CTCRecognizer(checkpoint, name=options.pop("name", name), **options)

    def check() -> str | None:
        return check_checkpoint(path, size)

    register_backend(name, factory, description or f"project character CTC, {path.name}", check,
                     replace=name in registered())


def register_ctc_backends(models_dir: Path | None = None) -> None:
    """Register ctc-small / -medium / -large / -streaming from ``models_dir`` (default models/).

    Idempotent: registering again replaces the entries."""
    folder = models_dir or MODELS_DIR
    for name in CTC_NAMES:
        size = name.removeprefix("ctc-")
        kind = "causal streaming" if size == "streaming" else f"{size} offline (bidirectional)"
        register_ctc_checkpoint(name, folder / f"{name}.pt", f"project character CTC, {kind}, {name}.pt",
                                size)
