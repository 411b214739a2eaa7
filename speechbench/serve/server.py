"""``production_streaming_asr.py serve``: build the engine and the app, run uvicorn, drain on SIGTERM.

Shutdown (SIGTERM, or the first Ctrl-C): new handshakes get 503, every live stream is finalized, the server
waits up to ``drain_timeout_s`` until each client has its last final and a close (1001), then uvicorn
stops. A second Ctrl-C quits at once (uvicorn's own handling).

``ServerThread`` runs the same server in a background thread on a free port (tests, the network
benchmark's in-process option) and stops it within a bounded time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from speechbench.common.cli import apply_args
from speechbench.serve.app import ServerApp
from speechbench.serve.config import ServerConfig
from speechbench.serve.offline import OfflineService, decode_wav, load, resolve_model
from speechbench.streaming.engine import StreamingEngine, StreamingEngineConfig
from speechbench.streaming.engine_args import add_engine_args

log = logging.getLogger(__name__)

# recognizes human speech and batches across streams (the own CTC model: synthetic speech only)
DEFAULT_MODEL = "moonshine-tiny"


@dataclass
class ServeOptions:
    model: str = DEFAULT_MODEL
    checkpoint: str = "models/ctc-streaming.pt"
    threads: int | None = None
    seed: int = 0
    # The queue holds a whole 1 s client frame (the contract's largest) plus a model chunk.
    engine: StreamingEngineConfig = field(default_factory=lambda: StreamingEngineConfig(max_streams=64,
                                                                                       max_queue_ms=1500.0))
    server: ServerConfig = field(default_factory=ServerConfig)


def build_app(opts: ServeOptions) -> ServerApp:
    """Load the streaming model, start its engine (warmed up), start loading the offline recognizer."""
    import torch

    from speechbench.streaming.models.registry import fit_engine_config, load_streaming_model

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.set_grad_enabled(False)
    loaded = load_streaming_model(opts.model, opts.engine.device, opts.threads, opts.checkpoint, opts.seed)
    explicit = [] if loaded.model.frame_ms is None else ["endpoint"]
    ec = fit_engine_config(loaded.model, opts.engine, explicit)
    if loaded.model.frame_ms is None and opts.engine.endpoint == "blank":
        ec.endpoint = "vad"
    engine = StreamingEngine(loaded.model, ec)
    engine.warmup((1, 8, min(64, ec.max_streams)))
    offline = None
    if opts.server.offline_model != "none":
        offline = OfflineService(opts.server.offline_model, opts.server.offline_queue, opts.threads)
    return ServerApp(engine, opts.server, offline, loaded.model.name)


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains the streams before uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, sapp: ServerApp) -> None:
        super().__init__(config)
        self.sapp = sapp
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self._drain_started and self._loop is not None:
            self._drain_started = True
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain_then_exit()))
            return
        super().handle_exit(sig, frame)

    def request_shutdown(self) -> None:
        """Drain and exit, from any thread (what SIGTERM does)."""
        self.handle_exit(signal.SIGTERM, None)

    async def _drain_then_exit(self) -> None:
        t0 = time.perf_counter()
        try:
            await self.sapp.drain()
        finally:
            log.info("drained in %.2f s", time.perf_counter() - t0)
            self.should_exit = True


def uvicorn_config(sapp: ServerApp, host: str, port: int, sock: socket.socket | None = None) -> uvicorn.Config:
    return uvicorn.Config(sapp.app, host=host, port=port, log_level="warning", ws="websockets-sansio",
                          interface="asgi3",  # sapp.app is a bound coroutine method: uvicorn's guess says ASGI2
                          loop="auto",  # uvloop when installed (a dependency off Windows), else asyncio
                          # No permessage-deflate: PCM barely compresses and the short JSON replies do not
                          # need it, yet deflating both ways took 13% of the server's CPU at 210 streams.
                          ws_per_message_deflate=False,
                          ws_max_size=16 * 2**20, lifespan="on", timeout_graceful_shutdown=5,
                          access_log=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """A running server in a background thread: ``with ServerThread(sapp) as st: st.url ...``."""

    def __init__(self, sapp: ServerApp, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.sapp = sapp
        self.host = host
        self.port = port or free_port(host)
        self.server = DrainingServer(uvicorn_config(sapp, host, self.port), sapp)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.perf_counter() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.perf_counter() > deadline:
                raise RuntimeError(f"server on {self.url} did not start within {timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0, drain: bool = True) -> None:
        if drain:
            self.server.request_shutdown()
        else:
            self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)
        self.sapp.engine.stop()
        if self.sapp.offline is not None:
            self.sapp.offline.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(opts: ServeOptions) -> int:
    sapp = build_app(opts)
    cfg = opts.server
    print(f"serving {sapp.model_name} on ws://{cfg.host}:{cfg.port}/v1/stream (max {sapp.engine.cfg.max_streams} "
          f"streams); POST http://{cfg.host}:{cfg.port}/v1/transcribe "
          f"({sapp.offline.spec if sapp.offline else 'off'}); GET /metrics /healthz", file=sys.stderr, flush=True)
    server = DrainingServer(uvicorn_config(sapp, cfg.host, cfg.port), sapp)
    try:
        server.run()
    finally:
        sapp.engine.stop()
        if sapp.offline is not None:
            sapp.offline.close()
    return 0


def transcribe_file(path: str, spec: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """What POST /v1/transcribe returns for this file, computed without a server (the offline CLI)."""
    name = resolve_model(spec)
    if name is None:
        raise SystemExit(f"no offline recognizer available for --offline-model {spec!r}")
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"no such audio file: {path}")
    audio, duration = decode_wav(p.read_bytes())
    rec = load(name, threads)
    try:
        text = rec.transcribe([audio])[0]
    finally:
        rec.close()
    return {"text": text, "duration_s": round(duration, 3), "model": name}


def transcribe_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="production_streaming_asr.py transcribe",
                                description="Transcribe audio files offline, printing what POST /v1/transcribe "
                                "would return (one JSON line per file).")
    p.add_argument("files", nargs="+", help="audio files (WAV/FLAC/OGG; any rate, mono or stereo)")
    p.add_argument("--offline-model", default="auto", help="Part 2 recognizer spec, or auto = the most "
                   "accurate installed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the recognizer")
    a = p.parse_args(argv)
    for f in a.files:
        print(json.dumps(transcribe_file(f, a.offline_model, a.threads)))
    return 0


def build_serve_parser() -> argparse.ArgumentParser:
    d, e = ServerConfig(), ServeOptions().engine
    p = argparse.ArgumentParser(
        prog="production_streaming_asr.py serve",
        description="Serve the continuous-batching streaming engine: WS /v1/stream (16-bit PCM in, JSON "
        "partials/finals out), POST /v1/transcribe (WAV in, text out), GET /metrics (Prometheus), GET /healthz. "
        "See the README's 'Serving' section for the contract and a client.")
    g = p.add_argument_group("network")
    g.add_argument("--host", default=d.host, help="bind address; loopback unless you mean to expose it "
                   "(default: %(default)s)")
    g.add_argument("--port", type=int, default=d.port, help="TCP port (default: %(default)s)")
    g.add_argument("--idle-timeout-s", type=float, default=d.idle_timeout_s,
                   help="a WebSocket that sends nothing this long gets an error frame and close 1008 "
                   "(default: %(default)g)")
    g.add_argument("--max-frame-ms", type=float, default=d.max_frame_ms,
                   help="largest binary frame, in ms of audio; larger frames get close 1009 (default: %(default)g)")
    g.add_argument("--drain-timeout-s", type=float, default=d.drain_timeout_s,
                   help="on SIGTERM, how long live streams get to receive their finals (default: %(default)g)")
    g = p.add_argument_group("models")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="streaming recognizer: moonshine-tiny, moonshine-base (re-decoded batched across streams, "
                   "LocalAgreement-2), whisper-tiny.en, whisper-base (the same policy, Whisper), "
                   "moonshine-tiny-native (its own streaming API, per stream), ctc-streaming (the own CTC model: "
                   "synthetic speech only, highest capacity), ctc:<checkpoint.pt> (default: %(default)s)")
    g.add_argument("--checkpoint", default=ServeOptions.checkpoint, help="checkpoint for ctc-streaming "
                   "(default: %(default)s)")
    g.add_argument("--offline-model", default=d.offline_model,
                   help="recognizer for POST /v1/transcribe (a Part 2 spec such as whisper-base-int8, "
                   "whisper-tiny.en-int8, moonshine-tiny, pocketsphinx); auto = the most accurate installed; "
                   "none = off (default: %(default)s)")
    g.add_argument("--offline-queue", type=int, default=d.offline_queue,
                   help="transcriptions waiting or running; beyond it 503 + Retry-After (default: %(default)s)")
    g.add_argument("--max-body-mb", type=float, default=d.max_body_mb,
                   help="largest POST body; beyond it 413 (default: %(default)g)")
    g.add_argument("--threads", type=int, default=None, help="torch/CTranslate2 CPU threads")
    add_engine_args(p.add_argument_group("engine"), e, endpoints=("blank", "vad", "none"),
                    admission="the handshake of stream max-streams+1 gets HTTP 503")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def options_from_args(a: argparse.Namespace) -> ServeOptions:
    # The engine flags (engine_args) copied by name; the engine's own idle timeout stays behind the
    # server's, which closes an idle connection with its own error frame first.
    ec = apply_args(StreamingEngineConfig(idle_timeout_s=max(a.idle_timeout_s + 5, 30.0)), a,
                    skip=("device", "idle_timeout_s"))
    sc = ServerConfig(host=a.host, port=a.port, idle_timeout_s=a.idle_timeout_s, max_frame_ms=a.max_frame_ms,
                      drain_timeout_s=a.drain_timeout_s, offline_model=a.offline_model,
                      offline_queue=a.offline_queue, max_body_mb=a.max_body_mb)
    if a.max_queue_ms < a.max_frame_ms + 100:
        raise SystemExit(f"--max-queue-ms ({a.max_queue_ms:g}) must hold a whole frame (--max-frame-ms "
                         f"{a.max_frame_ms:g}) plus a model chunk")
    try:
        ec.validate()
    except ValueError as err:
        raise SystemExit(f"invalid engine settings: {err}") from None
    if a.max_frame_ms <= 0 or a.idle_timeout_s <= 0 or a.offline_queue < 1:
        raise SystemExit("--max-frame-ms, --idle-timeout-s and --offline-queue must be positive")
    return ServeOptions(model=a.model, checkpoint=a.checkpoint, threads=a.threads, engine=ec, server=sc)


def serve_main(argv: list[str]) -> int:
    a = build_serve_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve_forever(options_from_args(a))
