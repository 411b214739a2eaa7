"""Models to evaluate, shards (the work units) and the local executor that runs them in worker processes.

A model spec on the command line is one of:

* a registered recognizer: ``pocketsphinx``, ``whisper-tiny.en``, ``whisper-base``, ``moonshine-tiny``,
  ``ctc-small`` ... (see ``speechbench.asr.registry``; ``ctc-*`` names come from ``speechbench.asr.ctc``);
* an alias that fixes an option: ``whisper-tiny.en-int8`` / ``-fp32`` / ``-fp16``, ``whisper-base-int8`` /
  ``-fp32`` / ``-fp16`` (compute type);
* ``whisper:<folder>`` for other CTranslate2 Whisper weights, ``ctc:<file.pt>`` for another CTC checkpoint;
* any of these followed by ``@key=value,key=value`` to pass backend options, e.g.
  ``ctc-large@decoder=beam`` or ``whisper-tiny.en@compute_type=int8,beam_size=1``.

A shard is a plain dict (JSON): its id, the model spec, the utterances (id, absolute audio path, text...),
device, threads, warm-up and the batch-effect request. ``worker.py`` turns it into records. The local
executor runs up to ``workers`` shards at once, each in a fresh ``python -m speechbench.asr_eval.worker``
process, and calls back as each finishes so the caller can save partial results.

Executors share one interface (``start() -> seconds``, ``run(shards, on_done, progress, timeout_s)``,
``close()``, ``describe() -> dict``) and are picked by name with ``executors.get_executor``: ``process``
(``ProcessExecutor``, here) or ``ray`` (``ray_executor.py``, Ray imported only when chosen).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]

ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "whisper-tiny.en-int8": ("whisper-tiny.en", {"compute_type": "int8"}),
    "whisper-tiny.en-fp32": ("whisper-tiny.en", {"compute_type": "float32"}),
    "whisper-tiny.en-fp16": ("whisper-tiny.en", {"compute_type": "float16"}),
    "whisper-base-int8": ("whisper-base", {"compute_type": "int8"}),
    "whisper-base-fp32": ("whisper-base", {"compute_type": "float32"}),
    "whisper-base-fp16": ("whisper-base", {"compute_type": "float16"}),
}
# whisper-base-fp32 is left out: ~1.5x the int8 model's time (RTF ~0.37 vs ~0.24 on 2 cores).
# pocketsphinx (the least accurate pretrained model here, the costliest per second of audio) and
# whisper-tiny.en-fp32 (the int8 model's precision twin) run with --models: their time went to
# moonshine-base and the real-speech set.
DEFAULT_MODELS: tuple[str, ...] = ("whisper-tiny.en-int8", "whisper-base-int8", "moonshine-tiny", "moonshine-base",
                                   "ctc-small", "ctc-medium", "ctc-large", "ctc-streaming")


@dataclass
class ModelSpec:
    label: str  # the name results are keyed by
    backend: str  # registry name, whisper:<path> or ctc:<path>
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def own(self) -> bool:
        """One of the project's own CTC models (trained on a known set of accents)."""
        return self.backend.startswith("ctc")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_model_spec(text: str) -> ModelSpec:
    """``name[@k=v,k=v]`` -> ModelSpec (see the module docstring)."""
    text = text.strip()
    if not text:
        raise ValueError("empty model name")
    name, _, opts_text = text.partition("@")
    options: dict[str, Any] = {}
    for part in filter(None, opts_text.split(",")):
        key, eq, val = part.partition("=")
        if not eq or not key:
            raise ValueError(f"model option {part!r} in {text!r} is not key=value")
        options[key.strip()] = _value(val.strip())
    backend, fixed = ALIASES.get(name, (name, {}))
    return ModelSpec(label=text, backend=backend, options={**fixed, **options})


