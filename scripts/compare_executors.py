"""Part 2 under both executors: the same --quick evaluation run with ``--executor process`` and with
``--executor ray`` (a local Ray instance), checked for identical utterance records and WER, timed apart.

    uv run scripts/compare_executors.py       # --quick, 2 workers -> results/asr_executor_comparison.json
    uv run scripts/compare_executors.py --models pocketsphinx whisper-tiny.en-int8 --keep runs/

"Identical" means the JSON dumps of the utterance records, sorted by (model, id) and without the timing
fields (latency_s, rtf), are byte for byte the same, and so are each model's WER, its 95% interval and the
per-dialect WERs. Wall times are reported as measured (the whole CLI run, and the evaluation's own
transcription time); Ray's start-up and shut-down are reported apart. On a busy machine the wall times
are noise-prone; the identity check is not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechbench.common.results import write_json_atomic  # noqa: E402

TIMING_FIELDS = ("latency_s", "rtf")
SCHEMA = "asr_executor_comparison/1"


def run_one(executor: str, out_dir: Path, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    out = out_dir / f"asr_{executor}.json"
    cmd = [sys.executable, str(ROOT / "comprehensive_asr_evaluation.py"), "--quick", "--workers", str(args.workers),
           "--executor", executor, "--device", args.device, "--output", str(out),
           "--report", str(out_dir / f"asr_{executor}.md"), "--no-plots", "--no-readme"]
    if args.models:
        cmd += ["--models", *args.models]
    print(f"running: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"{executor} run failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text()), wall


def records_dump(res: dict[str, Any]) -> str:
    recs = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in res["utterances"]]
    recs.sort(key=lambda r: (r["model"], r["id"]))
    return json.dumps(recs, sort_keys=True)


def wer_view(res: dict[str, Any]) -> dict[str, Any]:
    s = res["summary"]
    return {m: {"wer": row.get("wer"), "wer_ci95": row.get("wer_ci95"), "cer": row.get("cer"),
                "per_dialect": {d: c.get("wer") for d, c in (s.get("per_dialect") or {}).get(m, {}).items()}}
            for m, row in (s.get("models") or {}).items()}


def timing(res: dict[str, Any], wall: float) -> dict[str, Any]:
    t, ex = res.get("timings") or {}, res.get("executor") or {}
    return {"cli_wall_s": wall, "total_s": t.get("total_s"), "transcribe_s": t.get("transcribe_s"),
            "executor_startup_s": t.get("executor_startup_s"), "executor": ex,
            "shards": res["config"].get("shards"), "failures": len(res.get("failures") or [])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workers", type=int, default=2, help="workers for both runs (default: %(default)s)")
    p.add_argument("--models", nargs="+", default=None, help="models (default: the --quick run's default set)")
    p.add_argument("--device", default="cpu", help="device for both runs (default: %(default)s)")
    p.add_argument("--output", default="results/asr_executor_comparison.json")
    p.add_argument("--keep", default=None, help="keep both runs' JSON and reports in this folder (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run (default: %(default)s)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="asr_executors_") as tmp:
        out_dir = Path(args.keep) if args.keep else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        runs = {name: run_one(name, out_dir, args) for name in ("process", "ray")}
    (pres, pwall), (rres, rwall) = runs["process"], runs["ray"]
    same_records = records_dump(pres) == records_dump(rres)
    same_wer = json.dumps(wer_view(pres), sort_keys=True) == json.dumps(wer_view(rres), sort_keys=True)
    result = {
        "schema": SCHEMA, "env": pres.get("env"),
        "config": {"workers": args.workers, "models": args.models or pres["config"].get("models"), "quick": True,
                   "device": args.device, "excluded_fields": list(TIMING_FIELDS)},
        "summary": {"identical": same_records and same_wer, "records_identical": same_records,
                    "wer_identical": same_wer, "records": len(pres["utterances"]),
                    "process_wall_s": pwall, "ray_wall_s": rwall,
                    "process_transcribe_s": pres["timings"].get("transcribe_s"),
                    "ray_transcribe_s": rres["timings"].get("transcribe_s"),
                    "ray_startup_s": (rres.get("executor") or {}).get("startup_s"),
                    "ray_shutdown_s": (rres.get("executor") or {}).get("shutdown_s")},
        "runs": {"process": timing(pres, pwall), "ray": timing(rres, rwall)},
        "wer": {"process": wer_view(pres), "ray": wer_view(rres)},
    }
    write_json_atomic(ROOT / args.output if not Path(args.output).is_absolute() else args.output, result)
    s = result["summary"]
    print(f"records identical: {same_records} ({s['records']} records); WER identical: {same_wer}")
    print(f"process: {pwall:.1f} s wall, transcription {s['process_transcribe_s']:.1f} s")
    print(f"ray:     {rwall:.1f} s wall, transcription {s['ray_transcribe_s']:.1f} s, Ray start-up "
          f"{s['ray_startup_s']:.1f} s, shut-down {s['ray_shutdown_s'] or 0:.1f} s")
    print(f"wrote {args.output}")
    return 0 if s["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
