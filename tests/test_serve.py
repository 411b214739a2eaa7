"""The network server (issue 17), tested through real sockets: a uvicorn server on 127.0.0.1 and a free port
in a background thread (or a subprocess for SIGTERM), real WebSocket and HTTP clients, bounded in time.

The streaming model is the project's causal CTC model (fast to load; its streaming output does not depend
on how the audio is chunked or batched, so a final over the network must equal the in-process final)."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from speechbench.serve.config import ServerConfig
from speechbench.serve.netload import pcm16, scrape, stream_audio
from speechbench.serve.resample import StreamResampler
from speechbench.serve.server import ServeOptions, ServerThread, build_app, free_port
from speechbench.streaming.engine import StreamingEngineConfig

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    from speechbench.speech.audio import resample
    from speechbench.speech.espeak import EspeakVoice, synthesize_espeak

    speech, sr = synthesize_espeak("she sells fresh fish at the harbour every morning", EspeakVoice("en-us"))
    pad = np.zeros(SR // 4, np.float32)
    rng = np.random.default_rng(0)
    wave = np.concatenate([pad, resample(speech, sr, SR).astype(np.float32), pad, pad])
    return (wave + 1e-4 * rng.standard_normal(len(wave))).astype(np.float32)


def make_server(**server_over) -> ServerThread:
    opts = ServeOptions(model="ctc-streaming",
                        engine=StreamingEngineConfig(max_streams=server_over.pop("max_streams", 6),
                                                     max_queue_ms=1500.0),
                        server=ServerConfig(offline_model=server_over.pop("offline_model", "none"),
                                            **server_over))
    return ServerThread(build_app(opts)).start()


@pytest.fixture(scope="module")
def server():
    st = make_server(idle_timeout_s=1.5)
    yield st
    st.stop(timeout=10)


def ws_connect(url: str):
    from websockets.sync.client import connect

    return connect(url, open_timeout=10, close_timeout=5, max_size=2**20)


def finals_of(messages: list[dict]) -> str:
    return " ".join(m["text"] for m in messages if m["type"] == "final" and m["text"])


def in_process_finals(wave: np.ndarray) -> str:
    """The same model in the engine directly, the same 40 ms chunks: the reference for the network path."""
    from speechbench.streaming import StreamingEngine
    from speechbench.streaming.models.registry import load_streaming_model

    events = []
    model = load_streaming_model("ctc-streaming").model
    eng = StreamingEngine(model, StreamingEngineConfig(max_streams=1, max_queue_ms=1500.0), on_event=events.append)
    try:
        eng.add_stream("a")
        for k in range(0, len(wave), 640):
            eng.process_chunk("a", np.ascontiguousarray(wave[k: k + 640]))
            while eng.backlog_samples() > SR // 2:
                time.sleep(0.002)
        eng.finalize_stream("a").result(timeout=30)
    finally:
        eng.stop()
    return " ".join(e.text for e in events if e.kind == "final" and e.text)


def test_round_trip_of_a_sentence_matches_the_engine_in_process(server, sentence):
    msgs = asyncio.run(stream_audio(server.ws_url + "/v1/stream?sample_rate=16000", sentence))
    assert msgs[-1]["type"] == "final" and msgs[-1]["reason"] == "finalize"
    text = finals_of(msgs)
    assert len(text.split()) >= 4  # the model hears most of this synthetic sentence
    assert text == in_process_finals(pcm16_roundtrip(sentence))
    partials = [m for m in msgs if m["type"] == "partial"]
    assert partials and all(m["audio_ms"] <= msgs[-1]["audio_ms"] for m in partials)
    assert any(m["text"] for m in partials)  # text appeared before the end


def pcm16_roundtrip(wave: np.ndarray) -> np.ndarray:
    return np.frombuffer(pcm16(wave), dtype="<i2").astype(np.float32) / 32768.0


def test_two_clients_at_once_get_their_own_transcripts(server, sentence):
    silence = np.zeros(len(sentence), np.float32)

    async def both():
        url = server.ws_url + "/v1/stream"
        return await asyncio.gather(stream_audio(url, sentence, realtime=True),
                                    stream_audio(url, silence, realtime=True))

    speech_msgs, silent_msgs = asyncio.run(both())
    assert len(finals_of(speech_msgs).split()) >= 4
    assert finals_of(silent_msgs) == ""  # nothing leaked from the other stream


def test_a_48_khz_stream_is_resampled(server, sentence):
    wave48 = resample_poly(sentence, 3, 1).astype(np.float32)
    msgs = asyncio.run(stream_audio(server.ws_url + "/v1/stream?sample_rate=48000", wave48, chunk_ms=40))
    # 40 ms frames "at 16 kHz" are 1920-sample frames of 48 kHz audio here: sent as 3 x 640-sample pieces
    assert len(finals_of(msgs).split()) >= 3


def test_stream_resampler_matches_whole_signal_resampling():
    for sr in (8000, 44100, 48000):
        t = np.arange(sr) / sr
        x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1700 * t)).astype(np.float32)
        r = StreamResampler(sr)
        rng = np.random.default_rng(1)
        out, i = [], 0
        while i < len(x):
            n = int(rng.integers(sr // 100, sr // 4))
            out.append(r(x[i: i + n]))
            i += n
        y = np.concatenate(out)
        ref = resample_poly(x, r.up, r.down)
        d = r.delay_samples_out
        m = min(len(y) - d, len(ref))
        assert m > 0.95 * len(ref)
        assert np.abs(y[d: d + m] - ref[:m]).max() < 1e-4


def test_handshake_past_capacity_is_refused_with_503():
    from websockets.exceptions import InvalidStatus

    st = make_server(max_streams=1)
    try:
        with ws_connect(st.ws_url + "/v1/stream") as first:
            with pytest.raises(InvalidStatus) as e:
                with ws_connect(st.ws_url + "/v1/stream"):
                    pass
            assert e.value.response.status_code == 503
            assert b"capacity" in e.value.response.body
            assert e.value.response.headers.get("Retry-After") == "1"
            first.send(json.dumps({"type": "end"}))
            first.recv(timeout=10)
        m = scrape(st.url)
        assert m["speechbench_streams_refused_total{reason=capacity}"] == 1
        assert m["speechbench_streams_admitted_total"] == 1
    finally:
        st.stop(timeout=10)


def test_unsupported_sample_rate_is_refused_with_400(server):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as e:
        with ws_connect(server.ws_url + "/v1/stream?sample_rate=12345"):
            pass
    assert e.value.response.status_code == 400 and b"sample_rate" in e.value.response.body


GARBAGE = {
    "not_json": ("text", "hello there", 1007),
    "unknown_type": ("text", json.dumps({"type": "rewind"}), 1007),
    "odd_length_pcm": ("bytes", b"\x00" * 641, 1007),
    "nan_floats": ("f32", np.array([0.1, np.nan, 0.2] * 100, dtype="<f4").tobytes(), 1007),
    "ten_mb_frame": ("bytes", b"\x00" * (10 * 2**20), 1009),
    "idle": ("idle", None, 1008),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_closes_only_its_own_connection(server, sentence, name):
    kind, payload, code = GARBAGE[name]
    result: dict = {}

    def good_client():  # a well-behaved stream running through the bad one's lifetime
        result["msgs"] = asyncio.run(stream_audio(server.ws_url + "/v1/stream", sentence, realtime=True))

    th = threading.Thread(target=good_client)
    th.start()
    url = server.ws_url + "/v1/stream" + ("?encoding=pcm_f32le" if kind == "f32" else "")
    from websockets.exceptions import ConnectionClosed

    msgs = []
    with ws_connect(url) as bad:
        bad.send(pcm16(sentence[:3200]) if kind != "f32" else sentence[:3200].astype("<f4").tobytes())
        if kind != "idle":
            bad.send(payload)
        try:
            while True:
                msgs.append(json.loads(bad.recv(timeout=15)))
        except ConnectionClosed:
            pass
    errors = [m for m in msgs if m["type"] == "error"]
    assert errors, msgs
    assert bad.close_code == code, (bad.close_code, errors)
    th.join(timeout=30)
    assert len(finals_of(result["msgs"]).split()) >= 4  # the other connection was not affected
    assert result["msgs"][-1]["type"] == "final"


def test_metrics_parse_and_move(server, sentence):
    before = scrape(server.url)
    asyncio.run(stream_audio(server.ws_url + "/v1/stream", sentence))
    after = scrape(server.url)
    assert after["speechbench_streams_admitted_total"] == before["speechbench_streams_admitted_total"] + 1
    assert after["speechbench_chunk_latency_seconds_count"] > before["speechbench_chunk_latency_seconds_count"]
    assert after["speechbench_batch_size_count"] > before["speechbench_batch_size_count"]
    assert after["speechbench_finalization_latency_seconds_count{trigger=end}"] >= 1
    assert "speechbench_live_streams" in after and "speechbench_chunks_shed_total" in after
    with urllib.request.urlopen(server.url + "/healthz", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"


def wav_bytes(audio: np.ndarray, sr: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    data = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    sf.write(buf, data, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def post(url: str, body: bytes) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url + "/v1/transcribe", data=body, method="POST",
                                 headers={"Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def test_transcribe_endpoint_matches_the_offline_cli(sentence, tmp_path):
    st = make_server(offline_model="pocketsphinx", max_body_mb=1.0)
    try:
        five_s = np.concatenate([sentence, np.zeros(5 * SR - len(sentence), np.float32)])[: 5 * SR]
        path = tmp_path / "five.wav"
        # stereo at 22.05 kHz: the endpoint downmixes and resamples
        path.write_bytes(wav_bytes(resample_poly(five_s, 441, 320).astype(np.float32), 22050, channels=2))
        assert st.sapp.offline.ready.wait(60)
        status, body, _ = post(st.url, path.read_bytes())
        assert status == 200, body
        assert body["model"] == "pocketsphinx" and abs(body["duration_s"] - 5.0) < 0.01
        cli = subprocess.run([sys.executable, "production_streaming_asr.py", "transcribe", str(path),
                              "--offline-model", "pocketsphinx"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout.strip().splitlines()[-1])["text"] == body["text"]
        assert body["text"].strip()
        status, body, _ = post(st.url, b"this is not audio")
        assert status == 400 and body["kind"] == "bad_audio"
        # a body over the limit is refused on its Content-Length, before it is sent
        conn = http.client.HTTPConnection("127.0.0.1", st.port, timeout=30)
        conn.putrequest("POST", "/v1/transcribe")
        conn.putheader("Content-Length", str(2 * 2**20))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["kind"] == "too_large"
        conn.close()
    finally:
        st.stop(timeout=10)


def test_transcribe_queue_full_answers_503_with_retry_after(sentence):
    st = make_server(offline_model="pocketsphinx", offline_queue=1)
    release = threading.Event()

    class Blocking:
        def transcribe(self, batch):
            release.wait(30)
            return ["held"]

        def close(self):
            pass

    try:
        assert st.sapp.offline.ready.wait(60)
        st.sapp.offline.recognizer = Blocking()
        body = wav_bytes(sentence, SR)
        first: dict = {}
        th = threading.Thread(target=lambda: first.update(r=post(st.url, body)))
        th.start()
        deadline = time.time() + 10
        while st.sapp.offline.depth == 0 and time.time() < deadline:
            time.sleep(0.01)
        status, err, headers = post(st.url, body)
        assert status == 503 and err["kind"] == "busy" and headers.get("retry-after") == "1"
        release.set()
        th.join(20)
        assert first["r"][0] == 200 and first["r"][1]["text"] == "held"
    finally:
        release.set()
        st.stop(timeout=10)


def test_sigterm_flushes_finals_and_exits(sentence):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "production_streaming_asr.py", "serve", "--model", "ctc-streaming",
                             "--port", str(port), "--offline-model", "none", "--threads", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "server did not start"
                time.sleep(0.2)
        from websockets.exceptions import ConnectionClosed

        msgs = []
        with ws_connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            for k in range(0, len(sentence) - 1600, 640):  # all but the tail: the utterance is still open
                ws.send(pcm16(sentence[k: k + 640]))
            time.sleep(0.5)
            t0 = time.time()
            proc.send_signal(signal.SIGTERM)
            try:
                while True:
                    msgs.append(json.loads(ws.recv(timeout=15)))
            except ConnectionClosed:
                pass
            code = ws.close_code
        assert any(m["type"] == "final" and m["text"] for m in msgs), msgs[-3:]
        assert code == 1001
        proc.wait(timeout=20)
        assert time.time() - t0 < 20
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- the load generator's lean client (serve/wsclient.py) ------------------------------------------------------


def test_lean_client_gets_the_same_messages_as_the_asyncio_client(server, sentence):
    from speechbench.serve.wsclient import open_connection

    async def lean() -> tuple[list[dict], int | None]:
        got: list[dict] = []
        conn = await open_connection(server.ws_url + "/v1/stream", lambda t, now: got.append(json.loads(t)))
        for k in range(0, len(sentence), 640):
            conn.send_binary(pcm16(sentence[k: k + 640]))
        conn.send_text(json.dumps({"type": "end"}))
        code = await asyncio.wait_for(conn.closed, 30)
        return got, code

    ref = asyncio.run(stream_audio(server.ws_url + "/v1/stream", sentence))
    got, code = asyncio.run(lean())
    assert code == 1000 and got[-1]["type"] == "final" and got[-1]["reason"] == "finalize"
    assert finals_of(got) == finals_of(ref) and len(finals_of(got).split()) >= 4


def test_lean_client_reports_a_refused_handshake_with_its_status():
    from speechbench.serve.wsclient import HandshakeRefused, open_connection

    st = make_server(max_streams=1)

    async def two() -> int:
        first = await open_connection(st.ws_url + "/v1/stream", lambda t, now: None)
        try:
            with pytest.raises(HandshakeRefused) as e:
                await open_connection(st.ws_url + "/v1/stream", lambda t, now: None)
            return e.value.status
        finally:
            first.abort()

    try:
        assert asyncio.run(two()) == 503
    finally:
        st.stop(timeout=10)


def test_pacer_calls_each_frame_in_order_and_never_before_it_is_due():
    from speechbench.serve.wsclient import Pacer

    calls: list[tuple[str, float, float]] = []

    async def run() -> None:
        pacer = Pacer()
        t0 = time.perf_counter() + 0.01
        done = asyncio.get_running_loop().create_future()

        def client(name: str, period: float, n: int):
            sent = [0]

            def fn(due: float) -> float | None:
                calls.append((name, due, time.perf_counter()))
                sent[0] += 1
                if len(calls) == 16:
                    done.set_result(None)
                return None if sent[0] == n else due + period
            return fn

        pacer.add(t0, client("a", 0.0031, 10))
        pacer.add(t0 + 0.0007, client("b", 0.0057, 6))
        await asyncio.wait_for(done, 5)

    asyncio.run(run())
    assert len(calls) == 16
    assert all(now >= due for _, due, now in calls)  # a frame's audio exists before it is sent
    assert [d for _, d, _ in calls] == sorted(d for _, d, _ in calls)
    for name in "ab":
        dues = [d for n, d, _ in calls if n == name]
        assert len(set(dues)) == len(dues)


def test_network_load_replays_every_frame_and_scores_finals(server, sentence):
    from speechbench.serve.netload import run_network_load
    from speechbench.streaming.loadgen import LoadConfig, UttAudio

    pool = [UttAudio("s", "she sells fresh fish at the harbour every morning", sentence, SR // 4,
                     len(sentence) - SR // 2)]
    cfg = LoadConfig(streams=3, duration_s=2.0, ramp_s=0.2, seed=3)
    out = run_network_load(server.ws_url, pool, cfg)
    stats = out["stats"]
    frames = out["total_samples"] // 640
    assert all(t.admitted and t.done and not t.error for t in out["tracks"])
    assert [t.chunks for t in out["tracks"]] == [frames] * 3
    assert stats.latency.n == 3 * frames and stats.unacked_frames == 0
    assert stats.closes == {"1000": 3} and not stats.refused and not stats.errors
    assert all(t.finals and t.finals[-1][5] == "finalize" for t in out["tracks"])


@pytest.mark.skipif(importlib.util.find_spec("moonshine_voice") is None, reason="moonshine-voice not installed")
def test_overload_never_yields_a_final_from_dropped_audio_without_an_error_frame():
    """Continuous real speech from 8 clients at four times real time (32 live streams' worth, beyond this
    machine's capacity for the model) into a server whose queues hold 1.5 s and
    which sheds at once (no back-pressure wait): audio is dropped, and every client whose audio was dropped
    is told with an audio_dropped error frame before any final built from it, which says it is incomplete;
    the dropped chunks the finals report add up to what the server shed."""
    from speechbench.speech.audio import load_audio
    from speechbench.speech.pauses import compress_pauses
    from speechbench.speech.recorded import assets_dir

    speech = compress_pauses(load_audio(assets_dir() / "two_cities.wav"), 0.25)[: 12 * SR]
    opts = ServeOptions(model="moonshine-tiny", threads=2,
                        engine=StreamingEngineConfig(max_streams=8, max_queue_ms=1500.0, max_duty=2.0),
                        server=ServerConfig(offline_model="none", backpressure_s=0.0))
    st = ServerThread(build_app(opts)).start()
    try:
        async def clients():
            url = st.ws_url + "/v1/stream?sample_rate=16000"
            return await asyncio.gather(*[stream_audio(url, speech, pace=4.0, timeout=120) for _ in range(8)])

        results = asyncio.run(clients())
        shed = scrape(st.url).get("speechbench_chunks_shed_total", 0)
    finally:
        st.stop(timeout=20)
    assert shed > 0, "the server kept up: not an overload"
    reported = 0
    for msgs in results:
        kinds = [(m["type"], m.get("kind")) for m in msgs]
        assert msgs and msgs[-1]["type"] == "final"  # every stream still finished normally
        first_drop = next((i for i, k in enumerate(kinds) if k == ("error", "audio_dropped")), None)
        for i, m in enumerate(msgs):
            if m["type"] == "final" and m.get("incomplete"):
                assert first_drop is not None and first_drop < i
                reported += m["dropped_chunks"]
            if m["type"] == "final" and first_drop is None:
                assert not m.get("incomplete")
        assert all(not m.get("fatal", True) for m in msgs if m.get("kind") == "audio_dropped")
    assert reported == shed
