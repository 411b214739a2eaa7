"""What shapes a Part 2 run: ``EvalConfig`` (every flag of ``comprehensive_asr_evaluation.py``), its
default and ``--quick`` sizes, and the rough run-time estimate printed before measuring."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from speechbench.asr_eval import runner

# Default subset of the default corpus: 11 of its 60 sentences in each of the 9 voices = 99 utterances,
# ~8.5 minutes of synthetic audio, beside the real-speech set (71 clips, ~8 minutes: speech/real_speech.py).
# Why 11: the sentence-level tests pair on sentences, and the smallest two-sided p of an exact Wilcoxon
# signed-rank test on n pairs is 2 / 2^n; Holm over the 36 dialect pairs (9 voices) multiplies it by 36.
# With 8 sentences the family could never reach p < 0.05 (36 x 2 / 256 = 0.28); with 11 it can
# (36 x 2 / 2048 = 0.035). Time: 8 sentences and nine models took 472 s here (AMD EPYC) plus 89 s for the
# recorded-speech spot check this run now includes; 11 sentences plus the real set with the eight default
# models (pocketsphinx and whisper-tiny.en-fp32 moved to --models, moonshine-base in) is about the same.
DEFAULT_SENTENCES = 11
# --quick: 2 of the quick corpus' 4 sentences x 3 voices x 2 conditions = 12 utterances (~50 s of audio), so
# the default models plus start-up stay around 2 minutes.
QUICK_SENTENCES = 2
# Rough CPU cost per second of audio at 2 threads, for the run-time estimate printed before measuring
# (measured on this project's 2-core machine; a guide for sizing, not a result).
DEFAULT_RTF_ESTIMATE = {"whisper": 0.2, "whisper-base": 0.3, "moonshine": 0.05, "moonshine-base": 0.12,
                        "pocketsphinx": 0.22, "ctc": 0.03}
# Advice: a cheaper model counts as "as good" as the lowest-WER one only when the upper end of the 95% CI
# of its WER difference is at most this many WER points (absolute, as a fraction): non-inferiority, not
# "no significant difference" (which a small test set grants to anything).
DEFAULT_MARGIN = 0.01
# Timing passes (speed as a median with a spread, issue 14): 8 utterances (45 s of audio in the default
# corpus: 8 dialects, 8 sentences) x 3 passes = 134 s of audio per model; at the committed run's per-model
# RTFs that adds ~80 s to the ~350 s nine-model default run. --quick: 2 x 3 (~28 s of audio per model).
DEFAULT_TIMING_PASSES = 3
DEFAULT_TIMING_UTTERANCES = 8
QUICK_TIMING_UTTERANCES = 2


@dataclass
class EvalConfig:
    manifests: list[str] = field(default_factory=list)  # empty: the embedded corpus (preset below)
    corpus_preset: str = "default"
    models: list[str] = field(default_factory=lambda: list(runner.DEFAULT_MODELS))
    sentences: int | None = DEFAULT_SENTENCES
    # Real human speech evaluated beside the embedded corpus (speech/real_speech.py): "default" = the
    # aligner's clips + moonshine-voice's two readings, "bundled" = those two only (installed with
    # moonshine-voice, no download), "none", or a manifest path. With --manifest: none unless given.
    real_speech: str = "default"
    max_utterances: int | None = None
    dialects: list[str] | None = None
    conditions: list[str] | None = None
    workers: int = 1
    threads: int = 0  # per worker; 0 = CPU count / workers
    device: str = "cpu"
    seed: int = 0
    n_boot: int = 2000
    alpha: float = 0.05
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8])
    batch_utterances: int = 8
    warmup: int = 1
    timing_passes: int = DEFAULT_TIMING_PASSES  # 0 = no timing passes (speed from the accuracy pass only)
    timing_utterances: int = DEFAULT_TIMING_UTTERANCES
    margin: float = DEFAULT_MARGIN
    latency_budget_ms: float | None = None
    memory_budget_mb: float | None = None
    trn_dir: str | None = None  # default: <output stem>_trn next to the JSON... set by the CLI
    shard_timeout_s: float | None = None
    executor: str = "process"  # executors.EXECUTORS: local worker processes, or Ray tasks (ray_executor.py)
    ray_address: str | None = None  # None: a local Ray instance sized to ``workers``; else join this cluster
    ray_upload: str = "auto"  # ship the audio through Ray's object store: auto = when joining a cluster
    quick: bool = False
    progress: bool = True

    @classmethod
    def quick_preset(cls) -> EvalConfig:
        # Two workers: four real recognizers one after another took 124 s on 2 cores (pocketsphinx alone
        # 46 s on the noisy clips), over the 2-minute smoke budget.
        # Real speech: moonshine-voice's two readings (54 s, installed with the package, no download).
        return cls(corpus_preset="quick", sentences=QUICK_SENTENCES, real_speech="bundled", n_boot=1000,
                   batch_sizes=[1, 2], batch_utterances=2, quick=True, workers=2,
                   timing_utterances=QUICK_TIMING_UTTERANCES)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def estimate_seconds(audio_s: float, models: list[str]) -> float:
    """A rough run-time estimate (transcription, start-up and warm-up) from DEFAULT_RTF_ESTIMATE."""
    total = 0.0
    for m in models:
        key = ("whisper-base" if "whisper-base" in m else "whisper" if "whisper" in m else
               "moonshine-base" if m.startswith("moonshine-base") else
               "moonshine" if m.startswith("moonshine") else "ctc" if m.startswith("ctc") else "pocketsphinx")
        total += DEFAULT_RTF_ESTIMATE[key] * audio_s + 3.0
    return total
