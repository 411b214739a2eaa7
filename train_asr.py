r"""Train the project's character CTC recognizers (offline small / medium / large, and a streaming model).

    uv run train_asr.py --corpus ctc-8k --build-only       # synthesize the training corpus once (~8 min)
    uv run train_asr.py --model small --minutes 10         # builds (or reuses) the corpus, then trains
    uv run train_asr.py --model streaming --minutes 20 \
        --val-manifest "$(uv run build_corpus.py --preset default --no-progress | tail -1)"
    uv run train_asr.py --model medium --steps 1200 --seed 0   # a fixed schedule: exactly repeatable
    uv run train_asr.py --model small --quick              # CI smoke run, < 60 s
    uv run train_asr.py --score models/ctc-*.pt --val-manifest "$EVAL"  # per-accent scores into the cards

Writes <out> (fp16 checkpoint, default models/ctc-<model>.pt), <out stem>.md (model card) and
<out stem>.train.jsonl (log: step, loss, lr, validation CER/WER, elapsed). The recognizers are then
available to the benchmarks as ctc-small, ctc-medium, ctc-large, ctc-streaming.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from speechbench.asr.ctc.model import SIZES
from speechbench.asr.ctc.tokenizer import normalize_target
from speechbench.asr.ctc.training.data import (
    IN_DOMAIN_ACCENTS,
    NO_AUGMENT,
    TRAIN_CORPORA,
    AugmentConfig,
    split_by_sentence,
)
from speechbench.asr.ctc.training.train import TrainConfig, train
from speechbench.speech.corpus import ALL_ACCENTS, DEFAULT_ROOT, build_corpus
from speechbench.speech.manifest import Utterance, read_manifest

log = logging.getLogger("train_asr")

QUICK = {"corpus": "tiny", "steps": 6, "batch_size": 4, "val_fraction": 0.1, "val_max": 4}


def _sizes_help() -> str:
    return "; ".join(f"{k} = {'causal uni' if c.causal else 'Bi'}LSTM {c.layers}x{c.hidden}, "
                     f"conv {c.conv_channels}" for k, c in SIZES.items())


def _corpora_help() -> str:
    return "; ".join(f"{k} = {c.num_sentences} sentences, {'/'.join(c.accents)}"
                     for k, c in TRAIN_CORPORA.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(SIZES), default="small",
                   help=f"architecture: {_sizes_help()} (default: small)")
    d = p.add_argument_group("training data")
    d.add_argument("--corpus", choices=list(TRAIN_CORPORA), default="ctc-8k",
                   help="training corpus preset, synthesized once by the shared corpus builder and cached by "
                   f"config: {_corpora_help()} (default: ctc-8k)")
    d.add_argument("--accents", nargs="+", choices=ALL_ACCENTS, metavar="ACCENT",
                   help="in-domain accents to train on (default: the preset's, "
                   f"{' '.join(IN_DOMAIN_ACCENTS)}); every other accent stays held out for evaluation")
    d.add_argument("--num-sentences", type=int, help="override the preset's number of training sentences")
    d.add_argument("--speakers-per-accent", type=int, help="override the preset's seeded voices per accent")
    d.add_argument("--manifest", type=Path,
                   help="train on this JSONL manifest instead of a synthesized corpus (filtered by "
                   "--accents)")
    d.add_argument("--corpus-root", type=Path, default=DEFAULT_ROOT,
                   help=f"where corpora are cached (default: {DEFAULT_ROOT})")
    d.add_argument("--corpus-workers", type=int, default=None,
                   help="synthesis processes (default: CPU count)")
    d.add_argument("--build-only", action="store_true",
                   help="build (or find) the training corpus, print its manifest path, exit")
    d.add_argument("--val-fraction", type=float, default=0.03,
                   help="share of training sentences held out for validation, never trained on "
                   "(default: 0.03)")
    d.add_argument("--val-max", type=int, default=200,
                   help="at most this many held-out sentences (default: 200)")
    d.add_argument("--val-manifest", type=Path,
                   help="an extra validation set, e.g. the evaluation corpus's manifest, filtered to the "
                   "training accents and --val-conditions; reported in the log and card, never used to pick "
                   "the checkpoint")
    d.add_argument("--val-conditions", nargs="+", default=["clean"], metavar="COND",
                   help="conditions kept from --val-manifest (default: clean)")
    d.add_argument("--no-augment", action="store_true", help="no speed/noise/gain/SpecAugment augmentation")
    t = p.add_argument_group("optimization")
    b = t.add_mutually_exclusive_group()
    b.add_argument("--minutes", type=float,
                   help="wall-clock budget; the LR schedule is fitted to the steps that fit (count logged)")
    b.add_argument("--steps", type=int,
                   help="fixed number of optimizer steps (exactly repeatable with --seed)")
    t.add_argument("--batch-size", type=int, default=16, help="utterances per step (default: 16)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of AdamW (default: 2e-3)")
    t.add_argument("--seed", type=int, default=0,
                   help="seed for weights, data order, augmentation and the validation split (default: 0)")
    t.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    t.add_argument("--workers", type=int, default=0,
                   help="DataLoader processes for audio loading and augmentation (default: 0 = in process)")
    t.add_argument("--val-every", type=int, default=250,
                   help="validate (greedy CER/WER) every N steps (default: 250)")
    t.add_argument("--init-from", type=Path, metavar="CKPT",
                   help="start from this checkpoint's weights, e.g. to give a run more time; the optimizer "
                   "and schedule start afresh. A smaller model of the same depth (ctc-medium for --model "
                   "large) is widened into --model without changing its outputs, its new units learning "
                   "from there")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, help="checkpoint path (default: models/ctc-<model>.pt; with --quick "
                   "data/quick-models/ctc-<model>.pt); the model card and log go beside it")
    o.add_argument("--name", help="model name in the card (default: ctc-<model>)")
    o.add_argument("--quick", action="store_true",
                   help=f"CI smoke run: tiny espeak corpus, {QUICK['steps']} steps of batch "
                   f"{QUICK['batch_size']}, < 60 s on 2 cores; checks the pipeline, trains nothing useful")
    o.add_argument("--score", nargs="+", type=Path, metavar="CKPT",
                   help="no training: score these checkpoints on --val-manifest (every accent and the "
                   "--val-conditions; greedy and beam search + character LM, the beam weights tuned on the "
                   "training corpus's held-out split), write <ckpt stem>.eval.json and re-render the card")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def training_corpus(args: argparse.Namespace) -> tuple[list[Utterance], dict]:
    """The training utterances and a description for the model card."""
    if args.manifest:
        res = read_manifest(args.manifest)
        utts = res.utterances
        if args.accents:
            utts = [u for u in utts if u.dialect in args.accents]
        return utts, {"name": str(args.manifest), "description": f"manifest {args.manifest}",
                      "failures": len(res.failures)}
    cfg = TRAIN_CORPORA[args.corpus]
    overrides = {k: v for k, v in (("accents", tuple(args.accents) if args.accents else None),
                                   ("num_sentences", args.num_sentences),
                                   ("speakers_per_accent", args.speakers_per_accent)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    build = build_corpus(cfg, root=args.corpus_root, workers=args.corpus_workers,
                         progress=not args.no_progress)
    if build.failures:
        log.warning("%d utterances failed to synthesize (left out)", len(build.failures))
    res = read_manifest(build.manifest)
    desc = (f"{cfg.num_sentences} synthetic training sentences (seed {cfg.seed}) spoken once each, split "
            f"over {', '.join(cfg.accents)} x {cfg.speakers_per_accent} seeded speakers; `{build.path.name}`")
    return res.utterances, {"name": build.path.name, "description": desc, "config": cfg.to_json(),
                            "manifest": str(build.manifest), "build_seconds": round(build.seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.quick:
        # Only the data and the length are forced; a --batch-size or --steps given explicitly still counts.
        args.corpus, args.val_fraction = QUICK["corpus"], QUICK["val_fraction"]
        args.val_max = QUICK["val_max"]
        args.steps = args.steps or QUICK["steps"]
        args.batch_size = QUICK["batch_size"] if args.batch_size == 16 else args.batch_size
        args.minutes = None
    for path in (args.manifest, args.val_manifest, args.init_from):
        if path is not None and not path.exists():  # fail now, not after minutes of corpus synthesis
            print(f"error: file not found: {path}", file=sys.stderr)
            return 2
    if args.init_from and not args.score:  # an unusable starting point fails now, before any synthesis
        from speechbench.asr.ctc.checkpoint import load_checkpoint
        from speechbench.asr.ctc.model import SIZES
        from speechbench.asr.ctc.training.grow import start_problem

        init_cfg = load_checkpoint(args.init_from)[0].cfg
        if reason := start_problem(init_cfg, SIZES[args.model]):
            print(f"error: --init-from {args.init_from} holds a {init_cfg.name!r} model, which cannot start a "
                  f"{args.model!r} one: {reason}", file=sys.stderr)
            return 2
    if args.score and not args.val_manifest:
        print("error: --score needs --val-manifest (the evaluation set)", file=sys.stderr)
        return 2
    for path in args.score or []:
        if not path.exists():
            print(f"error: file not found: {path}", file=sys.stderr)
            return 2
    utts, corpus = training_corpus(args)
    if args.score:
        return score(args, utts)
    if args.build_only:
        print(corpus.get("manifest", args.manifest))
        return 0
    if not args.steps and not args.minutes:
        print("error: give --minutes or --steps (or --quick)", file=sys.stderr)
        return 2

    # "heldout" (sentences split off the training corpus) comes first: it alone picks the best checkpoint.
    # An external set (--val-manifest, e.g. the Part 2 evaluation corpus) is only reported: choosing
    # checkpoints on it would bias every later score measured on it.
    external: list[Utterance] = []
    if args.val_manifest:
        accents = set(args.accents or {u.dialect for u in utts})
        external = [u for u in read_manifest(args.val_manifest).utterances
                    if u.dialect in accents and u.condition in args.val_conditions]
    exclude = {normalize_target(u.text) for u in external}
    train_utts, held_out = split_by_sentence(utts, args.val_fraction, args.val_max, args.seed, exclude)
    val_sets: dict[str, list[Utterance]] = {"heldout": held_out}
    if external:
        val_sets["eval"] = external
    log.info("training on %d utterances; validation: %s", len(train_utts),
             ", ".join(f"{k} {len(v)}" for k, v in val_sets.items()))

    root = Path(__file__).resolve().parent
    default_dir = root / "data" / "quick-models" if args.quick else root / "models"
    cfg = TrainConfig(
        model=args.model, name=args.name, steps=args.steps, minutes=args.minutes, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, threads=args.threads, workers=args.workers, val_every=args.val_every,
        out=args.out or default_dir / f"ctc-{args.model}.pt", progress=not args.no_progress,
        augment=NO_AUGMENT if args.no_augment else AugmentConfig(),
        stats_utterances=20 if args.quick else 200, calib_steps=3 if args.quick else 20,
        init_from=args.init_from,
    )
    result = train(cfg, train_utts, val_sets, corpus)
    print(f"{cfg.run_name}: {result.steps} steps in {result.seconds / 60:.1f} min; best {result.best}",
          file=sys.stderr)
    print(f"model card: {result.card}\nlog: {result.log}", file=sys.stderr)
    print(result.checkpoint)
    return 0


def score(args: argparse.Namespace, utts: list[Utterance]) -> int:
    """Score checkpoints accent by accent; the beam weights are tuned on the same held-out split of the
    training corpus that picked the checkpoints (never on the evaluation set)."""
    import json

    from speechbench.asr.ctc.training.model_card import write_model_card
    from speechbench.asr.ctc.training.scorecard import score_checkpoint
    from speechbench.asr.ctc.training.train import companion
    from speechbench.common.results import write_json_atomic

    external = [u for u in read_manifest(args.val_manifest).utterances if u.condition in args.val_conditions]
    _, held_out = split_by_sentence(utts, args.val_fraction, args.val_max, args.seed,
                                    {normalize_target(u.text) for u in external})
    for ckpt in args.score:
        # all of the held-out split (manifest order groups it by voice: a prefix would be mostly espeak)
        ev = score_checkpoint(ckpt, args.val_manifest, held_out, tuple(args.val_conditions),
                              threads=args.threads)
        out = write_json_atomic(companion(ckpt, ".eval.json"), ev)
        log_path = companion(ckpt, ".train.jsonl")
        if log_path.exists():
            rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
            write_model_card(companion(ckpt, ".md"), rows)
        ind, held = ev["in_domain"], ev["held_out"]
        print(f"{ckpt.name}: in-domain greedy CER {ind['greedy']['cer']:.3f} WER {ind['greedy']['wer']:.3f}, "
              f"beam+LM WER {ind['beam_lm']['wer']:.3f}; held-out greedy WER {held['greedy']['wer']:.3f} -> {out}")
    return 0


if __name__ == "__main__":  # required: corpus synthesis workers re-import the main module
    sys.exit(main())
