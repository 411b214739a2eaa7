"""Ray executor for Part 2: the same shards and the same per-shard callback as the process executor
(``runner.ProcessExecutor``), run as Ray tasks on a local Ray instance or on a cluster.

    comprehensive_asr_evaluation.py --executor ray [--ray-address auto|HOST:PORT] [--ray-upload auto|always|never]

Without an address a fresh local Ray instance is started, sized to ``--workers`` CPUs (``address="local"``,
so a cluster named by ``RAY_ADDRESS`` or left running on this machine is not joined by accident); with an
address (``auto`` or ``HOST:PORT``) the run joins that cluster and leaves it running.

Each shard is one Ray task (not an actor per model). The task runs the very worker the process executor
runs (``python -m speechbench.asr_eval.worker``) in a fresh child process, so a model is loaded once per
shard either way, the peak memory a shard reports (VmHWM) is that one model's and not a long-lived Ray
worker's, and a model that crashes natively takes down its child, not the Ray worker. An actor per model
would save one model load per extra shard but mix shards' memory peaks and the records would no longer
come from the same code path as the process executor's.

Audio on a cluster: the worker reads each utterance's ``audio_path``. On one machine that path is there; on
a cluster every node needs it at the same path (a shared file system) or the audio must travel with the
shard. ``--ray-upload auto`` (default) uploads whenever an address is given: the driver reads each audio
file once, puts its bytes in Ray's object store (``ray.put``), and the task writes them into a temporary
folder on its node and points the shard there. ``never`` relies on a shared path; ``always`` uploads on a
local instance too (how the tests exercise it). The code itself must also be on the nodes: the project
checkout and its environment at the same place, or, under ``uv run`` with Ray's uv hook left on (it is,
for cluster runs), the working directory Ray packages and ships.

Local runs set ``RAY_ENABLE_UV_RUN_RUNTIME_ENV=0`` before importing Ray (under ``uv run`` Ray would
otherwise package and push the whole working directory, ~36 MB, to its own workers), keep Ray's default
token authentication (``RAY_AUTH_MODE=token``, set explicitly so Ray does not warn about it) and switch off
Ray's usage statistics. Ray's own logs stay quiet (``log_to_driver=False``, warnings only); a shard's errors are
not lost with them: the worker's stderr tail and a raising task's exception come back in the shard result.

A shard whose task raised, whose Ray worker or node died, or whose worker process failed or crashed is
run again once; if the second attempt fails too it is passed on as a failed shard (``status`` "failed" or
"crashed", ``reason`` naming both attempts), which the evaluation records as a failure exactly as it does
for the process executor. ``results["executor"]`` says which executor ran and how long Ray took to start;
that start-up is not part of ``timings.transcribe_s``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechbench.asr_eval import runner

log = logging.getLogger(__name__)

UPLOAD_MODES = ("auto", "always", "never")
ATTEMPTS = 2  # one retry


class RayUnavailable(RuntimeError):
    """Ray cannot be imported here."""


def import_ray(local: bool = True) -> Any:
    """Import Ray lazily; a clear error naming the alternative if it is not installed."""
    imported = sys.modules.get("ray") is not None
    if local:
        # Both are read when ray is first imported, so they are set before that import.
        os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
        if not imported:  # Ray's default for a new local instance (a token), said so it does not warn about it
            os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(f"--executor ray needs the 'ray' package, which cannot be imported here ({e}); "
                             "install it (uv sync) or run with --executor process") from e
    if local and imported:  # imported earlier by someone else: the flag was already read, so unset it there
        with contextlib.suppress(Exception):
            from ray._private import ray_constants

            ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
    return ray


def _die_with_parent() -> Callable[[], Any] | None:
    """A ``preexec_fn`` after which the worker dies with the Ray worker that started it (a cancelled or
    killed task leaves no orphan). libc is looked up here, in the parent: the child only makes the call."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no such guarantee
        return None
    return lambda: prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _stage_audio(shard: dict[str, Any], audio: dict[str, Any], work: Path) -> dict[str, Any]:
    """Write the uploaded audio into ``work`` and point the shard's utterances at it."""
    import ray

    ids = [it["id"] for it in shard["utterances"] if it["id"] in audio]
    blobs = ray.get([audio[i] for i in ids]) if ids else []
    paths = {}
    for k, (uid, blob) in enumerate(zip(ids, blobs, strict=True)):
        path = work / "audio" / f"{k:05d}{Path(blob[0]).suffix}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(blob[1])
        paths[uid] = str(path)
    utts = [{**it, "audio_path": paths.get(it["id"], it["audio_path"])} for it in shard["utterances"]]
    return {**shard, "utterances": utts}


