"""Part 3 over the network: the same engine behind ``production_streaming_asr.py serve`` in its own process,
driven by real WebSocket clients (``serve.netload``) from the benchmark's process on the same machine.

Levels: by default half, 70% and all of the in-process sweep's confirmed capacity (the question
is what share of it survives the network stack), stopping at the first level not sustained; each level
is the same seeded stream scripts as in-process, ``network_duration_s`` of audio per stream. A level is
sustained when every client was admitted, nothing was shed, every stream closed normally with all its
frames acknowledged, and the client-side p95 chunk latency is under the bound.

Then twice the network capacity against a server whose ``--max-streams`` is that capacity: the server
must stay up, refuse the excess at the handshake (HTTP 503, counted in /metrics) and keep the admitted
clients' p95 under ``network_overload_bound_ms``.

Both sides share the machine's cores: the clients' CPU time is recorded beside the server's, since on a
real deployment it would be spent elsewhere.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from speechbench.common.noise import NoiseMonitor
from speechbench.streaming.capacity import CapacitySearch, SearchConfig, compact_run
from speechbench.streaming.loadgen import LoadConfig, score_tracks, wer_counts

log = logging.getLogger(__name__)
# Network levels as fractions of the in-process capacity: the question is the share that survives the
# network stack, and half of it has always held (a quarter cost a level's time and said nothing more).
NETWORK_FRACTIONS = (0.5, 0.7, 1.0)
ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``production_streaming_asr.py serve`` in a subprocess on a free loopback port; stopped with SIGTERM."""

    def __init__(self, args: list[str], log_path: Path | None = None, start_timeout: float = 120.0) -> None:
        from speechbench.serve.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.args = args
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - closed in stop
        self._out = out
        cmd = [sys.executable, str(ROOT / "production_streaming_asr.py"), "serve", "--port", str(self.port),
               *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.perf_counter() + self.start_timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start ({' '.join(cmd)}); see {self.log_path}") from None
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._out not in (None, subprocess.DEVNULL):
            self._out.close()
        return None if self.proc is None else self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_threads(bench: Any) -> int:
    return bench.cfg.threads or 1  # the event loop needs the other core: torch's spin-waiting thread would take it


def server_args(bench: Any, max_streams: int) -> list[str]:
    c = bench.cfg
    threads = server_threads(bench)
    model = "ctc-streaming" if c.ctc_graph else "ctc-streaming@graph=false"
    args = ["--model", model, "--checkpoint", c.checkpoint, "--offline-model", "none",
            "--threads", str(threads), "--max-streams", str(max_streams), "--max-batch", str(c.max_batch),
            "--max-wait-ms", str(c.max_wait_ms), "--model-chunk-ms", str(c.model_chunk_ms),
            "--endpoint", c.endpoint, "--endpoint-silence-ms", str(c.endpoint_silence_ms),
            "--overload-ms", str(c.overload_ms), "--max-duty", str(c.max_duty),
            "--gil-switch-ms", str(c.gil_switch_ms), *([] if c.gc_freeze else ["--no-gc-freeze"])]
    return args


def network_levels(bench: Any) -> list[int]:
    c = bench.cfg
    if c.network_streams:
        return sorted(set(c.network_streams))
    cap = bench.capacity_of("sweep")
    if not cap:
        return sorted(set(c.streams))
    # Rounded up: a level stands for "this share of in-process capacity", and 0.7 * 325 = 227.5 rounded down
    # once made a sustained "70%" level come out as 69.8%.
    return sorted({max(1, math.ceil(cap * f - 1e-9)) for f in NETWORK_FRACTIONS})


def run_net_level(bench: Any, sp: ServerProcess, streams: int, duration_s: float, bound_ms: float
                  ) -> dict[str, Any]:
    from speechbench.serve.netload import run_network_load, scrape

    c = bench.cfg
    lcfg = LoadConfig(streams=streams, duration_s=duration_s, chunk_ms=c.chunk_ms,
                      ramp_s=min(c.ramp_s, duration_s / 4), gap_s=c.gap_s, seed=c.seed + streams)
    before = scrape(sp.url)
    monitor = NoiseMonitor(probe=False)
    me = psutil.Process()
    cpu_client0, cpu_server0 = sum(me.cpu_times()[:2]), sp.cpu_seconds()
    monitor.start()
    try:
        raw = run_network_load(sp.ws_url, bench.pool, lcfg, gc_freeze=c.gc_freeze)
    finally:
        noise = monitor.stop()
    cpu_client, cpu_server = sum(me.cpu_times()[:2]) - cpu_client0, sp.cpu_seconds() - cpu_server0
    after = scrape(sp.url)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    st = raw["stats"]
    tracks = raw["tracks"]
    scored = score_tracks(tracks, bench.pool, raw["total_samples"], c.endpoint_silence_ms)
    srows = scored["streams"]
    refs = [" ".join(bench.pool_by_id[u].text for u in s["utts"]) for s in srows]
    w = wer_counts(refs, [s["hyp"] for s in srows])
    fp, fm = np.array(scored["first_partial_ms"]), np.array(scored["finalization_ms"])
    lat = st.latency.summary()
    admitted = sum(t.admitted for t in tracks)
    errors = [t.error for t in tracks if t.error]
    shed = int(delta("speechbench_chunks_shed_total"))
    abnormal = sum(v for k, v in st.closes.items() if k != "1000")

    def pct(a: np.ndarray, q: float) -> float | None:
        return float(np.percentile(a, q)) if a.size else None

    out = {
        "streams": streams, "admitted_streams": admitted, "refused_streams": sum(st.refused.values()),
        "refused_by_status": dict(st.refused), "refused_counted_by_server": int(delta(
            "speechbench_streams_refused_total{reason=capacity}") + delta(
            "speechbench_streams_refused_total{reason=overloaded}")),
        "duration_s": duration_s, "chunk_ms": c.chunk_ms,
        "chunk_latency_ms_p50": lat.get("p50"), "chunk_latency_ms_p95": lat.get("p95"),
        "chunk_latency_ms_p99": lat.get("p99"), "chunk_latency_ms_max": lat.get("max"),
        "chunks_measured": lat.get("n", 0), "unacked_frames": st.unacked_frames,
        "first_partial_ms_p50": pct(fp, 50), "first_partial_ms_p95": pct(fp, 95),
        "finalization_ms_p50": pct(fm, 50), "finalization_ms_p95": pct(fm, 95),
        "shed_chunks": shed, "errors": len(errors), "error_examples": errors[:3], "close_codes": dict(st.closes),
        "abnormal_closes": abnormal, "client_lag_ms_p95": st.lag.percentile(95),
        "batch_size_mean": (delta("speechbench_batch_size_sum") / delta("speechbench_batch_size_count")
                            if delta("speechbench_batch_size_count") else None),
        "server_cpu_s": cpu_server, "client_cpu_s": cpu_client, "wall_s": raw["wall_s"],
        "wer": w["wer"], "wer_detail": w, "noise": noise, "latency_bound_ms": bound_ms,
        "measured_at": "client: from when a frame's last sample existed (its paced send time) to the first "
                       "message whose audio_ms covers it",
    }
    out["sustained"] = bool(admitted == streams and shed == 0 and not errors and abnormal == 0
                            and st.unacked_frames == 0 and lat.get("p95") is not None and lat["p95"] < bound_ms)
    return out


def measure_network(bench: Any) -> dict[str, Any]:
    """The sweep over WebSocket, then twice its capacity against a server capped at that capacity."""
    c = bench.cfg
    levels = network_levels(bench)
    log_path = ROOT / "logs" / "streaming_server.log"
    log_path.parent.mkdir(exist_ok=True)
    rec: dict[str, Any] = {"levels": levels, "runs": [], "server_log": str(log_path.relative_to(ROOT))}
    bench.results["network"] = rec
    top = max(c.max_streams, max(levels))
    with ServerProcess(server_args(bench, top), log_path) as sp:
        def run(n: int, into: list[dict[str, Any]]) -> dict[str, Any]:
            t0 = time.perf_counter()
            r = run_net_level(bench, sp, n, c.network_duration_s, c.latency_bound_ms)
            into.append(r)
            bench.save()
            log.info("network %4d streams: p50 %s p95 %s ms, shed %d, refused %d, errors %d, server cpu %.1f s, "
                     "client cpu %.1f s [%.0f s]", n, r["chunk_latency_ms_p50"], r["chunk_latency_ms_p95"],
                     r["shed_chunks"], r["refused_streams"], r["errors"], r["server_cpu_s"], r["client_cpu_s"],
                     time.perf_counter() - t0)
            return r

        for n in levels:
            if not run(n, rec["runs"])["sustained"]:
                break
        # The same confirmation as in-process (2 of up to 3 runs) and a bisection step, so the share of
        # in-process capacity compares two confirmed figures, not one lucky or unlucky run each.
        rec["search_runs"] = []
        search = CapacitySearch(lambda n: compact_run(run(min(n, top), rec["search_runs"])),
                                SearchConfig(repeats=c.capacity_repeats, need=min(2, c.capacity_repeats),
                                             resolution=c.capacity_resolution,
                                             max_bisect_steps=c.network_bisect_steps))
        found = search.search([compact_run(r) for r in rec["runs"]])
        rec["capacity_search"] = found
    cap = found["confirmed_streams"]
    rec["max_streams_p95_under_100ms"] = cap
    if cap:
        rec["in_process_same_threads"] = same_threads_level(bench, cap)
        bench.save()
        with ServerProcess(server_args(bench, cap), log_path) as sp:
            ov = run_net_level(bench, sp, 2 * cap, c.overload_duration_s, c.network_overload_bound_ms)
            ov["server_alive"] = sp.proc.poll() is None
            with urllib.request.urlopen(sp.url + "/healthz", timeout=5) as resp:
                ov["healthz_status"] = resp.status
        ov["admission_cap"] = cap
        ov["admitted_p95_under_bound"] = bool(ov["chunk_latency_ms_p95"] is not None
                                              and ov["chunk_latency_ms_p95"] < c.network_overload_bound_ms)
        rec["overload"] = ov
        bench.save()
    return rec


def same_threads_level(bench: Any, streams: int) -> dict[str, Any]:
    """The in-process engine at the network capacity with the server's torch threads: the same load without
    sockets, WebSocket clients or an event loop, which splits the network's gap to in-process capacity into
    what the server and its clients cost and what the torch threads they leave the engine cost."""
    import torch

    threads, saved = server_threads(bench), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        r = bench.run_level(streams, bench.cfg.network_duration_s, "network_same_threads")
    finally:
        torch.set_num_threads(saved)
    keep = ("streams", "sustained", "chunk_latency_ms_p50", "chunk_latency_ms_p95", "chunk_latency_ms_p99",
            "scheduler_busy_share", "batch_size_mean", "shed_chunks", "wer", "noise")
    out = {"torch_threads": threads, **{k: r.get(k) for k in keep}}
    log.info("in-process, %d torch thread(s), %d streams: p50 %s p95 %s ms, scheduler busy %s", threads, streams,
             out["chunk_latency_ms_p50"], out["chunk_latency_ms_p95"], out["scheduler_busy_share"])
    return out


def network_summary(res: dict[str, Any]) -> dict[str, Any] | None:
    net = res.get("network")
    if not net:
        return None
    runs = net.get("runs") or []
    cap = net.get("max_streams_p95_under_100ms", 0)
    at = next((r for r in runs + (net.get("search_runs") or []) if r["streams"] == cap and r["sustained"]), None)
    inproc = (res.get("summary") or {}).get("max_streams_p95_under_100ms")
    sweep = res.get("sweep") or []
    if inproc is None and sweep:
        ok = [r["streams"] for r in sweep if r.get("sustained")]
        inproc = max(ok) if ok else 0
    ov = net.get("overload") or {}
    return {
        "max_streams_p95_under_100ms": cap,
        "chunk_latency_ms_p95": at.get("chunk_latency_ms_p95") if at else None,
        "chunk_latency_ms_p50": at.get("chunk_latency_ms_p50") if at else None,
        "levels_tested": [r["streams"] for r in runs],
        "capacity_repeats": [{k: a.get(k) for k in ("streams", "phase", "sustained", "chunk_latency_ms_p95")}
                             for a in (net.get("capacity_search") or {}).get("attempts", [])],
        "in_process_max_streams": inproc,
        "share_of_in_process": cap / inproc if inproc else None,
        # the same load in-process with the server's torch threads (same_threads_level)
        "in_process_same_threads": {k: same.get(k) for k in ("torch_threads", "sustained", "chunk_latency_ms_p95")}
        if (same := net.get("in_process_same_threads")) else None,
        "wer_at_max": at.get("wer") if at else None,
        "server_cpu_s_at_max": at.get("server_cpu_s") if at else None,
        "client_cpu_s_at_max": at.get("client_cpu_s") if at else None,
        "refused_streams_at_2x": ov.get("refused_streams"),
        "refused_counted_by_server_at_2x": ov.get("refused_counted_by_server"),
        "admitted_at_2x": ov.get("admitted_streams"),
        "admitted_p95_ms_at_2x": ov.get("chunk_latency_ms_p95"),
        "server_up_at_2x": ov.get("server_alive"),
        "shed_at_2x": ov.get("shed_chunks"),
    }
