"""Smoke test of the Part 3 CLI at --quick size: the JSON carries the promised fields, the report renders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from script_runner import ROOT, script_runner

from speechbench.streaming.loadgen import StreamScript, UttAudio, speech_bounds

CHECKPOINT = ROOT / "models" / "ctc-streaming.pt"
RUN_KEYS = ["streams", "chunk_ms", "chunk_latency_ms_p50", "chunk_latency_ms_p95", "chunk_latency_ms_p99",
            "first_partial_ms_p95", "finalization_ms_p95", "rtf", "batch_utilization", "shed_chunks",
            "dropped_chunks", "peak_memory_mb", "wer"]


run_cli = script_runner("production_streaming_asr.py", timeout=300)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("streaming")
    ckpt = str(CHECKPOINT) if CHECKPOINT.exists() else "random"
    proc = run_cli("--quick", "--checkpoint", ckpt, "--output", str(out / "s.json"),
                   "--report", str(out / "docs" / "s.md"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "s.json").read_text())


def test_quick_json_fields(quick_run):
    _, res = quick_run
    assert res["schema"] == "streaming_performance/1" and res["status"] == "complete"
    assert res["failures"] == []
    s = res["summary"]
    for k in ("max_streams_p95_under_100ms", "wer_streaming", "wer_offline", "runs", "targets"):
        assert k in s, k
    assert isinstance(s["runs"], list) and len(s["runs"]) == len(res["config"]["streams"])
    for r in s["runs"]:
        missing = [k for k in RUN_KEYS if k not in r]
        assert not missing, missing
        assert r["chunk_latency_ms_p50"] <= r["chunk_latency_ms_p95"] <= r["chunk_latency_ms_p99"]
        assert r["rtf"] > 0 and 0 < r["batch_utilization"] <= 1.0 and r["peak_memory_mb"] > 0
    assert isinstance(s["max_streams_p95_under_100ms"], int)  # the level itself depends on how busy the CPU is
    # The headline capacity is the capacity search's confirmed level: it held in 2 runs, each one listed.
    search = s["capacity_search"]["sweep"]
    assert search["confirmed_streams"] == s["max_streams_p95_under_100ms"]
    held = [a for a in s["capacity_repeats"]["sweep"] if a["streams"] == search["confirmed_streams"]]
    assert search["confirmed_streams"] == 0 or sum(a["sustained"] for a in held) >= 2
    assert {a["phase"] for a in s["capacity_repeats"]["sweep"]} <= {"sweep", "confirm", "bisect"}
    if s["max_streams_p95_under_100ms"]:
        assert [r["chunk_ms"] for r in s["chunk_sizes"]] == res["config"]["alt_chunk_ms"]
    assert res["parity"]["identical_rate"] == 1.0  # engine == offline pass, exactly
    ov = res["overload"]
    assert ov["stayed_up"]
    # Admission is capped at the capacity the sweep measured: never more admitted than that.
    assert ov["admission_cap"] == max(1, s["max_streams_p95_under_100ms"])
    assert ov["admitted_streams"] <= ov["admission_cap"]
    assert ov["admitted_streams"] + ov["refused_streams"] == ov["streams"]
    for k in ("env", "config", "setup", "offline", "sweep", "baseline"):
        assert res.get(k), k
    if CHECKPOINT.exists():
        assert s["single_stream"]["first_partial_ms_p95"] is not None
    # the pretrained recognizers served by the same engine, one table row each, beside the CTC model
    rows = {r["model"]: r for r in s["models"]}
    assert list(rows)[0] in ("ctc-streaming", "ctc-random")
    # the CTC row of the table quotes the headline's confirmed capacities, not the coarse sweep's
    ctc_row = rows[list(rows)[0]]
    assert ctc_row["max_sustained_streams"] == s["max_streams_p95_under_100ms"]
    assert ctc_row["per_stream_max_sustained_streams"] == s["baseline_max_streams_p95_under_100ms"]
    for name in res["config"]["compare_models"]:
        rec = res["models"][name]
        row = rows[name]
        assert rec["sweep"] and row["levels_tested"][0] == 1
        assert row["wer_streaming"] is not None and row["wer_offline"] is not None
        assert row["latency_bound_ms"] > res["config"]["latency_bound_ms"]  # buffers a longer chunk
        assert row["rtf_p50"] > 0
        # quick levels are seconds long: a 1-stream level that replayed a long recording completed none
        assert row["first_partial_ms_p95"] is not None or not row.get("utterances_scored")
        # real pretrained models recognize this speech: the streaming transcript is mostly right
        assert row["wer_streaming"] < 0.5, (name, row["wer_streaming"])
    if "whisper-tiny.en" in rows:
        assert res["models"]["whisper-tiny.en"]["baseline"]  # the same policy per stream (max batch 1)
    # the same engine behind `serve`, driven by WebSocket clients; then twice its capacity
    net = s["network"]
    for k in ("max_streams_p95_under_100ms", "chunk_latency_ms_p95", "refused_streams_at_2x"):
        assert k in net, k
    run = res["network"]["runs"][0]
    assert run["admitted_streams"] == run["streams"] and run["chunks_measured"] > 0
    assert run["close_codes"] == {"1000": run["streams"]} and run["unacked_frames"] == 0
    if net["max_streams_p95_under_100ms"]:
        # the same load in-process with the server's torch threads, beside the network figures
        same = res["network"]["in_process_same_threads"]
        assert same["torch_threads"] == 1 and same["streams"] == net["max_streams_p95_under_100ms"]
        assert same["chunk_latency_ms_p95"] is not None and net["in_process_same_threads"]["torch_threads"] == 1
        ov = res["network"]["overload"]
        assert ov["server_alive"] and ov["admitted_streams"] == ov["admission_cap"]
        assert ov["refused_streams"] == ov["streams"] - ov["admission_cap"] == ov["refused_counted_by_server"]


def test_report_is_rendered_from_json_and_report_only_rerenders(quick_run):
    out, res = quick_run
    report = (out / "docs" / "s.md").read_text()
    assert "## Load sweep" in report and "## Targets" in report
    if res["network"].get("in_process_same_threads"):  # the like-for-like line under the network table
        same = res["network"]["in_process_same_threads"]
        assert f"The same {same['streams']} streams in-process with the server's 1 torch thread(s)" in report
    assert f"engine **{res['summary']['max_streams_p95_under_100ms']}** streams" in report
    # how the CTC step ran is recorded and stated (random weights trace like trained ones)
    assert res["model"]["step"] == {"graph": "torchscript trace"} and "one traced TorchScript graph" in report
    assert (out / "docs" / "figures" / "s_latency.png").exists()
    (out / "docs" / "s.md").unlink()
    proc = run_cli("--report-only", "--output", str(out / "s.json"), "--report", str(out / "docs" / "s.md"))
    assert proc.returncode == 0, proc.stderr
    assert (out / "docs" / "s.md").read_text() == report


def test_cli_input_errors_are_clear(tmp_path):
    proc = run_cli("--quick", "--checkpoint", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "checkpoint not found" in proc.stderr
    proc = run_cli("--quick", "--checkpoint", "random", "--model-chunk-ms", "50", "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "multiple of 20" in proc.stderr
    proc = run_cli("--quick", "--checkpoint", "random", "--max-queue-ms", "300", "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "max_queue_ms must hold" in proc.stderr
    proc = run_cli("--report-only", "--output", str(tmp_path / "none.json"))
    assert proc.returncode != 0 and "run the benchmark first" in proc.stderr
    assert run_cli("--help").stdout.count("--") > 30


def test_client_chunks_up_to_the_cli_limit_are_accepted():
    from speechbench.streaming.benchmark import StreamingBenchConfig, engine_config_for

    ec = engine_config_for(StreamingBenchConfig(chunk_ms=500, max_queue_ms=1000))
    ec.validate()
    assert ec.max_chunk_ms >= 500  # a 450-500 ms client chunk must not be rejected as oversize


def test_reference_timing_and_stream_script():
    sr = 16000
    rng = np.random.default_rng(0)
    x = (1e-3 * rng.standard_normal(3 * sr)).astype(np.float32)
    x[sr // 2: 2 * sr] += 0.3 * np.sin(np.arange(sr + sr // 2) / 5).astype(np.float32)
    on, off = speech_bounds(x)
    assert abs(on - sr // 2) <= 160 and abs(off - 2 * sr) <= 160
    pool = [UttAudio("u0", "a", x, on, off), UttAudio("u1", "b", x[: sr], 0, sr)]
    floor = np.zeros(sr, np.float32)
    script = StreamScript(pool, np.array([0, 1]), np.random.default_rng(1), (0.3, 0.3), floor)
    got = np.concatenate([script.read(640) for _ in range(200)])
    assert np.array_equal(got[: 3 * sr], x)  # the first utterance, then a gap, then the next
    assert [s.utt for s in script.spans[:2]] == [0, 1]
    assert script.spans[1].start == script.spans[0].next_start == 3 * sr + int(0.3 * sr)
    assert np.array_equal(got[script.spans[1].start: script.spans[1].start + sr], x[:sr])
