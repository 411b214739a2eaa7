"""compare_results.py, the regression gate: schema detection, the ASR paired WER test, timing tolerances,
capacity levels and exit statuses. Small synthetic runs in tmp_path and copies of the committed results;
no benchmark runs."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from speechbench.asr_eval import scoring
from speechbench.compare.asr import paired_test
from speechbench.compare.figures import IMPROVED, NOT_COMPARABLE, OK, REGRESSION, Options
from speechbench.compare.gate import compare_files, run
from speechbench.compare.loaders import UnusableInput

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
ENV = {"git_sha": "0" * 40, "git_dirty": False, "device": "cpu", "device_name": "CPU", "cpu_count": 2,
       "time_utc": "2026-12-01T00:00:00+00:00"}


# --- synthetic runs -------------------------------------------------------------------------------------


def _summarize(run: dict) -> dict:
    """Recompute summary.models (n, ref_words, errors, wer) from the records, as the evaluation does."""
    models: dict[str, dict] = {}
    for r in run["utterances"]:
        m = models.setdefault(r["model"], {"n": 0, "ref_words": 0, "errors": 0, "status": "ok"})
        m["n"] += 1
        m["ref_words"] += r["ref_words"]
        m["errors"] += r["errors"]
    for m in models.values():
        m["wer"] = m["errors"] / m["ref_words"]
    run["summary"]["models"] = models
    return run


def asr_run(models=("model-a", "model-b"), dialects=("en-us", "en-gb"), per_dialect=25) -> dict:
    utts = []
    for k, m in enumerate(models):
        for d in dialects:
            for i in range(per_dialect):
                n_ref = 8 + i % 5
                errors = (3 * i + k) % 4  # 0..3 errors: a WER near 15 %
                utts.append({"model": m, "id": f"{d}_u{i:03d}", "dialect": d, "speaker": f"{d}-s{i % 3}",
                             "ref": " ".join(f"w{j}" for j in range(n_ref)), "ref_words": n_ref,
                             "errors": errors, "wer": errors / n_ref})
    run = {"schema": "asr_evaluation/1", "status": "complete", "env": dict(ENV), "config": {"quick": False},
           "models": {m: {"status": "ok"} for m in models}, "utterances": utts,
           "summary": {"quick": False, "models": {}}}
    return _summarize(run)


def degrade(run: dict, model: str, points: float, utterances: int | None = None) -> dict:
    """Add errors to ``model``'s records, one per utterance round-robin (over the first ``utterances``
    when given), until its corpus WER has risen by ``points`` (0.02 = 2 points); summary recomputed."""
    out = copy.deepcopy(run)
    recs = [r for r in out["utterances"] if r["model"] == model][:utterances]
    need = math.ceil(points * sum(r["ref_words"] for r in out["utterances"] if r["model"] == model))
    for j in range(need):
        r = recs[j % len(recs)]
        r["errors"] += 1
        r["wer"] = r["errors"] / r["ref_words"]
    return _summarize(out)


def write(tmp_path: Path, name: str, data: object) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def load_committed(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


# --- ASR ------------------------------------------------------------------------------------------------


def test_asr_run_against_itself_is_ok(tmp_path):
    base = write(tmp_path, "base.json", asr_run())
    code, out, err = run(base, base)
    assert code == 0 and err == ""
    assert "OK: no regression" in out and "| model-a WER |" in out and "| model-a WER [en-gb] |" in out


def test_asr_two_point_degradation_of_one_model_is_a_regression(tmp_path):
    base = asr_run()
    new = degrade(base, "model-b", 0.02)
    assert new["summary"]["models"]["model-b"]["wer"] - base["summary"]["models"]["model-b"]["wer"] >= 0.02
    code, out, _ = run(write(tmp_path, "b.json", base), write(tmp_path, "n.json", new))
    assert code == 1
    regressed = [line for line in out.splitlines() if line.startswith("regression:")]
    assert regressed and all("model-b" in line for line in regressed)
    assert any(line.startswith("regression: model-b WER:") for line in regressed)
    comp = compare_files(tmp_path / "b.json", tmp_path / "n.json")
    verdicts = {f.name: f.verdict for f in comp.figures}
    assert verdicts["model-a WER"] == OK and verdicts["model-b WER"] == REGRESSION
    # and the other way round it is an improvement, not a regression
    code, out, _ = run(tmp_path / "n.json", tmp_path / "b.json")
    assert code == 0 and {f.name: f.verdict for f in compare_files(tmp_path / "n.json", tmp_path / "b.json")
                          .figures}["model-b WER"] == IMPROVED


def test_committed_asr_results_degraded_by_two_points_fail_the_gate(tmp_path):
    base = load_committed("asr_evaluation_results.json")
    models = base["summary"]["models"]
    model = max((m for m in models if models[m].get("status") == "ok"), key=lambda m: models[m]["ref_words"])
    new = copy.deepcopy(base)
    recs = [r for r in new["utterances"] if r["model"] == model]
    need = math.ceil(0.02 * sum(r["ref_words"] for r in recs))
    j = 0
    # one inserted word per utterance, round-robin, rescored with the suite's scorer, until the errors rose by
    # `need` (an insertion after a final deletion turns it into a substitution: no new error)
    while sum(r["errors"] for r in recs) - models[model]["errors"] < need:
        r = recs[j % len(recs)]
        r["hyp_raw"] = r["hyp_raw"] + " zzzq"
        r.update(scoring.score(r["ref_raw"], r["hyp_raw"]).to_json())
        j += 1
    s = new["summary"]["models"][model]
    s["errors"] = sum(r["errors"] for r in recs)
    s["wer"] = s["errors"] / sum(r["ref_words"] for r in recs)
    assert s["wer"] - models[model]["wer"] >= 0.02
    b, n = write(tmp_path, "base.json", base), write(tmp_path, "new.json", new)
    code, out, _ = run(b, b)
    assert code == 0
    code, out, _ = run(b, n)
    assert code == 1 and f"regression: {model} WER:" in out
    assert all(model in line for line in out.splitlines() if line.startswith("regression:"))
    assert "disagrees with its records" not in out  # records and summary were changed consistently


def test_tolerance_and_significance_are_both_needed(tmp_path):
    base = asr_run(models=("m",), dialects=("en-us",), per_dialect=400)
    ref_total = sum(r["ref_words"] for r in base["utterances"])
    b = write(tmp_path, "b.json", base)
    # a big rise on two utterances: beyond the tolerance, not significant
    few = degrade(base, "m", 0.03, utterances=2)
    fig = compare_files(b, write(tmp_path, "few.json", few)).figures[0]
    assert fig.delta > 0.005 and fig.p_value > 0.05 and fig.verdict == OK and "not significant" in fig.note
    # a rise on many utterances, under the tolerance: significant, still ok
    small = degrade(base, "m", 0.0049 - 1 / ref_total)
    fig = compare_files(b, write(tmp_path, "small.json", small)).figures[0]
    assert 0 < fig.delta < 0.005 and fig.p_value < 0.05 and fig.verdict == OK
    # the same rise against a tighter tolerance: a regression
    code, _, _ = run(b, tmp_path / "small.json", Options(wer_tolerance=0.001))
    assert code == 1


def test_paired_test_p_value_equals_scipy():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, size=80)
    new = base + rng.choice([-1, 0, 0, 1, 1, 2], size=80)  # ties and zeros, as error counts have
    new = np.maximum(new, 0)
    mine = paired_test(base.tolist(), new.tolist())
    ref = sps.wilcoxon(new, base, zero_method="wilcox", method="asymptotic")
    assert mine["p_value"] == ref.pvalue  # the same number, not just close
    assert mine["statistic"] == pytest.approx(ref.statistic)
    # small untied differences: the exact null distribution, as scipy computes it
    b, n = [5, 3, 8, 2, 9, 4, 7], [6, 6, 4, 7, 15, 11, 15]
    mine = paired_test(b, n)
    assert mine["method"] == "exact"
    assert mine["p_value"] == sps.wilcoxon(n, b, method="exact").pvalue


def test_gate_p_value_is_scipys_on_the_records(tmp_path):
    base = asr_run(models=("m",), dialects=("en-us",), per_dialect=40)
    new = degrade(base, "m", 0.02)
    fig = compare_files(write(tmp_path, "b.json", base), write(tmp_path, "n.json", new)).figures[0]
    eb = np.array([r["errors"] for r in base["utterances"]])
    en = np.array([r["errors"] for r in new["utterances"]])
    assert fig.p_value == sps.wilcoxon(en, eb, zero_method="wilcox", method="asymptotic").pvalue


def test_different_utterance_sets_refused_unless_intersection(tmp_path):
    base = asr_run()
    new = copy.deepcopy(base)
    new["utterances"] = [r for r in new["utterances"] if not r["id"].endswith(("u003", "u007"))]
    _summarize(new)
    b, n = write(tmp_path, "b.json", base), write(tmp_path, "n.json", new)
    code, out, err = run(b, n)
    assert code == 2 and out == "" and "different utterances" in err and "--intersection" in err
    assert "4 only in BASE" in err
    code, out, err = run(b, n, Options(intersection=True))
    assert code == 0 and "intersection" in out
    fig = next(f for f in compare_files(b, n, Options(intersection=True)).figures if f.name == "model-a WER")
    assert "of 46 utterances" in fig.note


def test_different_references_refused(tmp_path):
    base = asr_run()
    new = copy.deepcopy(base)
    new["utterances"][0]["ref_words"] += 1
    new["utterances"][0]["ref"] += " extra"
    code, _, err = run(write(tmp_path, "b.json", base), write(tmp_path, "n.json", _summarize(new)))
    assert code == 2 and "different references" in err


def test_model_missing_from_one_run_is_not_comparable(tmp_path):
    base = asr_run(models=("model-a", "model-b"))
    new = asr_run(models=("model-a",))
    comp = compare_files(write(tmp_path, "b.json", base), write(tmp_path, "n.json", new))
    verdicts = {f.name: f.verdict for f in comp.figures}
    assert verdicts["model-b WER"] == NOT_COMPARABLE and verdicts["model-a WER"] == OK


# --- unusable inputs ------------------------------------------------------------------------------------


def test_other_schema_malformed_missing_file_and_missing_field_exit_2(tmp_path):
    asr = write(tmp_path, "asr.json", asr_run())
    tts = write(tmp_path, "tts.json", load_committed("tts_benchmarks.json"))
    code, _, err = run(asr, tts)
    assert code == 2 and "different schemas" in err and "tts_benchmarks" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "asr_evaluation/1", "utterances": [')
    code, _, err = run(asr, bad)
    assert code == 2 and "malformed JSON" in err and "NEW" in err and "bad.json" in err
    code, _, err = run(tmp_path / "nope.json", asr)
    assert code == 2 and "BASE" in err and "no such file" in err
    t = load_committed("tts_benchmarks.json")
    del t["summary"]["latency_speedup"]
    code, _, err = run(tts, write(tmp_path, "t2.json", t))
    assert code == 2 and "NEW" in err and "summary.latency_speedup" in err
    a = asr_run()
    del a["utterances"][3]["errors"]
    code, _, err = run(write(tmp_path, "a2.json", a), asr)
    assert code == 2 and "BASE" in err and "utterances[3]" in err and "'errors'" in err
    code, _, err = run(asr, write(tmp_path, "list.json", [1, 2]))
    assert code == 2 and "JSON object" in err
    unknown = write(tmp_path, "unknown.json", {"schema": "something_else/1"})
    code, _, err = run(asr, unknown)
    assert code == 2 and "unknown schema" in err
    # ASR /1 and /2 differ only in failure records, which the gate does not read: comparable; other
    # version pairs are not
    code, _, err = run(asr, write(tmp_path, "v2.json", asr_run() | {"schema": "asr_evaluation/2"}))
    assert code == 0, err
    t3 = load_committed("tts_benchmarks.json") | {"schema": "tts_benchmarks/3"}
    code, _, err = run(tts, write(tmp_path, "t3.json", t3))
    assert code == 2 and "different schema versions" in err


def test_schema_detected_from_content_without_schema_key(tmp_path):
    run_ = asr_run()
    del run_["schema"]
    b = write(tmp_path, "b.json", run_)
    assert compare_files(b, b).schema == "asr_evaluation"
    with pytest.raises(UnusableInput, match="matches none"):
        compare_files(write(tmp_path, "x.json", {"summary": {}}), b)


# --- TTS ------------------------------------------------------------------------------------------------


def test_tts_against_itself_ok_and_halved_latency_speedup_is_a_regression(tmp_path):
    base = load_committed("tts_benchmarks.json")
    b = write(tmp_path, "b.json", base)
    assert run(b, b)[0] == 0
    new = copy.deepcopy(base)
    new["summary"]["latency_speedup"] /= 2
    if "latency_speedup_spread" in new["summary"]:  # a halved run: its spread halves with it
        new["summary"]["latency_speedup_spread"] = [x / 2 for x in new["summary"]["latency_speedup_spread"]]
    code, out, _ = run(b, write(tmp_path, "n.json", new))
    assert code == 1 and "regression: latency speedup" in out
    assert sum(line.startswith("regression:") for line in out.splitlines()) == 1
    # a 5 % drop is within the 10 % tolerance
    new["summary"]["latency_speedup"] = base["summary"]["latency_speedup"] * 0.95
    assert run(b, write(tmp_path, "n2.json", new))[0] == 0


def test_tts_spreads_that_overlap_keep_it_ok(tmp_path):
    base = load_committed("tts_benchmarks.json")
    s = base["summary"]["latency_speedup"]
    base["summary"]["latency_speedup_spread"] = [0.5 * s, 1.2 * s]
    new = copy.deepcopy(base)
    new["summary"]["latency_speedup"] = 0.8 * s  # 20 % worse, inside BASE's spread
    new["summary"]["latency_speedup_spread"] = [0.6 * s, 1.1 * s]
    b, n = write(tmp_path, "b.json", base), write(tmp_path, "n.json", new)
    fig = next(f for f in compare_files(b, n).figures if f.name.startswith("latency speedup"))
    assert fig.verdict == OK and "inside the runs' spreads" in fig.note
    new["summary"]["latency_speedup"] = 0.4 * s  # outside both spreads
    new["summary"]["latency_speedup_spread"] = [0.35 * s, 0.45 * s]
    assert run(b, write(tmp_path, "n2.json", new))[0] == 1


def test_tts_quick_vs_full_timings_not_comparable(tmp_path):
    base = load_committed("tts_benchmarks.json")
    new = copy.deepcopy(base)
    new["summary"]["quick"] = not base["summary"].get("quick")
    new["config"]["quick"] = new["summary"]["quick"]
    code, _, err = run(write(tmp_path, "b.json", base), write(tmp_path, "n.json", new))
    assert code == 2 and "nothing comparable" in err and "quick" in err


def test_tts_noise_is_reported_and_flagged(tmp_path):
    base = load_committed("tts_benchmarks.json")
    base["noise"] = {"latency": {"suspect": True, "reasons": ["calibration probe moved +40% (limit 15%)"],
                                 "steal_share": 0.2, "foreign_cpu_share": 0.0}}
    new = copy.deepcopy(base)
    new["noise"] = {"latency": {"suspect": False, "reasons": [], "steal_share": 0.01, "foreign_cpu_share": 0.0}}
    code, out, _ = run(write(tmp_path, "b.json", base), write(tmp_path, "n.json", new))
    assert code == 0
    assert "BASE noise: **suspect**" in out and "NEW noise: clean" in out and "noise suspect: BASE latency" in out


# --- streaming ------------------------------------------------------------------------------------------


def test_streaming_capacity_drop_and_latency_rise(tmp_path):
    base = load_committed("streaming_performance.json")
    b = write(tmp_path, "b.json", base)
    assert run(b, b)[0] == 0
    levels = [r["streams"] for r in base["summary"]["runs"]]
    cap = base["summary"]["max_streams_p95_under_100ms"]
    lower = max(lv for lv in levels if lv < cap)
    new = copy.deepcopy(base)
    new["summary"]["max_streams_p95_under_100ms"] = lower
    for r in new["summary"]["runs"]:
        if r["streams"] == cap:
            r["sustained"] = False
    code, out, _ = run(b, write(tmp_path, "n.json", new))
    assert code == 1 and "regression: engine capacity" in out and f"did not sustain {cap:g} streams" in out
    new = copy.deepcopy(base)
    one = next(r for r in new["summary"]["runs"] if r["streams"] == levels[0])
    one["chunk_latency_ms_p95"] *= 1.5
    code, out, _ = run(b, write(tmp_path, "n2.json", new))
    assert code == 1 and f"regression: engine @ {levels[0]:g} streams: chunk latency p95" in out


def test_capacity_not_comparable_when_level_not_swept(tmp_path):
    from speechbench.compare.figures import judge_capacity

    assert judge_capacity("c", 100, 50, [1, 50, 100], [1, 10, 50]).verdict == NOT_COMPARABLE
    assert judge_capacity("c", 100, 50, [1, 50, 100], [1, 50, 100]).verdict == REGRESSION
    assert judge_capacity("c", 100, None, [1, 100], [1, 100]).verdict == REGRESSION
    assert judge_capacity("c", 50, 100, [1, 50, 100], [1, 50, 100]).verdict == IMPROVED
    assert judge_capacity("c", 100, 100, [1, 100], [1, 100]).verdict == OK


def test_streaming_per_model_capacity(tmp_path):
    base = load_committed("streaming_performance.json")
    others = base["summary"]["models"][1:]
    if not others or not others[0].get("max_sustained_streams"):
        pytest.skip("the committed streaming results compare no second model")
    new = copy.deepcopy(base)
    m = new["summary"]["models"][1]
    tested = sorted(m["levels_tested"])
    m["max_sustained_streams"] = max([lv for lv in tested if lv < m["max_sustained_streams"]], default=None)
    code, out, _ = run(write(tmp_path, "b.json", base), write(tmp_path, "n.json", new))
    assert code == 1 and f"regression: {m['model']}: capacity" in out


def test_streaming_network_capacity_is_gated_and_its_share_reported(tmp_path):
    base = load_committed("streaming_performance.json")
    net = base["summary"].get("network") or {}
    if not net.get("max_streams_p95_under_100ms"):
        pytest.skip("the committed streaming results have no network capacity")
    cap = net["max_streams_p95_under_100ms"]
    lower = max(a["streams"] for a in net["capacity_repeats"] if a["streams"] < cap)
    new = copy.deepcopy(base)
    new["summary"]["network"]["max_streams_p95_under_100ms"] = lower
    new["summary"]["network"]["share_of_in_process"] = 0.5
    code, out, _ = run(write(tmp_path, "b.json", base), write(tmp_path, "n.json", new))
    assert code == 1 and "regression: network capacity" in out and f"did not sustain {cap:g} streams" in out
    assert f"share of in-process capacity {100 * net['share_of_in_process']:.1f}% -> 50.0%" in out
    # NEW never tried BASE's level (the levels are fractions of each run's in-process capacity)
    new["summary"]["network"]["capacity_repeats"] = [a for a in net["capacity_repeats"] if a["streams"] != cap]
    new["summary"]["network"]["levels_tested"] = [lv for lv in net["levels_tested"] if lv != cap]
    code, out, _ = run(write(tmp_path, "b.json", base), write(tmp_path, "n2.json", new))
    assert code == 0 and "network capacity" in out and f"NEW did not sweep {cap:g} streams" in out


# --- the CLI --------------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path):
    base = asr_run()
    b = write(tmp_path, "b.json", base)
    n = write(tmp_path, "n.json", degrade(base, "model-a", 0.02))
    tts = write(tmp_path, "t.json", load_committed("tts_benchmarks.json"))

    def cli(*args):
        return subprocess.run([sys.executable, str(ROOT / "compare_results.py"), *map(str, args)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)

    report = tmp_path / "gate" / "report.md"
    r = cli(b, b, "--output", report)
    assert r.returncode == 0, r.stderr
    assert "OK: no regression" in r.stdout and "| figure | old | new | delta | verdict |" in report.read_text()
    r = cli(b, n, "--wer-tolerance", "0.005", "--alpha", "0.05")
    assert r.returncode == 1 and "regression: model-a WER" in r.stdout and "| figure |" in r.stdout
    r = cli(b, tts)
    assert r.returncode == 2 and "different schemas" in r.stderr


def test_gate_imports_no_engine():
    code = ("import sys, speechbench.compare.gate; "
            "heavy = [m for m in ('torch', 'speechbench.asr_eval.evaluation', 'speechbench.tts.engine', "
            "'speechbench.streaming.engine') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
