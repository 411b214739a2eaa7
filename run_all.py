"""The main job: run every benchmark of the suite at its default size, writing results/*.json and
regenerating docs/*.md from them.

    uv run run_all.py            # all benchmarks, default sizes (see the README for the measured time)
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
# Part 2's default run scores real human speech beside the synthetic accents (the recordings the separate
# recorded-speech spot check used are part of that set now).
BENCHMARKS = [
    ("tts", "optimized_tts_inference.py", []),
    ("asr", "comprehensive_asr_evaluation.py", []),
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
