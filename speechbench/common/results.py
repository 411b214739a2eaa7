"""Result files: written atomically, partial results kept, every file self-describing.

Each JSON carries ``schema``, ``env`` (profiling_utils.capture_environment), ``config`` (every flag that
shaped the run), ``summary`` (headline figures) and the detail under it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats so the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/Infinity; None reads as "not measured"
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path``, on failure remove it.

    Readers never see half a file, and an interrupted run leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Strict JSON (numpy converted, NaN/inf as null), fsynced, then renamed into place."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(_jsonable(data), f, indent=2, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file not found: {path} (run the benchmark first, without --report-only)")
    with open(path) as f:
        return json.load(f)


class SectionedRun:
    """Partial-results plumbing shared by the benchmarks: a run is a sequence of named sections, and the
    JSON is rewritten (atomically) after each one, so an interrupted or failing run keeps what it measured.

    Subclasses set ``self.results`` (a dict with ``failures`` and ``notes`` lists) and ``self.output``. Every
    failure record, a section's or an item's, has ``section`` and ``error`` (plus ``traceback`` for a
    section, and the item's own keys, e.g. ``model``, ``id``, for an item).
    """

    results: dict[str, Any]
    output: Path

    def note(self, text: str) -> None:
        """A remark that belongs in the results (a fallback taken, a caveat), logged and stored once."""
        log.info(text)
        if text not in self.results["notes"]:
            self.results["notes"].append(text)

    def save(self) -> None:
        write_json_atomic(self.output, self.results)

    def section(self, name: str, fn: Callable[[], Any], store: bool = True, catch: bool = True) -> Any:
        """Run one section; store its result under ``name`` (``store``: off for a section that writes its
        own keys) or its failure (``section``, ``error``, a short ``traceback``), with its seconds and the
        machine noise beside it, and write the JSON. A failed section is a recorded failure and the sections
        after it still run, unless ``catch`` is off (a failure there is a crash: it is raised)."""
        from speechbench.common.noise import NoiseMonitor

        t0 = time.perf_counter()
        monitor = NoiseMonitor()
        monitor.start()
        try:
            out = fn()
            if store:
                self.results[name] = out
            return out
        except Exception as e:
            if not catch:
                raise
            log.error("section %s failed: %s", name, e)
            self.results["failures"].append({"section": name, "error": f"{type(e).__name__}: {e}",
                                             "traceback": traceback.format_exc(limit=6)})
            return None
        finally:
            self.results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 2)
            self.results.setdefault("noise", {})[name] = monitor.stop()
            self.save()