def run_shard_task(shard: dict[str, Any], audio: dict[str, Any] | None, timeout_s: float | None) -> dict[str, Any]:
    """The Ray task: one shard in a fresh worker process on this node; its output as the process executor
    collects it (records kept from a worker that died)."""
    import json

    work = Path(tempfile.mkdtemp(prefix="asr_eval_ray_"))
    try:
        if audio:
            shard = _stage_audio(shard, audio, work)
        shard_path, out_path, log_path = work / "shard.json", work / "out.json", work / "log.txt"
        shard_path.write_text(json.dumps(shard))
        t0 = time.perf_counter()
        with open(log_path, "w") as logf:
            proc = subprocess.Popen(runner.worker_command(shard_path, out_path), cwd=runner.ROOT,
                                    stdout=subprocess.DEVNULL, stderr=logf,
                                    env=runner.worker_env(shard["threads"], dict(os.environ)),
                                    preexec_fn=_die_with_parent())
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        out = runner.collect_output(shard, out_path, log_path, rc)
        out["worker_wall_s"] = time.perf_counter() - t0
        out["node"] = socket.gethostname()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _noop() -> None:
    return None


def _error_result(ray: Any, shard: dict[str, Any], e: BaseException) -> dict[str, Any]:
    """A task that raised ("failed") or whose worker / node / object died ("crashed")."""
    raised = isinstance(e, ray.exceptions.RayTaskError)
    cause = getattr(e, "cause", None) if raised else None
    what = f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(e).__name__}: {str(e)[:600]}"
    return {"shard_id": shard["shard_id"], "label": shard["model"]["label"],
            "status": "failed" if raised else "crashed",
            "reason": f"ray task {'raised' if raised else 'lost'}: {what}",
            "traceback": "".join(traceback.format_exception(e))[-3000:], "records": [], "failures": []}


