"""Part 2's shard executors by name: ``process`` (``runner.ProcessExecutor``: local worker processes) or
``ray`` (``ray_executor.RayExecutor``: Ray tasks, Ray imported only when chosen). Both take the same shards
and call back once per finished shard; see ``runner`` for the interface."""

from __future__ import annotations

from typing import Any

from speechbench.asr_eval.runner import ProcessExecutor

EXECUTORS = ("process", "ray")


def get_executor(name: str, workers: int, address: str | None = None, upload: str = "auto") -> Any:
    """An executor by name (``address``: the Ray cluster to join; ``upload``: auto / always / never ship the
    shards' audio through Ray's object store, auto = when joining a cluster)."""
    if name == "process":
        return ProcessExecutor(workers)
    if name == "ray":
        from speechbench.asr_eval.ray_executor import RayExecutor

        return RayExecutor(workers, address=address, upload=upload)
    raise ValueError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
