"""A CTC model's card, rendered from its training log (every number traces to the .train.jsonl) and, when
``train_asr.py --score`` wrote one, its per-accent scorecard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speechbench.asr.ctc.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint  # noqa: F401
from speechbench.common.fmt import pct as _pct
from speechbench.common.results import write_text_atomic


def write_model_card(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Markdown rendered from the training log rows only (every number traces to the .train.jsonl)."""
    start = next(r for r in rows if r["event"] == "start")
    end = next((r for r in rows if r["event"] == "end"), {})
    vals = [r for r in rows if r["event"] == "val"]
    m, c, corpus = start["model"], start["config"], start.get("corpus", {})
    best = end.get("best", {})
    arch = (f"log-mel {c['features']['n_mels']} -> Conv2d 3x3/2 x2 ({m['conv_channels'][0]}, "
            f"{m['conv_channels'][1]} ch, {'causal' if m['causal'] else 'symmetric'} in time) "
            f"-> Linear {m['proj']} -> {'Bi' if m['bidirectional'] else 'uni'}LSTM "
            f"{m['layers']} x {m['hidden']} -> Linear {m['vocab_size']} (CTC, blank = 0)")
    sub = (m.get("time_strides") or (2, 2))[0] * (m.get("time_strides") or (2, 2))[1]
    aug = c["augment"]
    stem = path.name.removesuffix(".md")
    log_name = stem + ".train.jsonl"  # beside the card (a run may have been written under another name)
    init = ""
    if c.get("init_from"):
        init = f"; started from `{c['init_from']}`"
        if start.get("grown_from"):
            g = start["grown_from"]
            init += (f", a {g['name']} model ({g['layers']} x {g['hidden']}, conv {g['conv_channels'][0]}/"
                     f"{g['conv_channels'][1]}) widened into this one without changing its outputs "
                     "(new units' fan-out zero at the start; `speechbench/asr/ctc/training/grow.py`)")
        earlier = path.with_name(stem + ".stage1.train.jsonl")  # a continued run keeps its first log
        if Path(c["init_from"]).name == stem + ".pt" and earlier.exists():
            init += f" (the previous checkpoint of this name; its log: `{earlier.name}`)"
    hours = start.get("train_hours", {})
    lines = [
        f"# {start['name']}",
        "",
        f"Character CTC recognizer ({'streaming, causal' if m['causal'] else 'offline, bidirectional'}), "
        f"trained by `train_asr.py`. Log: `{log_name}`.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {arch} |",
        f"| parameters | {start['params']:,} |",
        "| stored precision | float16 weights (run in float32 on CPU) |",
        f"| subsampling | x{sub} ({10 * sub} ms per output frame)" + ("; no look-ahead" if m["causal"] else "")
        + " |",
        f"| training data | {sum(hours.values()):.2f} h, {start['train_utterances']} utterances; "
        + ", ".join(f"{k} {v:.2f} h" for k, v in hours.items()) + " |",
        f"| corpus | {corpus.get('description', corpus.get('name', 'n/a'))} |",
        f"| augmentation | speed {aug['speed_factors']}, noise p={aug['noise_prob']} at "
        f"{aug['snr_db'][0]:g}-{aug['snr_db'][1]:g} dB SNR, gain +-{aug['gain_db'][1]:g} dB, "
        f"SpecAugment {aug['freq_masks']} freq x {aug['freq_mask_width']} + {aug['time_masks']} time masks |",
        f"| optimizer | AdamW lr {c['lr']:g} (warm-up {c['warmup_frac']:.0%}, "
        f"cosine to {c['final_lr_frac']:g}x), "
        f"wd {c['weight_decay']:g}, clip {c['grad_clip']:g}, batch {c['batch_size']}, seed {c['seed']} |",
        f"| steps | {end.get('steps', 'n/a')} ({end.get('epochs', 'n/a')} epochs); best checkpoint at step "
        f"{best.get('step', 'n/a')}{init} |",
        f"| wall time | {end.get('seconds', 0) / 60:.1f} min ({end.get('mean_step_s', 'n/a')} s/step) |",
        f"| hardware | {start['hardware'].get('cpu')}, {start['config']['threads']} torch "
        f"thread{'s' if start['config']['threads'] != 1 else ''} |",
    ]
    for name, n in start.get("val_utterances", {}).items():
        lines.append(f"| validation `{name}` (greedy, best) | CER {_pct(best.get(f'{name}_cer'))}, "
                     f"WER {_pct(best.get(f'{name}_wer'))} on {n} utterances |")
    lines += ["", "Validation sentences are never heard in training (split by normalized sentence text); "
              "the first set listed picks the checkpoint.", ""]
    if vals:
        names = list(start.get("val_utterances", {}))
        lines += ["## Validation during training", "",
                  "| step | elapsed (min) | " + " | ".join(f"{n} CER | {n} WER" for n in names) + " |",
                  "|---|---|" + "---|---|" * len(names)]
        for r in vals:
            cells = " | ".join(f"{_pct(r[n]['cer'])} | {_pct(r[n]['wer'])}" for n in names if n in r)
            lines.append(f"| {r['step']} | {r['elapsed_s'] / 60:.1f} | {cells} |")
        last = vals[-1]
        ex = last.get(names[0], {}).get("examples", []) if names else []
        if ex:
            lines += ["", "Examples (last validation):", ""]
            lines += [f"- ref: `{e['ref']}`  \n  hyp: `{e['hyp']}`" for e in ex]
    lines.append("")
    ev_path = path.with_name(stem + ".eval.json")
    if ev_path.exists():  # written by `train_asr.py --score`
        from speechbench.asr.ctc.training.scorecard import render_scorecard

        lines[lines.index("## Validation during training") if "## Validation during training" in lines
              else len(lines):0] = render_scorecard(json.loads(ev_path.read_text()))
    return write_text_atomic(path, "\n".join(lines))
