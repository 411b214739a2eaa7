"""Training loop, checkpoints and model cards for the CTC models.

One run: global feature statistics from training audio -> AdamW with linear warm-up and cosine decay ->
CTC loss (zero_infinity) with gradient clipping -> greedy CER/WER on held-out sentences every
``val_every`` steps -> the best checkpoint (by validation CER) saved in fp16 -> a model card rendered
from the run's JSONL log.

Budget: ``steps`` fixes the schedule, and with the same seed repeats a run exactly. ``minutes`` times the
first ``calib_steps`` steps and one validation to fix the warm-up and a first total, then re-fits the total
at every validation from the measured pace (each re-fit is logged): a wall-clock budget is the one thing
that is not deterministic.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
import torch.nn.functional as F

from speechbench.asr.ctc.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint  # noqa: F401
from speechbench.asr.ctc.decode import greedy_decode
from speechbench.asr.ctc.features import FeatureConfig, LogMel
from speechbench.asr.ctc.model import SIZES, CTCModel
from speechbench.asr.ctc.tokenizer import Tokenizer
from speechbench.asr.ctc.training.data import (
    AugmentConfig,
    BucketBatchSampler,
    SpeechDataset,
    collate,
    corpus_hours,
    eval_batches,
    spec_augment,
)
from speechbench.asr.ctc.training.grow import grow, start_problem
from speechbench.asr.ctc.training.model_card import write_model_card
from speechbench.speech.manifest import Utterance

log = logging.getLogger(__name__)

@dataclass
class TrainConfig:
    model: str = "small"  # a key of SIZES
    name: str | None = None  # checkpoint name; default ctc-<model>
    steps: int | None = None  # fixed number of optimizer steps ...
    minutes: float | None = None  # ... or a wall-clock budget (the schedule is fitted to it)
    batch_size: int = 16
    lr: float = 2e-3  # peak
    weight_decay: float = 1e-2
    warmup_frac: float = 0.06
    final_lr_frac: float = 0.02  # cosine decays to lr * this
    grad_clip: float = 5.0
    seed: int = 0
    threads: int = 2
    workers: int = 0  # DataLoader worker processes (0: load in the training process)
    val_every: int = 250
    log_every: int = 10
    eval_batch_size: int = 32
    calib_steps: int = 20
    stats_utterances: int = 200  # utterances used for the global feature mean/std
    init_from: Path | None = None  # start from these weights (fine-tuning, or a second budget for a run)
    out: Path = Path("models/ctc-small.pt")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in SIZES:
            raise ValueError(f"unknown model {self.model!r}; choose from {', '.join(SIZES)}")
        if not self.steps and not self.minutes:
            raise ValueError("give steps or minutes")

    @property
    def run_name(self) -> str:
        return self.name or f"ctc-{self.model}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["init_from"] = str(self.init_from) if self.init_from else None
        return d


def companion(out: Path, suffix: str) -> Path:
    """models/ctc-small.pt -> models/ctc-small<suffix> (model card .md, log .train.jsonl)."""
    return out.with_name(out.name.removesuffix(".pt") + suffix)


# --- evaluation --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: CTCModel, extractor: LogMel, dataset: SpeechDataset, batch_size: int = 32,
             tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """Greedy CER/WER (corpus level, jiwer) over a dataset without augmentation."""
    tokenizer = tokenizer or Tokenizer()
    was_training = model.training
    model.eval()
    refs, hyps = [], []
    t0 = time.perf_counter()
    for idx in eval_batches(dataset.durations, batch_size):
        batch = collate([dataset[i] for i in idx])
        feats, flen = extractor(batch.audio, batch.audio_lengths)
        lp, olen = model(feats, flen)
        hyps += [tokenizer.decode(ids) for ids in greedy_decode(lp, olen)]
        refs += [dataset.texts[i] for i in idx]
    model.train(was_training)
    if not refs:
        return {"cer": None, "wer": None, "n": 0, "seconds": 0.0, "examples": []}
    return {
        "cer": float(jiwer.cer(refs, hyps)), "wer": float(jiwer.wer(refs, hyps)), "n": len(refs),
        "seconds": round(time.perf_counter() - t0, 2),
        "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[:3]],
    }


def feature_stats(dataset: SpeechDataset, extractor: LogMel, n: int, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std of log-mel over ``n`` random training utterances (clean, as stored)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)
    total, total_sq, count = torch.zeros(extractor.cfg.n_mels, dtype=torch.float64), None, 0
    total_sq = torch.zeros_like(total)
    with torch.no_grad():
        for i in idx:
            feats, _ = extractor(torch.from_numpy(dataset[int(i)].audio)[None])
            f = feats[0].double()
            total += f.sum(0)
            total_sq += (f**2).sum(0)
            count += f.shape[0]
    mean = total / max(count, 1)
    std = (total_sq / max(count, 1) - mean**2).clamp_min(1e-6).sqrt()
    return mean.float(), std.float()


# --- schedule ----------------------------------------------------------------------------------------------


class WarmupCosine:
    """lr multiplier: linear warm-up, then cosine to ``final``; ``total`` may be set after calibration."""

    def __init__(self, total: int, warmup_frac: float, final: float) -> None:
        self.total, self.warmup_frac, self.final = total, warmup_frac, final
        self.warm: int | None = None  # fixed at the first calibration, so a later re-fit never re-warms

    def __call__(self, step: int) -> float:
        warm = self.warm or max(1, int(self.total * self.warmup_frac))
        if step < warm:
            return (step + 1) / warm
        p = min(1.0, (step - warm) / max(1, self.total - warm))
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * p))


# --- the loop ----------------------------------------------------------------------------------------------


def hardware() -> dict[str, Any]:
    from speechbench.common.measure import _cpu_model

    cpu = _cpu_model()
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "python": platform.python_version()}


@dataclass
class TrainResult:
    checkpoint: Path
    card: Path
    log: Path
    steps: int
    seconds: float
    best: dict[str, Any]


class JsonlLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.f = open(path, "w", encoding="utf-8")  # open for the run (a line per event), closed in close()
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.f.write(json.dumps(row, allow_nan=False, default=str) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def initial_model(cfg: TrainConfig, train_ds: SpeechDataset, extractor: LogMel) -> tuple[CTCModel, dict | None]:
    """The model a run starts from: fresh (feature statistics from the training audio), the weights of
    ``init_from`` (same size), or ``init_from`` widened into the larger size (returns its config as
    ``grown_from``)."""
    model = CTCModel(SIZES[cfg.model])
    if not cfg.init_from:
        model.set_feature_stats(*feature_stats(train_ds, extractor, cfg.stats_utterances, cfg.seed))
        return model, None
    init, _, _ = load_checkpoint(cfg.init_from)
    if reason := start_problem(init.cfg, model.cfg):
        raise ValueError(f"{cfg.init_from} holds a {init.cfg.name!r} model, which cannot start a "
                         f"{cfg.model!r} one: {reason}")
    if init.cfg == model.cfg:
        model.load_state_dict(init.state_dict())  # feature statistics included: inputs keep their scale
        return model, None
    # A smaller trained model widened without changing its outputs (see grow.py); the new units train from here.
    return grow(init, model.cfg, cfg.seed), init.cfg.to_json()


def train_step(model: CTCModel, extractor: LogMel, batch: Any, cfg: TrainConfig, opt: torch.optim.Optimizer,
               gen: torch.Generator) -> tuple[float, bool]:
    """One optimizer step on a batch (SpecAugment, CTC loss, clipped gradients): (loss, whether it learned).
    A batch whose every target is longer than its frames has an infinite or zero loss: nothing to learn."""
    feats, flen = extractor(batch.audio, batch.audio_lengths)
    spec_augment(feats, flen, cfg.augment, model.feat_mean, gen)
    lp, olen = model(feats, flen)
    loss = F.ctc_loss(lp.transpose(0, 1), batch.targets, olen, batch.target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)
    opt.zero_grad(set_to_none=True)
    learned = bool(torch.isfinite(loss) and loss.item() > 0)
    if learned:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return loss.item(), learned


def update_checkpoint_meta(path: Path, meta: dict[str, Any]) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["meta"].update(meta)
    torch.save(ckpt, path)


def budget_steps(step: int, step_times: list[float], val_seconds: float, val_every: int,
                 remaining_s: float) -> tuple[int, float]:
    """The total step count that fits a --minutes budget at the measured pace, and the recent step time.

    Fitted after the first ``calib_steps`` and again at every validation: the pace drifts (utterance
    lengths, other load on the machine), and a schedule sized from the first 20 steps alone ended a run
    with its learning rate still high, or decayed it long before the time was up.
    """
    recent = float(np.mean(step_times[1:][-200:]))
    per_step = recent + val_seconds / val_every
    return max(step + 1, step + int(remaining_s / per_step)), recent


def optimizer_and_schedule(cfg: TrainConfig, model: CTCModel, budget_s: float | None
                           ) -> tuple[torch.optim.Optimizer, WarmupCosine, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with the warm-up + cosine multiplier. Before calibration a --minutes run guesses 1 s a step;
    only warm-up runs on the guess."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = WarmupCosine(cfg.steps or max(cfg.calib_steps * 4, int(budget_s or 0)), cfg.warmup_frac,
                            cfg.final_lr_frac)
    return opt, schedule, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def validation_row(model: CTCModel, extractor: LogMel, val_ds: dict[str, SpeechDataset], primary: str | None,
                   batch_size: int, tokenizer: Tokenizer, step: int) -> dict[str, Any]:
    """Greedy CER/WER on every validation set; ``val_cer``/``val_wer`` from the set that picks the checkpoint."""
    row: dict[str, Any] = {"event": "val", "step": step}
    for name, ds in val_ds.items():
        row[name] = evaluate(model, extractor, ds, batch_size, tokenizer)
    if primary is not None:
        row["val_cer"], row["val_wer"] = row[primary]["cer"], row[primary]["wer"]
    return row


def start_row(cfg: TrainConfig, model: CTCModel, grown_from: dict | None, corpus: dict[str, Any] | None,
              train_ds: SpeechDataset, val_ds: dict[str, SpeechDataset]) -> dict[str, Any]:
    """The training log's first row: everything the model card needs about the run's set-up."""
    return {"event": "start", "name": cfg.run_name, "config": cfg.to_json(), "model": model.cfg.to_json(),
            "params": model.num_params, "grown_from": grown_from, "corpus": corpus or {},
            "train_utterances": len(train_ds), "train_hours": corpus_hours(train_ds.utts),
            "val_utterances": {k: len(v) for k, v in val_ds.items()}, "hardware": hardware(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def train(cfg: TrainConfig, train_utts: list[Utterance], val_sets: dict[str, list[Utterance]],
          corpus: dict[str, Any] | None = None) -> TrainResult:
    """Train one model. ``val_sets``: name -> utterances; the first set picks the best checkpoint."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    tokenizer = Tokenizer()
    train_ds = SpeechDataset(train_utts, tokenizer, cfg.augment)
    val_ds = {name: SpeechDataset(u, tokenizer) for name, u in val_sets.items() if u}
    first = next(iter(val_sets), None)
    primary = first if first in val_ds else None  # the first set picks the checkpoint; the others are reported
    extractor = LogMel(cfg.features)
    model, grown_from = initial_model(cfg, train_ds, extractor)
    model.train()

    out = Path(cfg.out)
    logf = JsonlLog(companion(out, ".train.jsonl"))
    hours = corpus_hours(train_ds.utts)
    logf.write(start_row(cfg, model, grown_from, corpus, train_ds, val_ds))

    budget_s = cfg.minutes * 60 if cfg.minutes else None
    opt, schedule, sched = optimizer_and_schedule(cfg, model, budget_s)
    sampler = BucketBatchSampler(train_ds.durations, cfg.batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=cfg.workers, persistent_workers=cfg.workers > 0)
    gen = torch.Generator().manual_seed(cfg.seed)
    lm_texts = sorted(set(train_ds.texts))

    best: dict[str, Any] = {"cer": math.inf}
    step, losses, skipped = 0, [], 0
    step_times: list[float] = []
    val_seconds = 0.0
    bar = tqdm(total=cfg.steps, disable=not cfg.progress, dynamic_ncols=True, desc=cfg.run_name)

    def validate() -> dict[str, Any]:
        nonlocal best, val_seconds
        t0 = time.perf_counter()
        row = validation_row(model, extractor, val_ds, primary, cfg.eval_batch_size, tokenizer, step)
        val_seconds = time.perf_counter() - t0
        row["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        if primary is not None:
            if row["val_cer"] is not None and row["val_cer"] <= best["cer"]:
                best = {"step": step, "cer": row["val_cer"], "wer": row["val_wer"],
                        **{f"{k}_{m}": row[k][m] for k in val_ds for m in ("cer", "wer")}}
                save_checkpoint(out, model, cfg.features, _meta(), lm_texts)
                row["saved"] = True
        logf.write(row)
        if primary is not None:
            bar.set_postfix_str(f"val CER {row['val_cer']:.3f} WER {row['val_wer']:.3f}")
        return row

    def _meta() -> dict[str, Any]:
        return {"name": cfg.run_name, "step": step, "train": cfg.to_json(), "corpus": corpus or {},
                "train_hours": hours, "hardware": hardware(),
                "elapsed_s": round(time.perf_counter() - t_start, 1)}

    def recalibrate() -> int:
        remaining = budget_s - (time.perf_counter() - t_start) - val_seconds  # keep time for a final validation
        total, step_s = budget_steps(step, step_times, val_seconds, cfg.val_every, remaining)
        schedule.total = total
        if schedule.warm is None:
            schedule.warm = max(1, int(total * cfg.warmup_frac))
        bar.total = total
        bar.refresh()
        logf.write({"event": "calibrated", "step": step, "total_steps": total, "step_s": round(step_s, 3),
                    "val_s": round(val_seconds, 1)})
        return total

    it = iter(loader)
    target = cfg.steps
    try:
        while target is None or step < target:
            t0 = time.perf_counter()
            loss, learned = train_step(model, extractor, next(it), cfg, opt, gen)
            skipped += not learned
            sched.step()
            step += 1
            losses.append(loss)
            step_times.append(time.perf_counter() - t0)
            bar.update(1)
            bar.set_description(f"{cfg.run_name} loss {np.mean(losses[-cfg.log_every:]):.3f}")
            elapsed = time.perf_counter() - t_start
            if step % cfg.log_every == 0:
                recent = slice(-cfg.log_every, None)
                logf.write({"event": "train", "step": step, "loss": round(float(np.mean(losses[recent])), 4),
                            "lr": sched.get_last_lr()[0], "epoch": sampler.epoch, "elapsed_s": round(elapsed, 1),
                            "step_s": round(float(np.mean(step_times[recent])), 3)})
            if budget_s is not None and cfg.steps is None and step == cfg.calib_steps:
                if val_ds:
                    validate()
                target = recalibrate()
            elif step % cfg.val_every == 0 and (target is None or step < target) and val_ds:
                validate()
                if budget_s is not None and cfg.steps is None:
                    target = recalibrate()
            if budget_s is not None and time.perf_counter() - t_start > budget_s:
                log.warning("time budget reached at step %d of %s", step, target)
                break
    except KeyboardInterrupt:  # Ctrl-C: stop here, but still validate, save and write the card
        log.warning("interrupted at step %d", step)
    bar.close()
    final = validate() if val_ds else {}
    if primary is None:  # nothing to select on: keep the last weights
        save_checkpoint(out, model, cfg.features, _meta(), lm_texts)
        best = {"step": step}
    seconds = time.perf_counter() - t_start
    logf.write({"event": "end", "steps": step, "seconds": round(seconds, 1), "skipped_steps": skipped,
                "epochs": round(step * cfg.batch_size / max(1, len(train_ds)), 2), "best": best,
                "final": {k: final.get(k) for k in ("val_cer", "val_wer")},
                "mean_step_s": round(float(np.mean(step_times)), 3) if step_times else None})
    logf.close()
    # Record the final summary inside the checkpoint too, so the backend can report it.
    update_checkpoint_meta(out, {"best": best, "total_steps": step, "wall_s": round(seconds, 1)})
    card = write_model_card(companion(out, ".md"), logf.rows)
    return TrainResult(out, card, logf.path, step, seconds, best)
