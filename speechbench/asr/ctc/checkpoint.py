"""CTC checkpoint I/O: one file format (``speechbench.ctc/1``), saved by training and loaded by inference.

Apart from the trainer so that inference code (the recognizer backend, the streaming engine's model
registry, the scorecard) loads a checkpoint without importing training, and so that the scorecard and the
trainer no longer import each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from speechbench.asr.ctc.features import FeatureConfig
from speechbench.asr.ctc.model import CTCModel, ModelConfig
from speechbench.asr.ctc.tokenizer import CHARS

CHECKPOINT_FORMAT = "speechbench.ctc/1"


def save_checkpoint(path: Path, model: CTCModel, feat_cfg: FeatureConfig, meta: dict[str, Any],
                    lm_texts: list[str] | None = None) -> Path:
    """fp16 weights (half the bytes; these models lose nothing measurable), fp32 feature statistics."""
    def stored(k: str, v: torch.Tensor) -> torch.Tensor:
        halve = v.is_floating_point() and not k.startswith("feat_")
        return v.detach().half() if halve else v.detach().clone()

    state = {k: stored(k, v) for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_config": model.cfg.to_json(),
        "feature_config": feat_cfg.to_json(),
        "chars": CHARS,
        "state_dict": state,
        "stored_dtype": "float16",
        "params": model.num_params,
        "meta": json.loads(json.dumps(meta, default=str)),  # plain types only: loads with weights_only=True
        "lm_texts": lm_texts or [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[CTCModel, FeatureConfig, dict[str, Any]]:
    """-> (fp32 model in eval mode, feature config, the whole payload minus weights)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format {payload.get('format')!r})")
    if payload.get("chars") != CHARS:
        raise ValueError(f"{path}: vocabulary differs from this code's ({payload.get('chars')!r})")
    model = CTCModel(ModelConfig.from_json(payload["model_config"]))
    state = payload.pop("state_dict")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    feat_cfg = FeatureConfig(**payload["feature_config"])
    return model.to(device).eval(), feat_cfg, payload
