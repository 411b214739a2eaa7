"""Smoke test of the Part 1 CLI at --quick size: the JSON carries the promised fields, the report renders."""

from __future__ import annotations

import json
import statistics

import pytest
from script_runner import script_runner

REQUIRED_SUMMARY = [
    "device", "baseline_latency_ms_p50", "optimized_latency_ms_p50", "optimized_latency_ms_p95",
    "latency_speedup", "optimized_throughput_per_s", "throughput_speedup", "continuous_vs_static_throughput",
    "fidelity_fp32_max_abs_mel_diff", "fidelity_reduced_precision_rel_l2", "baseline_peak_memory_mb",
    "optimized_peak_memory_mb",
]


run_cli = script_runner("optimized_tts_inference.py", timeout=300)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tts")
    proc = run_cli("--quick", "--poisson-requests", "4", "--output", str(out / "tts.json"),
                   "--report", str(out / "docs" / "tts.md"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "tts.json").read_text())


def test_quick_json_fields(quick_run):
    _, res = quick_run
    assert res["schema"] == "tts_benchmarks/1" and res["status"] == "complete"
    assert res["failures"] == []
    s = res["summary"]
    missing = [k for k in REQUIRED_SUMMARY if s.get(k) is None]
    assert not missing, missing
    for k in ("env", "config", "baseline", "latency", "waterfall", "schedulers", "batch_sweep", "fidelity",
              "memory", "profiles", "edge_cases"):
        assert res.get(k), k
    assert s["fidelity_fp32_max_abs_mel_diff"] <= 1e-4
    assert s["fidelity_fp32_frame_agreement"] == 1.0
    assert s["fidelity_reduced_precision_rel_l2"] <= 0.05
    assert s["latency_speedup"] > 1 and s["throughput_speedup"] > 1
    # The headline's optimized runs come in groups alternating with the baseline's runs of the same text
    # (group g before baseline run g, the last after the last run), all of them quoted.
    head = res["baseline"]["headline_optimized"]
    rounds = head["baseline_rounds"]
    assert rounds >= 3 and s["latency_interleaved_with_baseline"]
    base_row = res["baseline"]["per_text"][head["text_id"]]
    assert base_row["chars"] == s["latency_text_chars"] and len(base_row["latency_s"]) == rounds
    starts, groups = head["start_s"], head["group"]
    assert starts == sorted(starts) and sorted(set(groups)) == list(range(rounds + 1))
    for t, g in zip(starts, groups, strict=True):
        if g < rounds:
            assert t < base_row["start_s"][g]
        if g > 0:
            assert t >= base_row["start_s"][g - 1] + base_row["latency_s"][g - 1]
    assert len(s["latency_speedup_pairs"]) == rounds
    lo, hi = s["latency_speedup_spread"]
    assert lo <= hi and lo == min(s["latency_speedup_pairs"])
    # the model's own bytes beside the process peaks
    assert s["model_weight_bytes_optimized"] < s["model_weight_bytes_baseline"]
    assert s["kv_cache_bytes_peak"] > 0 and isinstance(s["weights_reach_50pct_reduction"], bool)
    others = [r["start_s"][0] for r in res["baseline"]["per_text"] if r["id"] != head["text_id"]]
    assert not any(starts[0] < t < starts[-1] for t in others)  # no other baseline text between them
    assert s["optimized_latency_ms_p50"] == pytest.approx(1e3 * statistics.median(head["latency_s"]))
    sch = res["schedulers"]
    assert sch["max_frames"] == res["config"]["sched_max_frames"]
    assert max(sch["request_frames"]) <= sch["max_frames"]
    # Poisson arrivals take the first --poisson-requests of the same draw; both schedulers serve all of them.
    assert sch["poisson"]["requests"] == 4 < sch["requests"]
    assert sch["poisson"]["static"]["requests"] == sch["poisson"]["continuous"]["requests"] == 4
    b = sch["step_ratio_bound"]  # static / continuous steps: continuous never needs more
    assert b["min"] >= 1.0
    assert b["this_draw"] == sch["all_at_once"]["static"]["steps"] / sch["all_at_once"]["continuous"]["steps"]
    # Continuous vs the better of FIFO and length-bucketed static: one row per seeded draw, the headline
    # their median; the bucketed batcher serves every request and never needs more steps than FIFO.
    draws = sch["draws"]
    assert len(draws) == res["config"]["sched_draws"] == s["continuous_vs_best_static_draws"]
    for d in draws:
        assert d["continuous_vs_best_static_throughput"] == pytest.approx(
            d["continuous_texts_per_s"] / max(d["static_texts_per_s"], d["static_bucketed_texts_per_s"]))
        assert d["step_bound"]["steps"]["bucketed"] <= d["step_bound"]["steps"]["static"]
    assert s["continuous_vs_best_static_throughput"] == pytest.approx(
        statistics.median(d["continuous_vs_best_static_throughput"] for d in draws))
    lo, hi = s["continuous_vs_best_static_throughput_spread"]
    assert lo <= s["continuous_vs_best_static_throughput"] <= hi
    assert sch["all_at_once"]["static_bucketed"]["requests"] == sch["requests"]
    lo, hi = s["throughput_speedup_spread"]
    assert lo <= s["throughput_speedup"] <= hi and len(s["optimized_throughput_runs"]) == 3
    shortest_per_class = {}
    for t in res["texts"]:  # every length class is checked for fidelity, not only the shortest texts
        if t["category"] not in shortest_per_class or t["chars"] < len(shortest_per_class[t["category"]]):
            shortest_per_class[t["category"]] = t["text"]
    assert set(res["fidelity"]["texts"]) >= set(shortest_per_class.values()) and len(shortest_per_class) == 3
    edge = {c["case"]: c for c in res["edge_cases"]}
    assert edge["empty text"]["expected_error"] and not edge["empty text"]["ok"]
    assert edge["one character"]["ok"]
    mixed = edge["batch mixing 1 and max frames"]  # --quick mixes 1 with the quick clamp, a full run with 500
    assert mixed["max_frames"] == res["config"]["max_frames"] and mixed["frames"] == [1, mixed["max_frames"]]
    assert all(c["ok"] or c.get("expected_error") for c in res["edge_cases"])


def test_report_is_rendered_from_json_and_report_only_rerenders(quick_run):
    out, res = quick_run
    report = (out / "docs" / "tts.md").read_text()
    assert f"{res['summary']['latency_speedup']:.1f}x" in report
    assert (out / "docs" / "figures" / "tts_waterfall.png").exists()  # named after the report (tts.md)
    (out / "docs" / "tts.md").unlink()
    proc = run_cli("--report-only", "--output", str(out / "tts.json"), "--report", str(out / "docs" / "tts.md"))
    assert proc.returncode == 0, proc.stderr
    assert (out / "docs" / "tts.md").read_text() == report


def test_cli_input_errors_are_clear(tmp_path):
    proc = run_cli("--quick", "--checkpoint", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "checkpoint not found" in proc.stderr
    bad = tmp_path / "texts.json"
    bad.write_text("{not json")
    proc = run_cli("--quick", "--texts", str(bad), "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "not valid JSON" in proc.stderr
    proc = run_cli("--report-only", "--output", str(tmp_path / "none.json"))
    assert proc.returncode != 0 and "run the benchmark first" in proc.stderr
    assert run_cli("--help").stdout.count("--") > 20
