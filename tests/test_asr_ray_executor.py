"""Part 2's Ray executor: on a local Ray instance (2 CPUs) the same shards give the same records as the
process executor (read from the manifest's paths, or uploaded through the object store), and the same
evaluation JSON; a failing shard is retried once, then recorded as the process executor's failures are;
without Ray the error names ``--executor process``.

Bounded in time: a watchdog dumps the stacks and ends the run after 150 s (the module takes ~40 s on 2
busy cores); the model is whisper-tiny.en int8 at one thread (~1 s to load, well under a second a clip)."""

from __future__ import annotations

import faulthandler
import shutil
import sys

import pytest

from speechbench.asr_eval import dataset, runner
from speechbench.asr_eval.config import EvalConfig
from speechbench.asr_eval.evaluation import ASREvaluation
from speechbench.asr_eval.ray_executor import RayExecutor, RayUnavailable, import_ray

MODEL = "whisper-tiny.en-int8"
WATCHDOG_S = 150


@pytest.fixture(scope="module")
def corpus():
    from speechbench.speech.corpus import build_corpus, preset

    return build_corpus(preset("quick"), progress=False)


@pytest.fixture(scope="module")
def utterances(corpus):
    items, _, _ = dataset.load_items([corpus.manifest])
    return [it.to_json() for it in items if it.condition == "clean" and it.dialect == "en-us"][:4]


@pytest.fixture(scope="module")
def ray_exec(request):
    try:
        import_ray()  # before anything imports ray: it reads its settings at import
    except RayUnavailable as e:
        pytest.skip(str(e))
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)  # a hung Ray must not hang the suite
    ex = RayExecutor(2, upload="never")

    def stop() -> None:
        ex.close()  # shuts the local instance down
        faulthandler.cancel_dump_traceback_later()

    request.addfinalizer(stop)
    ex.start()
    return ex


def _shards(utts, model=MODEL, workers=2):
    return runner.make_shards([runner.parse_model_spec(model)], utts, workers, "cpu", 1, None, 0)


def _records(results):
    recs = [{k: v for k, v in r.items() if k != "latency_s"} for res in results for r in res["records"]]
    return sorted(recs, key=lambda r: r["id"])


def test_records_equal_the_process_executor(ray_exec, utterances, tmp_path, monkeypatch):
    shards = _shards(utterances)
    assert len(shards) == 2
    by_process: list[dict] = []
    runner.ProcessExecutor(2).run(shards, by_process.append, progress=False)
    by_ray: list[dict] = []
    ray_exec.run(shards, by_ray.append, progress=False)
    assert [r["status"] for r in by_process + by_ray] == ["ok"] * 4
    assert all(r["attempts"] == 1 and r["memory"]["peak_rss_mb"] > 50 for r in by_ray)
    assert _records(by_ray) == _records(by_process) and len(_records(by_ray)) == 4

    # Upload: the workers read the bytes put in the object store, not the paths (deleted once uploaded).
    copies = []
    for u in utterances:
        dst = tmp_path / f"{u['id']}.wav"
        shutil.copy(u["audio_path"], dst)
        copies.append({**u, "audio_path": str(dst)})
    put = ray_exec._put_audio

    def put_then_delete(shards):
        refs = put(shards)
        for c in copies:
            (tmp_path / f"{c['id']}.wav").unlink()
        return refs

    monkeypatch.setattr(ray_exec, "upload", True)
    monkeypatch.setattr(ray_exec, "_put_audio", put_then_delete)
    uploaded: list[dict] = []
    ray_exec.run(_shards(copies), uploaded.append, progress=False)
    assert not list(tmp_path.glob("*.wav"))
    assert [r["status"] for r in uploaded] == ["ok", "ok"] and not any(r["failures"] for r in uploaded)
    assert _records(uploaded) == _records(by_process)


