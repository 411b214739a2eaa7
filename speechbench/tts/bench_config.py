"""What shapes a Part 1 run: ``TTSBenchConfig`` (every flag of ``optimized_tts_inference.py``), its
``--quick`` preset, and the sample texts it reads."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechbench.tts.length import LengthPolicy

SCHEMA = "tts_benchmarks/1"


REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TTSBenchConfig:
    device: str = "cpu"
    seed: int = 0
    quick: bool = False
    checkpoint: str | None = None
    texts_file: str = "sample_text_inputs.json"
    # The seed's max_length is 500 frames, but its naive loop is quadratic in length (and re-projects the
    # whole text every step): at 500 the baseline alone takes ~7 of a 2-core CPU's 10 minutes. 300 frames
    # (3.5 s of audio) keeps the ~50-character headline text and the short texts unclamped; --max-frames
    # 500 reproduces the seed's clamp (--max-frames 500).
    max_frames: int = 300
    frames_per_char: float = LengthPolicy.frames_per_char
    stop_head: str = "auto"  # auto: honour it only with a trained checkpoint
    precision: str = "auto"  # the optimized engine's precision; auto: int8 on CPU, fp16 on CUDA
    repeats: int = 2  # timed repeats per text for the optimized latency (after one warm-up)
    # Optimized runs of the ~50-character text the headline latency is quoted on, taken between the
    # baseline's texts (spread evenly) so both sides of the speedup see the same machine.
    headline_repeats: int = 12  # in 4 groups: before, between and after the headline's 3 baseline runs
    fp32_repeats: int = 1  # the fp32 KV-cache pass only feeds the waterfall
    throughput_repeats: int = 3
    # The waterfall's batched steps serve the sample texts this many times over, so there are more requests
    # than slots and continuous batching refills slots (10 texts in 16 slots never refilled one).
    waterfall_copies: int = 3  # runs of each batched scheduler on the sample texts (the throughput headline)
    baseline_repeats: int = 1  # the naive loop is quadratic in length: each sample text once by default
    headline_baseline_repeats: int = 3  # ... except the headline text: the speedup is a median of 3 pairs
    slots: int = 16  # decode slots of the batched engines
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    # Requests in the static-vs-continuous comparison: 4 turnovers of the 8-slot pool. 40 (5 turnovers) made
    # the five seeded draws cost 7 of the main job's 35 minutes.
    sched_requests: int = 32
    sched_slots: int = 8  # its pool: smaller than the request count, so the steady state is exercised
    # The scheduler comparison uses the seed's 500-frame clamp, not max_frames: max_frames is lowered only
    # to bound the quadratic baseline's run time, and at 300 frames 45% of the sentences are clamped to
    # the same length, which leaves little length variation for any scheduler to exploit.
    sched_max_frames: int = 500
    poisson_load: float = 0.7  # Poisson arrival rate as a fraction of measured continuous capacity
    # The first requests of the same draw, for the Poisson pattern. Under 70% load both schedulers keep up,
    # so throughput there is the arrival rate by construction and what it measures is latency; 16 requests
    # (2 pool turnovers) give its p50/p95 at 40% of the cost of 40 (the main job's 35 minutes are tight).
    poisson_requests: int = 16
    # Seeded request draws (all arriving at once) for continuous vs the better static batcher: which
    # sentences were drawn moves the ratio by +-15% (the step bound over 20 draws ran 1.10-1.37 vs FIFO),
    # so the headline is a median over draws, not one draw.
    # 3 draws (was 5): the headline is still a median of 3 with its spread, and the 2 minutes saved on the
    # slowest machine pay for the TTFA sweep below within the main job's budget.
    sched_draws: int = 3
    # Streaming synthesis under load (sections/ttfa.py): open-loop Poisson arrivals at these fractions of the
    # continuous batcher's measured capacity, this many requests per rate, audio chunks of this many frames,
    # and the TTFA the knee is read against (the seed's 200 ms latency target).
    ttfa_load_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 1.5])
    ttfa_requests: int = 24  # 16 left the p95 (the second largest) jumping between neighbouring rates
    ttfa_chunk_frames: int = 8
    ttfa_target_ms: float = 200.0
    fidelity_texts: int = 2  # shortest sample texts rolled out by the (slow) causal reference
    profile: bool = True
    trace_dir: str | None = None
    compile: str = "auto"  # auto: torch.compile + static cache on CUDA only
    extra_precisions: list[str] = field(default_factory=list)  # measured for fidelity/latency too

    @classmethod
    def quick_preset(cls, **overrides: Any) -> TTSBenchConfig:
        base = cls(quick=True, max_frames=20, repeats=1, headline_repeats=4, slots=4, batch_sizes=[1, 2, 4],
                   sched_requests=6, poisson_requests=6, sched_slots=4, sched_max_frames=20, sched_draws=2,
                   ttfa_load_fractions=[0.5, 1.5], ttfa_requests=6, ttfa_chunk_frames=4, waterfall_copies=2,
                   fidelity_texts=2, profile=True)
        for k, v in overrides.items():
            setattr(base, k, v)
        return base


def split_sample_sentences(texts: list[str]) -> list[str]:
    """Split on sentence-final punctuation followed by white space (good enough for the sample texts)."""
    return [s.strip() for t in texts for s in re.split(r"(?<=[.!?;])\s+", t) if s.strip()]


def load_texts(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise SystemExit(f"texts file not found: {p}") from e
    except json.JSONDecodeError as e:
        raise SystemExit(f"texts file {p} is not valid JSON: {e}") from e
    if "texts" not in data or not isinstance(data["texts"], list) or not data["texts"]:
        raise SystemExit(f"texts file {p} needs a non-empty 'texts' list")
    cats = data.get("test_categories") or {"all": data["texts"]}
    category_of = {t: c for c, ts in cats.items() for t in ts}
    return {"texts": data["texts"], "categories": cats, "category_of": category_of}
