from __future__ import annotations

import dataclasses
import json
import time

import pytest

from speechbench.speech.audio import validate_file
from speechbench.speech.corpus import (
    Job,
    _run_job,
    build_corpus,
    corpus_dir,
    corpus_key,
    is_complete,
    preset,
)
from speechbench.speech.manifest import read_manifest


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    t0 = time.perf_counter()
    build = build_corpus(preset("quick"), root=root, workers=2, progress=False)
    return build, time.perf_counter() - t0


def test_quick_corpus_builds_fast_and_clean(quick_build):
    build, seconds = quick_build
    assert seconds < 30
    assert not build.cached and build.failures == []
    res = read_manifest(build.manifest)
    assert res.ok and len(res.utterances) == 3 * 4 * 2
    assert {u.dialect for u in res.utterances} == {"en-us", "en-029", "piper"}
    assert {u.condition for u in res.utterances} == {"clean", "white-snr10"}
    for u in res.utterances:
        assert validate_file(u.audio_path) == [], u.id
        assert u.extra["sentence_id"].startswith("eval-")
    cfg = json.loads((build.path / "config.json").read_text())
    assert cfg["config"]["name"] == "quick" and len(cfg["speakers"]) == 3
    assert build.path == corpus_dir(preset("quick"), build.path.parent)


def test_second_build_is_a_cache_hit(quick_build):
    build, _ = quick_build
    t0 = time.perf_counter()
    again = build_corpus(preset("quick"), root=build.path.parent, progress=False)
    assert again.cached and again.path == build.path and time.perf_counter() - t0 < 2


def test_build_is_byte_identical_whatever_the_worker_count(quick_build, tmp_path):
    build, _ = quick_build
    other = build_corpus(preset("quick"), root=tmp_path, workers=1, progress=False)
    assert other.path.name == build.path.name
    assert (other.manifest.read_bytes() == build.manifest.read_bytes())
    for wav in (build.path / "wavs").iterdir():
        assert (other.path / "wavs" / wav.name).read_bytes() == wav.read_bytes(), wav.name


def test_incomplete_folder_is_not_reused(quick_build, tmp_path):
    build, _ = quick_build
    assert is_complete(build.path)
    import shutil

    copy = tmp_path / build.path.name
    shutil.copytree(build.path, copy)
    next(iter((copy / "wavs").iterdir())).unlink()
    assert not is_complete(copy)
    (copy / "build.json").unlink()
    assert not is_complete(copy)


def test_key_follows_config():
    base = preset("quick")
    assert corpus_key(base) == corpus_key(dataclasses.replace(base, name="renamed"))  # the name is a label
    changes = ({"seed": 1}, {"conditions": ("clean",)}, {"noise_floor_dbfs": None},
               {"speakers_per_accent": 2})
    for change in changes:
        assert corpus_key(dataclasses.replace(base, **change)) != corpus_key(base), change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accents": ("en-mars",)}, "unknown accent"),
        ({"conditions": ("reverb",)}, "unknown condition"),
        ({"sentences": "train", "num_sentences": None}, "num_sentences"),
        ({"num_sentences": 10_000}, "evaluation sentences"),
        ({"layout": "diagonal"}, "layout"),
        ({"sample_rate": 8000}, "sample_rate"),
    ],
)
def test_bad_configs_are_rejected(change, message, tmp_path):
    cfg = dataclasses.replace(preset("quick"), **change)
    with pytest.raises(ValueError, match=message):
        build_corpus(cfg, root=tmp_path, progress=False)


def test_split_layout_speaks_each_sentence_once():
    from speechbench.speech.corpus import _plan

    cfg = preset("quick", layout="split", speakers_per_accent=2, num_sentences=None, eval_sections=None)
    texts = cfg.texts()
    jobs = _plan(cfg, texts)
    spoken = sorted(i for j in jobs for i, _ in j.items)
    assert spoken == list(range(len(texts)))
    assert {(j.accent, j.speaker_index) for j in jobs} == {(a, s) for a in cfg.accents for s in range(2)}


def test_failed_utterances_are_recorded_not_fatal(tmp_path):
    cfg = preset("quick", conditions=("clean",))
    job = Job("en-us", 0, [(0, ""), (1, "Hello there, how are you?")], cfg.to_json(), str(tmp_path))
    (tmp_path / "wavs").mkdir()
    res = _run_job(job)
    assert [r["id"] for r in res.rows] == ["en-us_s0_u00001_clean"]
    assert [f["id"] for f in res.failures] == ["en-us_s0_u00000_clean"]
    assert (tmp_path / res.rows[0]["audio_filepath"]).exists()


def test_cli_overrides_preset_and_prints_dir(tmp_path, capsys):
    import build_corpus as cli

    args = cli.parse_args(["--preset", "quick", "--accents", "en-us", "--noise-floor-dbfs", "none",
                           "--conditions", "clean", "telephone"])
    cfg = cli.config_from_args(args)
    assert cfg.accents == ("en-us",) and cfg.noise_floor_dbfs is None
    assert cfg.conditions == ("clean", "telephone") and cfg.num_sentences == 4  # the rest from the preset
    assert cli.config_from_args(cli.parse_args(["--preset", "quick"])) == preset("quick")
    assert cli.main(["--preset", "quick", "--root", str(tmp_path), "--print-dir"]) == 0
    assert capsys.readouterr().out.strip() == str(corpus_dir(preset("quick"), tmp_path))
    assert cli.main(["--preset", "quick", "--conditions", "reverb"]) == 2
