"""A regression gate across result files: compare two results JSONs of the same benchmark.

    uv run compare_results.py BASE.json NEW.json [--wer-tolerance 0.005] [--latency-tolerance 0.10]
                              [--alpha 0.05] [--intersection] [--output report.md]

Reads any of the suite's result files (Part 2 ASR evaluation, results/asr_evaluation_results.json or any
run of comprehensive_asr_evaluation.py; Part 1 TTS, results/tts_benchmarks.json; Part 3 streaming,
results/streaming_performance.json), recognises the schema and compares:

* ASR: WER per model and per dialect, paired on the utterances both runs scored (Wilcoxon signed-rank on
  per-utterance errors). Regression = significant at --alpha AND NEW WER > BASE WER + --wer-tolerance.
  Different utterance sets are refused unless --intersection.
* TTS / streaming: speedups, throughputs, latency percentiles, capacity. Regression = a relative change
  beyond --latency-tolerance in the bad direction and outside both runs' spreads where recorded; capacity
  dropping by one or more sweep levels. Noise records are reported beside the figures.

Prints a verdict line and each regression; the Markdown table of every figure goes to --output, or to
stdout without it. Exit status: 0 no regression, 1 regression, 2 unusable input.

Examples:
  uv run compare_results.py results/asr_evaluation_results.json new/asr_evaluation_results.json
  uv run compare_results.py base/tts_benchmarks.json results/tts_benchmarks.json --output logs/gate.md
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compare_results.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", help="the reference results JSON (e.g. a committed baseline)")
    p.add_argument("new", help="the results JSON to check")
    p.add_argument("--wer-tolerance", type=float, default=0.005,
                   help="absolute WER rise allowed before a significant change counts "
                   "(default: %(default)s = 0.5 points)")
    p.add_argument("--latency-tolerance", type=float, default=0.10,
                   help="relative change allowed for timing figures (default: %(default)s = 10%%)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired WER test "
                   "(default: %(default)s)")
    p.add_argument("--intersection", action="store_true",
                   help="ASR: when the runs scored different utterances, compare on those both scored")
    p.add_argument("--output", default=None, help="write the Markdown report here (default: print it)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    for name in ("wer_tolerance", "latency_tolerance"):
        if getattr(a, name) < 0:
            build_parser().error(f"--{name.replace('_', '-')} must be >= 0")
    if not 0 < a.alpha < 1:
        build_parser().error("--alpha must be in (0, 1)")
    from speechbench.compare.figures import Options
    from speechbench.compare.gate import run

    opts = Options(wer_tolerance=a.wer_tolerance, latency_tolerance=a.latency_tolerance, alpha=a.alpha,
                   intersection=a.intersection)
    code, out, err = run(a.base, a.new, opts, a.output)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