def unavailable_reason(spec: ModelSpec, device: str) -> str | None:
    """Why this model cannot run here (cheap: no weights are loaded); None if it should."""
    if spec.backend.startswith("ctc:"):
        path = Path(spec.backend[4:])
        return None if path.exists() else f"no CTC checkpoint at {path}"
    if spec.backend.startswith("ctc"):
        import speechbench.asr.ctc  # noqa: F401 - registers ctc-small / -medium / -large / -streaming
    from speechbench.asr.registry import unavailable_reason as registry_reason

    reason = registry_reason(spec.backend)
    if reason:
        return reason
    ct = spec.options.get("compute_type", "")
    if device == "cpu" and "float16" in str(ct):
        return f"compute_type={ct} needs CUDA (this run is on CPU)"
    return None


def timing_subset(utterances: list[dict[str, Any]], n: int) -> list[str]:
    """Ids of ``n`` utterances for the repeated timing passes, chosen deterministically and spread out: the
    k-th pick is dialect k, sentence k and condition k of the lists in order of appearance (a diagonal
    through the grid, so 8 picks of the 10 x 9 default corpus are 8 dialects and 8 sentences), or, when
    that cell is missing or taken, the first unused utterance of dialect k, else the first unused one."""
    if n <= 0 or not utterances:
        return []
    dialects, sentences, conditions = (list(dict.fromkeys(u.get(key) for u in utterances))
                                       for key in ("dialect", "sentence", "condition"))
    by_cell = {}
    for u in utterances:
        by_cell.setdefault((u.get("dialect"), u.get("sentence"), u.get("condition")), u["id"])
    picked: list[str] = []
    for k in range(min(n, len(utterances))):
        d = dialects[k % len(dialects)]
        want = by_cell.get((d, sentences[k % len(sentences)], conditions[k % len(conditions)]))
        if want is None or want in picked:
            unused = [u for u in utterances if u["id"] not in picked]
            want = next((u for u in unused if u.get("dialect") == d), unused[0])["id"]
        picked.append(want)
    return picked


def make_shards(specs: list[ModelSpec], utterances: list[dict[str, Any]], workers: int, device: str,
                threads: int, batch_effect: dict[str, Any] | None, warmup: int = 1,
                timing: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Split each model's utterances into ``workers`` shards (interleaved, so each shard sees every
    dialect); the first shard of each model also measures the batch-size effect and runs the timing
    passes (``timing``: {"passes", "utterances"}) over a subset of its own utterances, the same subset for
    every model, so any executor that can run the shard has the audio."""
    shards = []
    n = max(1, min(workers, len(utterances)))
    for spec in specs:
        for k in range(n):
            part = utterances[k::n]
            if not part:
                continue
            shard_timing = None
            if k == 0 and timing and timing.get("passes", 0) > 0 and timing.get("utterances", 0) > 0:
                shard_timing = {"passes": timing["passes"], "ids": timing_subset(part, timing["utterances"])}
            shards.append({
                "shard_id": f"{spec.label}#{k}", "shard_index": k, "shard_count": n,
                "model": spec.to_json(), "utterances": part, "device": device, "threads": threads,
                "warmup": warmup, "batch_effect": batch_effect if k == 0 else None, "timing": shard_timing,
            })
    return shards


@dataclass
class ShardRun:
    shard: dict[str, Any]
    proc: subprocess.Popen
    out_path: Path
    log_path: Path
    reader: threading.Thread
    started: float


def _read_progress(proc: subprocess.Popen, bar: Any, lock: threading.Lock) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("progress "):
            try:
                n = int(line.split()[1])
            except (IndexError, ValueError):
                continue
            if n and bar is not None:
                with lock:
                    bar.update(n)


def worker_command(shard_path: Path, out_path: Path) -> list[str]:
    return [sys.executable, "-m", "speechbench.asr_eval.worker", str(shard_path), str(out_path)]


def worker_env(threads: int, base_env: dict[str, str]) -> dict[str, str]:
    """The worker's environment: its thread budget, and this checkout importable."""
    t = str(threads)
    return {**base_env, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t,
            "PYTHONPATH": str(ROOT) + os.pathsep + base_env.get("PYTHONPATH", "")}


