"""Part 1: benchmark an autoregressive transformer TTS, the seed's naive loop vs an optimized engine.

Measures, in one run on one device: single-request latency by text length, throughput (sequential,
padded static batching, continuous batching under all-at-once and Poisson arrivals), a batch-size sweep
with the memory bandwidth each decode step achieves, peak memory, torch.profiler top ops before and
after, and the fidelity of every optimized variant against the causal reference on the same weights.

Writes results/tts_benchmarks.json and renders docs/tts_report.md from it.

Examples:
  uv run optimized_tts_inference.py                  # defaults: ~11 min on a 2-core CPU
  uv run optimized_tts_inference.py --quick          # CI smoke size, < 1 min
  uv run optimized_tts_inference.py --report-only    # re-render the report from the JSON
  uv run optimized_tts_inference.py --device cuda --output results/tts_benchmarks_gpu.json \\
      --report docs/tts_report_gpu.md
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from speechbench.common.cli import Script, add_common_args, apply_args, prepare_run, run_script
from speechbench.common.readme import update_headline
from speechbench.tts.benchmark import TTSBenchConfig, TTSBenchmark
from speechbench.tts.engine import PRECISIONS
from speechbench.tts.report import headline_markdown, render

log = logging.getLogger("optimized_tts_inference")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optimized_tts_inference.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(p, "results/tts_benchmarks.json", "docs/tts_report.md")
    d = TTSBenchConfig()
    g = p.add_argument_group("model and inputs")
    g.add_argument("--checkpoint", default=None,
                   help="a SimpleTTSModel state_dict to load (default: seeded random weights, the seed's setting)")
    g.add_argument("--texts", default=d.texts_file,
                   help="JSON with a 'texts' list and optional 'test_categories' (default: %(default)s)")
    g.add_argument("--max-frames", type=int, default=None,
                   help=f"clamp on output length in mel frames (default: {d.max_frames} = 3.5 s, which keeps the "
                   f"quadratic seed baseline inside a 10-minute run on 2 cores; the seed used 500; --quick: 40)")
    g.add_argument("--frames-per-char", type=float, default=d.frames_per_char,
                   help="length policy: mel frames per input character (default: %(default).2f, ~86 frames/s "
                   "at ~13 characters/s)")
    g.add_argument("--stop-head", choices=["auto", "honor", "ignore"], default="auto",
                   help="end a sequence when the stop head fires: auto honours it only with --checkpoint, "
                   "since untrained weights make it noise (default: auto)")
    g = p.add_argument_group("optimized engine")
    g.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto",
                   help="precision of the optimized engine: int8 = dynamic int8 weights (CPU), fp16/bf16 = "
                   "autocast (fp16 GPU only); auto: int8 on CPU, fp16 on CUDA (default: auto)")
    g.add_argument("--extra-precisions", nargs="*", default=[], choices=list(PRECISIONS),
                   help="also measure these precisions for latency and fidelity (e.g. bf16)")
    g.add_argument("--slots", type=int, default=None,
                   help=f"decode slots (max batch) of the batched engines (default: {d.slots}, --quick: 4)")
    g.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="static cache + torch.compile (CUDA graphs via reduce-overhead on GPU); auto: on for "
                   "CUDA only. Failures fall back to eager and are noted in the results (default: auto)")
    g = p.add_argument_group("measurement")
    g.add_argument("--repeats", type=int, default=None,
                   help=f"timed repeats per text for optimized latency, after a warm-up (default: {d.repeats})")
    g.add_argument("--headline-repeats", type=int, default=None,
                   help=f"optimized runs of the ~50-character text the headline latency is quoted on, in groups "
                   f"before, between and after the baseline's runs of it (default: {d.headline_repeats})")
    g.add_argument("--headline-baseline-repeats", type=int, default=None,
                   help=f"seed-baseline runs of that text: the speedup is the median over these, each paired "
                   f"with its neighbouring optimized runs, with their spread (default: {d.headline_baseline_repeats})")
    g.add_argument("--baseline-repeats", type=int, default=None,
                   help=f"timed repeats per text for the seed baseline; it is quadratic in length, so each "
                   f"text runs once by default (default: {d.baseline_repeats})")
    g.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help=f"batch sizes for the sweep (default: {' '.join(map(str, d.batch_sizes))})")
    g.add_argument("--sched-requests", type=int, default=None,
                   help=f"mixed-length requests in the static-vs-continuous comparison (default: {d.sched_requests})")
    g.add_argument("--sched-slots", type=int, default=None,
                   help=f"slots of the static-vs-continuous comparison, fewer than its requests so the "
                   f"steady state is exercised (default: {d.sched_slots})")
    g.add_argument("--sched-max-frames", type=int, default=None,
                   help=f"output-length clamp in the static-vs-continuous comparison; the seed's "
                   f"{d.sched_max_frames} by default, since --max-frames is lowered only to bound the "
                   "baseline's run time")
    g.add_argument("--poisson-load", type=float, default=d.poisson_load,
                   help="Poisson arrival rate as a fraction of the measured continuous capacity (default: %(default)s)")
    g.add_argument("--throughput-repeats", type=int, default=None,
                   help="runs of each batched scheduler on the sample texts, alternating; the throughput headline "
                   f"is their median, with the spread (default: {d.throughput_repeats})")
    g.add_argument("--sched-draws", type=int, default=None,
                   help="seeded request draws (all arriving at once) over which continuous batching is compared "
                   f"with the better of FIFO and length-bucketed static batching; the headline is their median "
                   f"(default: {d.sched_draws})")
    g.add_argument("--poisson-requests", type=int, default=None,
                   help=f"how many of those requests (the first ones) arrive as a Poisson process; under "
                   f"load < 1 that pattern measures latency, not throughput (default: {d.poisson_requests})")
    g.add_argument("--ttfa-load-fractions", type=float, nargs="+", default=None,
                   help="streaming synthesis under load: Poisson arrival rates as fractions of the continuous "
                   "batcher's measured capacity; at each, time to first audio (TTFA) p50/p95, playback "
                   "underruns and completed requests/s for continuous and both static batchers (default: "
                   f"{' '.join(map(str, d.ttfa_load_fractions))})")
    g.add_argument("--ttfa-requests", type=int, default=None,
                   help=f"requests per arrival rate in that sweep (default: {d.ttfa_requests})")
    g.add_argument("--ttfa-chunk-frames", type=int, default=None,
                   help=f"mel frames per streamed audio chunk (86 frames = 1 s; default: {d.ttfa_chunk_frames})")
    g.add_argument("--ttfa-target-ms", type=float, default=None,
                   help="the TTFA p95 whose crossing is reported as each scheduler's knee rate "
                   f"(default: {d.ttfa_target_ms:g})")
    g.add_argument("--fidelity-texts", type=int, default=None,
                   help=f"shortest sample texts rolled out by the slow causal reference (default: {d.fidelity_texts})")
    g.add_argument("--no-profile", action="store_true", help="skip the torch.profiler section")
    g.add_argument("--trace-dir", default=None,
                   help="also export Chrome traces of the profiled runs here (e.g. results/traces)")
    return p


def config_from_args(a: argparse.Namespace, device: torch.device) -> TTSBenchConfig:
    cfg = TTSBenchConfig.quick_preset() if a.quick else TTSBenchConfig()
    apply_args(cfg, a, renames={"texts_file": "texts"})
    cfg.device = str(device)
    cfg.profile = not a.no_profile
    if min(cfg.max_frames, cfg.sched_max_frames, cfg.slots, cfg.repeats, cfg.baseline_repeats, cfg.poisson_requests,
           cfg.sched_draws, cfg.throughput_repeats, cfg.ttfa_requests, cfg.ttfa_chunk_frames) < 1:
        raise SystemExit("--max-frames, --sched-max-frames, --slots, --repeats, --baseline-repeats, "
                         "--poisson-requests, --sched-draws, --throughput-repeats, --ttfa-requests and "
                         "--ttfa-chunk-frames must be >= 1")
    if not cfg.ttfa_load_fractions or min(cfg.ttfa_load_fractions) <= 0 or cfg.ttfa_target_ms <= 0:
        raise SystemExit("--ttfa-load-fractions must be > 0 and --ttfa-target-ms > 0")
    if any(b < 1 for b in cfg.batch_sizes):
        raise SystemExit("--batch-sizes must all be >= 1")
    if cfg.checkpoint and not Path(cfg.checkpoint).exists():
        raise SystemExit(f"--checkpoint not found: {cfg.checkpoint}")
    return cfg


def maybe_update_readme(res: dict, output: Path) -> None:
    update_headline(res, output, "tts_benchmarks.json", "tts-headline", headline_markdown)


def summarize(res: dict, output: Path, report: Path) -> None:
    s = res["summary"]
    print(f"wrote {output} and {report}")
    for k in ("latency_speedup", "optimized_latency_ms_p50", "throughput_speedup", "continuous_vs_static_throughput",
              "fidelity_fp32_max_abs_mel_diff", "fidelity_reduced_precision_rel_l2"):
        if k in s:
            print(f"  {k}: {s[k]:.4g}")


def measure(a: argparse.Namespace) -> dict:
    device = prepare_run(a)
    cfg = config_from_args(a, device)
    bench = TTSBenchmark(cfg, a.output, progress=sys.stderr.isatty() or not a.quick)
    bench.results["config"]["output"] = str(a.output)
    return bench.run()


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return run_script(a, Script(
        log_file=Path("logs/tts_benchmark.log"), measure=lambda: measure(a), render=render,
        update_readme=lambda res: maybe_update_readme(res, a.output),
        summarize=lambda res: summarize(res, a.output, a.report)))


if __name__ == "__main__":
    raise SystemExit(main())
