"""The main job: run every benchmark of the suite at its default size, writing results/*.json and
regenerating docs/*.md from them.

    uv run run_all.py            # all benchmarks, default sizes (32-34 min on 2 cores: Part 1 ~10,
                                 # Part 2 ~6.5, recorded-speech check ~1.5, Part 3 ~15-16)
    uv run run_all.py --quick    # CI smoke sizes
    uv run run_all.py --only tts # one benchmark
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# (name, script, extra args): each is a standalone CLI with the shared flags (--quick, --device, --seed, ...).
RECORDED_MANIFEST = "data/recorded/manifest.jsonl"
BENCHMARKS = [
    ("tts", "optimized_tts_inference.py", []),
    ("asr", "comprehensive_asr_evaluation.py", []),
    # Part 2 again on the two recorded (not synthesized) read-speech clips moonshine-voice bundles: a spot
    # check of every model's accuracy on speech that is not synthetic (not in --quick). Accuracy only: two
    # clips say nothing about speed that Part 2 does not say better, so no timing passes or batch sweep.
    ("asr-recorded", "comprehensive_asr_evaluation.py",
     ["--manifest", RECORDED_MANIFEST, "--sentences", "0", "--output", "results/asr_recorded_speech.json",
      "--report", "docs/asr_recorded_report.md", "--no-readme", "--timing-passes", "0", "--batch-sizes", "1"]),
    ("streaming", "production_streaming_asr.py", []),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (CI smoke sizes)")
    p.add_argument("--only", nargs="+", choices=[n for n, _, _ in BENCHMARKS], help="run only these benchmarks")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="passed to every benchmark")
    a = p.parse_args(argv)
    failed = []
    for name, script, extra in BENCHMARKS:
        if a.only and name not in a.only:
            continue
        if name == "asr-recorded":
            if a.quick:
                continue
            subprocess.call([sys.executable, "build_corpus.py", "--recorded", RECORDED_MANIFEST], cwd=ROOT)
        cmd = [sys.executable, script, "--device", a.device] + (["--quick"] if a.quick else []) + extra
        print(f"[run_all] {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        print(f"[run_all] {script} exited {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(script)
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