def collect_output(shard: dict[str, Any], out_path: Path, log_path: Path, rc: int) -> dict[str, Any]:
    """The worker's output, or what survives of it (records appended so far) if it died."""
    try:
        return json.loads(out_path.read_text())
    except (OSError, ValueError):
        pass
    records = []
    rec_path = Path(str(out_path) + ".records.jsonl")
    if rec_path.exists():
        for line in rec_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    tail = ""
    try:
        tail = log_path.read_text()[-1500:]
    except OSError:
        pass
    return {"shard_id": shard["shard_id"], "label": shard["model"]["label"], "status": "crashed",
            "reason": f"worker exited with code {rc}; {len(records)} record(s) kept. stderr tail: {tail}",
            "records": records, "failures": []}


def run_shards(shards: list[dict[str, Any]], workers: int, on_done: Callable[[dict[str, Any]], None],
               progress: bool = True, timeout_s: float | None = None, env: dict[str, str] | None = None,
               total_units: int | None = None) -> None:
    """Run every shard in its own worker process, at most ``workers`` at a time, in order."""
    from tqdm import tqdm

    work = Path(tempfile.mkdtemp(prefix="asr_eval_shards_"))
    lock = threading.Lock()
    total = total_units if total_units is not None else sum(len(s["utterances"]) for s in shards)
    bar = tqdm(total=total, desc="transcribing", unit="utt", disable=not progress, dynamic_ncols=True)
    pending = list(shards)
    running: list[ShardRun] = []
    base_env = {**os.environ, **(env or {})}
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                shard = pending.pop(0)
                sid = f"{len(shards) - len(pending) - 1:03d}"
                shard_path, out_path, log_path = (work / f"shard-{sid}.json", work / f"out-{sid}.json",
                                                  work / f"log-{sid}.txt")
                shard_path.write_text(json.dumps(shard))
                with open(log_path, "w") as logf:
                    proc = subprocess.Popen(worker_command(shard_path, out_path), cwd=ROOT, stdout=subprocess.PIPE,
                                            stderr=logf, text=True, env=worker_env(shard["threads"], base_env))
                reader = threading.Thread(target=_read_progress, args=(proc, bar, lock), daemon=True)
                reader.start()
                with lock:
                    bar.set_postfix_str(shard["shard_id"])
                log.debug("started %s (pid %d)", shard["shard_id"], proc.pid)
                running.append(ShardRun(shard, proc, out_path, log_path, reader, time.perf_counter()))
            time.sleep(0.05)
            for run in list(running):
                rc = run.proc.poll()
                if rc is None and timeout_s and time.perf_counter() - run.started > timeout_s:
                    run.proc.kill()
                    rc = run.proc.wait()
                if rc is None:
                    continue
                run.reader.join(timeout=5)
                running.remove(run)
                result = collect_output(run.shard, run.out_path, run.log_path, rc)
                result["worker_wall_s"] = time.perf_counter() - run.started
                on_done(result)
    finally:
        for run in running:  # interrupted: stop our own workers
            run.proc.kill()
        bar.close()
        shutil.rmtree(work, ignore_errors=True)


class ProcessExecutor:
    """Shards in local worker processes (``run_shards``), at most ``workers`` at a time."""

    name = "process"

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    def start(self) -> float:
        return 0.0  # nothing to start: each shard's process is part of its own wall time

    def run(self, shards: list[dict[str, Any]], on_done: Callable[[dict[str, Any]], None], progress: bool = True,
            timeout_s: float | None = None) -> None:
        run_shards(shards, self.workers, on_done, progress=progress, timeout_s=timeout_s)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "workers": self.workers, "startup_s": 0.0}