class RayExecutor:
    """Shards as Ray tasks; the same interface as ``runner.ProcessExecutor``."""

    name = "ray"

    def __init__(self, workers: int, address: str | None = None, upload: str = "auto") -> None:
        if upload not in UPLOAD_MODES:
            raise ValueError(f"upload must be one of {', '.join(UPLOAD_MODES)}, not {upload!r}")
        self.workers = max(1, workers)
        self.address = address or None
        self.upload = upload == "always" or (upload == "auto" and self.address is not None)
        self.startup_s: float | None = None
        self.shutdown_s: float | None = None
        self._ray: Any = None
        self._owns = False
        self._info: dict[str, Any] = {}

    def start(self) -> float:
        """Start (or join) Ray and run one empty task, so the start-up includes a worker process (and, on a
        cluster, the runtime environment Ray ships); the seconds it took."""
        t0 = time.perf_counter()
        ray = import_ray(local=self.address is None)
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
            try:
                if self.address:
                    ray.init(address=self.address, **kw)
                else:
                    ray.init(address="local", num_cpus=self.workers, **kw)
            except ConnectionError as e:
                raise ConnectionError(f"{e}. If the cluster uses token authentication (`ray start`'s default), "
                                      "set RAY_AUTH_MODE=token with its token in ~/.ray/auth_token or "
                                      "RAY_AUTH_TOKEN; or run with --executor process") from e
            self._owns = True
        self._ray = ray
        init_s = time.perf_counter() - t0
        ray.get(ray.remote(num_cpus=1)(_noop).remote())
        self.startup_s = time.perf_counter() - t0
        res = ray.cluster_resources()
        self._info = {"ray_version": ray.__version__, "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                      "cluster_cpus": res.get("CPU"), "cluster_gpus": res.get("GPU"), "init_s": init_s,
                      "first_task_s": self.startup_s - init_s, "already_initialized": not self._owns}
        log.info("Ray ready in %.1f s (%s; init %.1f s, first task %.1f s)", self.startup_s,
                 self.address or f"local, {self.workers} CPUs", init_s, self.startup_s - init_s)
        return self.startup_s

    def _put_audio(self, shards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each audio file into the object store once; per shard, utterance id -> its reference. A file that
        cannot be read here is left to the worker, which records that utterance's audio failure."""
        refs: dict[str, Any] = {}
        per_shard: dict[str, dict[str, Any]] = {}
        for shard in shards:
            mine = per_shard.setdefault(shard["shard_id"], {})
            for it in shard["utterances"]:
                path = it["audio_path"]
                if path not in refs:
                    try:
                        refs[path] = self._ray.put((path, Path(path).read_bytes()))
                    except OSError:
                        refs[path] = None
                if refs[path] is not None:
                    mine[it["id"]] = refs[path]
        return per_shard

    def run(self, shards: list[dict[str, Any]], on_done: Callable[[dict[str, Any]], None], progress: bool = True,
            timeout_s: float | None = None) -> None:
        """Submit every shard (Ray runs as many at once as the CPUs allow: ``--workers`` on a local instance),
        call ``on_done`` as each finishes, after at most one retry."""
        from tqdm import tqdm

        if self._ray is None:
            self.start()
        ray = self._ray
        task = ray.remote(num_cpus=1, max_retries=0)(run_shard_task)
        audio = self._put_audio(shards) if self.upload else {}
        pending: dict[Any, tuple[dict[str, Any], int, str | None]] = {}

        def submit(shard: dict[str, Any], attempt: int, first: str | None) -> None:
            gpus = 1.0 / self.workers if shard.get("device") == "cuda" else 0
            ref = task.options(num_gpus=gpus).remote(shard, audio.get(shard["shard_id"]), timeout_s)
            pending[ref] = (shard, attempt, first)

        bar = tqdm(total=sum(len(s["utterances"]) for s in shards), desc="transcribing (ray)", unit="utt",
                   disable=not progress, dynamic_ncols=True)
        try:
            for shard in shards:
                submit(shard, 1, None)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                shard, attempt, first = pending.pop(done[0])
                try:
                    res = ray.get(done[0])
                except Exception as e:
                    res = _error_result(ray, shard, e)
                if res.get("status") in ("failed", "crashed") and attempt < ATTEMPTS:
                    log.warning("shard %s %s (%s); retrying once", shard["shard_id"], res["status"], res.get("reason"))
                    submit(shard, attempt + 1, f"{res['status']}: {res.get('reason')}")
                    continue
                res["attempts"] = attempt
                if first is not None:
                    res["first_attempt"] = first
                    if res.get("status") in ("failed", "crashed"):
                        res["reason"] = (f"failed twice (retried once). attempt 1: {first}; "
                                         f"attempt 2: {res['status']}: {res.get('reason')}")
                bar.update(len(shard["utterances"]))
                bar.set_postfix_str(shard["shard_id"])
                on_done(res)
        finally:
            for ref in pending:  # interrupted: stop what is still queued or running
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            bar.close()

    def close(self) -> None:
        """Shut down the local instance this executor started, or disconnect from the cluster it joined (which
        keeps running); a Ray initialized before ``start`` is left as it was."""
        if self._ray is not None and self._owns:
            t0 = time.perf_counter()
            self._ray.shutdown()
            self.shutdown_s = time.perf_counter() - t0
        self._ray, self._owns = None, False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address or "local", "workers": self.workers,
                "upload_audio": self.upload, "startup_s": self.startup_s, "shutdown_s": self.shutdown_s,
                **self._info}