def test_failed_shard_is_retried_once_then_recorded(ray_exec, utterances, tmp_path):
    bad_model = _shards(utterances[:1], MODEL + "@no_such_option=1", workers=1)  # the worker's load raises
    bad_shard = _shards(utterances[:1], "pocketsphinx", workers=1)
    del bad_shard[0]["threads"]  # the Ray task itself raises (KeyError)
    out: list[dict] = []
    ray_exec.run(bad_model + bad_shard, out.append, progress=False)
    got = {r["shard_id"]: r for r in out}
    assert len(got) == 2
    model_fail, task_fail = got[bad_model[0]["shard_id"]], got[bad_shard[0]["shard_id"]]
    for r in (model_fail, task_fail):
        assert r["status"] == "failed" and r["attempts"] == 2 and "retried once" in r["reason"]
    assert "TypeError" in model_fail["first_attempt"] and "no_such_option" in model_fail["reason"]
    assert "ray task raised: KeyError" in task_fail["first_attempt"]

    died: list[dict] = []  # a worker killed mid-shard (its timeout): "crashed", retried, then recorded
    ray_exec.run(_shards(utterances[:1], workers=1), died.append, progress=False, timeout_s=0.2)
    assert died[0]["status"] == "crashed" and died[0]["attempts"] == 2 and "worker exited" in died[0]["reason"]

    by_process: list[dict] = []
    runner.ProcessExecutor(1).run(bad_model, by_process.append, progress=False)
    ev_ray = ASREvaluation(EvalConfig(), tmp_path / "ray.json", {})
    ev_proc = ASREvaluation(EvalConfig(), tmp_path / "proc.json", {})
    ev_ray._on_shard(model_fail)
    ev_proc._on_shard(by_process[0])
    (f_ray,), (f_proc,) = ev_ray.results["failures"], ev_proc.results["failures"]
    assert set(f_ray) == set(f_proc) == {"section", "error", "model", "shard"}
    assert {k: f_ray[k] for k in ("section", "model", "shard")} == {k: f_proc[k] for k in ("section", "model", "shard")}
    assert f_proc["error"] in f_ray["error"]


def test_evaluation_json_is_the_same_under_ray(ray_exec, corpus, tmp_path):
    def evaluate(executor: str) -> dict:
        cfg = EvalConfig(manifests=[str(corpus.manifest)], sentences=2, dialects=["en-us"], models=[MODEL],
                         workers=2, threads=1, n_boot=1000, batch_sizes=[], progress=False, executor=executor)
        return ASREvaluation(cfg, tmp_path / f"{executor}.json", {}).run()

    proc, ray = evaluate("process"), evaluate("ray")
    assert ray["status"] == proc["status"] == "complete"
    strip = [{k: v for k, v in r.items() if k not in ("latency_s", "rtf")} for r in ray["utterances"]]
    assert sorted(strip, key=lambda r: r["id"]) == sorted(
        ({k: v for k, v in r.items() if k not in ("latency_s", "rtf")} for r in proc["utterances"]),
        key=lambda r: r["id"])
    a, b = ray["summary"]["models"][MODEL], proc["summary"]["models"][MODEL]
    assert (a["wer"], a["wer_ci95"]) == (b["wer"], b["wer_ci95"]) and a["wer"] is not None
    assert ray["executor"]["name"] == "ray" and proc["executor"]["name"] == "process"
    assert ray["executor"]["already_initialized"]  # the fixture's instance: used, and left running
    assert ray["timings"]["executor_startup_s"] >= 0 and proc["timings"]["executor_startup_s"] == 0


def test_missing_ray_names_the_process_executor(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayUnavailable, match="--executor process"):
        import_ray()
    with pytest.raises(RayUnavailable, match="--executor process"):
        RayExecutor(2).start()


def test_cli_flags():
    import comprehensive_asr_evaluation as cli

    help_text = " ".join(cli.build_parser().format_help().split())  # unwrapped
    for text in ("--executor {process,ray}", "--ray-address", "--ray-upload", "a local Ray instance"):
        assert text in help_text, text
    a = cli.build_parser().parse_args(["--quick", "--executor", "ray", "--ray-address", "auto"])
    cfg = cli.config_from_args(a, "cpu")
    assert (cfg.executor, cfg.ray_address, cfg.ray_upload, cfg.workers) == ("ray", "auto", "auto", 2)
    with pytest.raises(SystemExit, match="need --executor ray"):
        cli.config_from_args(cli.build_parser().parse_args(["--ray-address", "auto"]), "cpu")
