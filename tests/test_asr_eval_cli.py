"""Smoke tests of the Part 2 CLI: a --quick run validates the JSON fields (and that its WER equals jiwer's and
its p-values scipy's on the stored numbers), the report renders from the JSON; a manifest full of bad items
completes and records each as a failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
from scipy import stats as sps
from script_runner import script_runner

MODELS = ["whisper-tiny.en-int8", "pocketsphinx", "ctc-small"]  # ctc-small: runs once trained, else recorded


run_cli = script_runner("comprehensive_asr_evaluation.py", timeout=600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("asr")
    proc = run_cli("--quick", "--sentences", "2", "--threads", "1", "--models", *MODELS, "--batch-sizes", "1", "2",
                   "--batch-utterances", "2", "--output", str(out / "asr.json"),
                   "--report", str(out / "docs" / "asr.md"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "asr.json").read_text())


def test_quick_json_fields(quick_run):
    out, res = quick_run
    assert res["schema"] == "asr_evaluation/2" and res["status"] in ("complete", "complete_with_failures")
    for k in ("env", "config", "dataset", "models", "utterances", "summary", "significance", "analysis", "advice",
              "trn", "failures"):
        assert k in res, k
    assert res["env"]["git_sha"] is None or len(res["env"]["git_sha"]) == 40
    s = res["summary"]
    evaluated = s["models_evaluated"]
    assert {"whisper-tiny.en-int8", "pocketsphinx"} <= set(evaluated)
    if "ctc-small" not in evaluated:  # untrained here: recorded with the reason, the others ran
        assert "no checkpoint" in s["models_unavailable"]["ctc-small"]
    n_utts = res["dataset"]["utterances_evaluated"]
    # 2 sentences x 3 voices x 2 conditions, and the 2 real recordings moonshine-voice bundles (--quick)
    assert n_utts == 14
    sources = res["dataset"]["sources"]
    assert sources["synthetic"]["utterances"] == 12 and sources["real"]["utterances"] == 2
    assert sources["real"]["words"] == sum(r["ref_words"] for r in res["utterances"]
                                           if r["model"] == "whisper-tiny.en-int8" and r["source"] == "real")
    for m in evaluated:
        row = s["models"][m]
        for k in ("wer", "wer_ci95", "cer", "rtf", "latency_ms_p95", "peak_memory_mb", "params"):
            assert k in row, (m, k)
        assert row["wer_ci95"][0] <= row["wer"] <= row["wer_ci95"][1]
        assert row["rtf"] > 0 and row["latency_ms_p95"] > 0 and row["peak_memory_mb"] > 50
        # each set apart; the per-dialect rows are the accents only (the real set is one "dialect": people)
        assert set(s["per_source"][m]) == {"synthetic", "real"} and s["per_source"][m]["real"]["n"] == 2
        assert set(s["real_speech"][m]["per_speaker"]) == {"moonshine-voice-two_cities", "moonshine-voice-beckett"}
        assert "real" not in s["per_dialect"][m]
        for d, cell in s["per_dialect"][m].items():
            assert {"wer", "wer_ci95", "n"} <= set(cell) and cell["n"] == 4, d
            assert cell["wer_ci95_method"] == "sentence-block" and cell["wer_ci95"] == cell["wer_ci95_sentence"]
        # 2 sentences x 3 voices, crossed: the two-way interval is the headline (issue 14)
        assert row["wer_ci95_method"] == "two-way (sentence x speaker)" and row["wer_ci95"] == row["wer_ci95_two_way"]
        # speed from 3 timing passes over the same 2 utterances, with its spread
        assert row["timing_passes"] == 3 and row["timing_utterances"] == 2 and len(row["rtf_passes"]) == 3
        assert row["rtf_spread"][0] <= row["rtf_median"] <= row["rtf_spread"][1]
        assert res["models"][m]["timing"]["utterances"] == res["config"]["timing_subset"]
    recs = res["utterances"]
    assert len(recs) == n_utts * len(evaluated)
    for r in recs:
        for k in ("model", "id", "dialect", "ref", "hyp", "ref_words", "errors", "duration_s", "latency_s",
                  "ref_raw", "hyp_raw", "sub", "del", "ins"):
            assert k in r, k
        assert r["errors"] == r["sub"] + r["del"] + r["ins"]
    sig = res["significance"]["models"]
    assert sig and all({"a", "b", "test", "p_value", "p_holm", "significant"} <= set(x) for x in sig)
    assert {x["test"] for x in sig} == {"mapsswe", "wilcoxon", "sign", "paired_t", "mcnemar"}
    for x in sig:
        assert {"test", "p_value", "p_holm", "n_sentences", "significant"} <= set(x["sentence_level"])
        assert x["sentence_level"]["n_sentences"] == 4  # 2 corpus sentences + 2 recordings' texts
    # what each family could detect: the sentence-level Wilcoxon on 4 sentences cannot reject (2/16 x 3 pairs)
    fam = {(f["family"], f["test"]): f for f in res["significance"]["families"]}
    assert fam[("model pairs, sentence level", "wilcoxon")] == {
        "family": "model pairs, sentence level", "test": "wilcoxon", "unit": "sentences", "units": 4,
        "hypotheses": 3, "min_p": 2 / 16, "min_p_holm": 3 * 2 / 16, "can_reject": False}
    assert set(res["significance"]["by_source"]) == {"synthetic", "real"}
    adv = res["advice"]
    assert adv["recommended"] and adv["lowest_wer_model"] and adv["lowest_wer_model"] in adv["recommended_reason"]
    assert res["significance"]["dialects"] and res["analysis"]["models"] and res["advice"]["pareto_front"]
    be = res["models"]["whisper-tiny.en-int8"].get("batch_effect")
    assert be and [b["batch_size"] for b in be] == [1, 2]
    assert "no batching" in res["models"]["pocketsphinx"]["batch_effect_note"]


def test_wer_equals_jiwer_and_p_values_equal_scipy(quick_run):
    _, res = quick_run
    by_model: dict[str, list[dict]] = {}
    for r in res["utterances"]:
        by_model.setdefault(r["model"], []).append(r)
    for m, recs in by_model.items():
        expected = jiwer.wer([r["ref"] for r in recs], [r["hyp"] for r in recs])
        assert res["summary"]["models"][m]["wer"] == pytest.approx(expected, abs=1e-12), m
    for p in res["significance"]["pairs"]:
        a = {r["id"]: r["errors"] for r in by_model[p["a"]]}
        b = {r["id"]: r["errors"] for r in by_model[p["b"]]}
        ids = sorted(a)
        ea, eb = np.array([a[i] for i in ids], float), np.array([b[i] for i in ids], float)
        d = ea - eb
        t = p["tests"]
        if d.std() > 0:
            assert t["paired_t"]["p_value"] == pytest.approx(sps.ttest_rel(ea, eb).pvalue)
        nz = d[d != 0]
        if nz.size:
            assert t["wilcoxon"]["p_value"] == pytest.approx(
                sps.wilcoxon(ea, eb, zero_method="wilcox", method=t["wilcoxon"]["method"]).pvalue)
            assert t["sign"]["p_value"] == pytest.approx(sps.binomtest(int((d > 0).sum()), nz.size).pvalue)


def test_report_trn_and_report_only(quick_run):
    out, res = quick_run
    report = (out / "docs" / "asr.md").read_text()
    best = res["summary"]["best_model"]
    assert f"{100 * res['summary']['models'][best]['wer']:.1f}%" in report
    assert res["advice"]["recommended_reason"] in report and "two-way (sentence x speaker)" in report
    assert "sentence-level Wilcoxon" in report and "RTF median [min, max]" in report
    assert "## Real human speech" in report and "What each test family can detect" in report
    for name in ("wer_by_dialect", "wer_vs_rtf", "sdi", "significance", "real_vs_synthetic"):
        assert (out / "docs" / "figures" / f"asr_{name}.png").exists(), name
    trn = Path(res["trn"]["dir"])
    assert trn == out / "asr_trn"
    hyp = (trn / "pocketsphinx.hyp.trn").read_text().splitlines()
    assert len(hyp) == res["dataset"]["utterances_evaluated"] and hyp[0].endswith(")")
    (out / "docs" / "asr.md").unlink()
    proc = run_cli("--report-only", "--output", str(out / "asr.json"), "--report", str(out / "docs" / "asr.md"))
    assert proc.returncode == 0, proc.stderr
    assert (out / "docs" / "asr.md").read_text() == report


def _wav(path: Path, audio: np.ndarray, subtype: str = "PCM_16") -> str:
    sf.write(path, audio.astype(np.float32), 16000, subtype=subtype)
    return path.name


def test_bad_items_are_recorded_not_fatal(tmp_path):
    from speechbench.speech.corpus import build_corpus, preset

    build = build_corpus(preset("quick"), progress=False)
    good = [json.loads(line) for line in build.manifest.read_text().splitlines()][:2]
    lines = []
    for g in good:
        shutil.copy(build.path / g["audio_filepath"], tmp_path / Path(g["audio_filepath"]).name)
        lines.append(json.dumps({**g, "audio_filepath": Path(g["audio_filepath"]).name}))
    rng = np.random.default_rng(0)
    silent = _wav(tmp_path / "silent.wav", np.zeros(16000 * 2))
    short = _wav(tmp_path / "short.wav", 0.3 * rng.standard_normal(1600))
    nan = 0.1 * rng.standard_normal(16000)
    nan[100:200] = np.nan
    nan_name = _wav(tmp_path / "nan.wav", nan, subtype="FLOAT")
    lines += [
        "",
        "{this is not json",
        json.dumps({"id": "missing", "audio_filepath": "nope.wav", "text": "hello there", "dialect": "x"}),
        json.dumps({"id": "silent", "audio_filepath": silent, "text": "hello there", "dialect": "x"}),
        json.dumps({"id": "short", "audio_filepath": short, "text": "hello there", "dialect": "x"}),
        json.dumps({"id": "nan", "audio_filepath": nan_name, "text": "hello there", "dialect": "x"}),
        json.dumps({"id": "notext", "audio_filepath": good[0]["audio_filepath"].split("/")[-1]}),
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    proc = run_cli("--manifest", str(manifest), "--models", "pocketsphinx", "--threads", "1", "--batch-sizes",
                   "--output", str(out), "--report", str(tmp_path / "r.md"), "--no-plots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["dataset"]["utterances_evaluated"] == 2
    assert len(res["utterances"]) == 2 and res["summary"]["models"]["pocketsphinx"]["wer"] is not None
    fails = res["failures"]
    by_id = {f.get("id"): f for f in fails}
    assert any(f["section"] == "manifest" and "malformed JSON" in f["error"] for f in fails)
    assert any(f["section"] == "manifest" and "missing field" in f["error"] for f in fails)
    assert any(f["section"] == "manifest" and "not found" in f["error"] for f in fails)  # missing file
    assert "silent" in by_id["silent"]["error"]
    assert "too short" in by_id["short"]["error"]
    assert "non-finite" in by_id["nan"]["error"]
    assert res["significance"]["models"] == []  # one model: nothing to compare
    assert "Failures" in (tmp_path / "r.md").read_text()


def test_cli_input_errors_are_clear(tmp_path):
    proc = run_cli("--manifest", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "manifest not found" in proc.stderr
    proc = run_cli("--report-only", "--output", str(tmp_path / "none.json"))
    assert proc.returncode != 0 and "run the benchmark first" in proc.stderr
    proc = run_cli("--quick", "--bootstrap", "100", "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "--bootstrap must be >= 1000" in proc.stderr
    proc = run_cli("--quick", "--timing-passes", "-1", "--output", str(tmp_path / "x.json"))
    assert proc.returncode != 0 and "--timing-passes must be >= 0" in proc.stderr
    help_text = run_cli("--help").stdout
    for flag in ("--manifest", "--models", "--workers", "--sentences", "--bootstrap", "--quick", "--report-only",
                 "--latency-budget-ms", "--max-utterances", "--timing-passes", "--timing-utterances"):
        assert flag in help_text, flag
