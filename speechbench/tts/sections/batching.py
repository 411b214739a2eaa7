"""Part 1 section: static (FIFO and length-bucketed) vs continuous batching on seeded mixed-length request
draws, all at once and under Poisson arrivals, each with its decode-step bound."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from speechbench.common.measure import NVMLSampler
from speechbench.tts.bench_config import split_sample_sentences
from speechbench.tts.engine import Request
from speechbench.tts.length import LengthPolicy
from speechbench.tts.scheduler import (
    BucketedStaticSchedule,
    BusyClock,
    ContinuousSchedule,
    StaticSchedule,
    decode_steps,
    make_arrivals,
    run_interleaved,
    run_static,
)


class SchedulerSections:
    """Static (FIFO, length-bucketed) vs continuous batching on seeded request draws."""

    def _mixed_requests(self, n: int, seed: int) -> list[str]:
        """A mixed-length request stream: sentences of the sample texts, drawn with replacement (seeded).

        TTS servers synthesize sentence by sentence (shorter time to first audio, bounded lengths), so
        sentences, not whole paragraphs (most of which hit the frame clamp), are what a scheduler sees.
        """
        pool = split_sample_sentences(self.texts)
        rng = np.random.default_rng(seed)
        return [pool[i] for i in rng.integers(0, len(pool), size=n)]

    def _request_frames(self, texts: list[str], policy: LengthPolicy) -> list[int]:
        return [policy.frames_for(len(self.tokenizer(t).ids)) for t in texts]

    def step_bound(self, policy: LengthPolicy, draws: int = 20) -> dict[str, Any]:
        """Static / continuous decode-step ratio of this request draw and of ``draws`` other seeded draws.

        A CPU decode step costs about the same at any occupancy, so this ratio bounds the throughput gain;
        it depends on which sentences were drawn, which the spread across draws shows.
        """
        slots, n = self.cfg.sched_slots, self.cfg.sched_requests

        def ratio(seed: int) -> float:
            f = self._request_frames(self._mixed_requests(n, seed), policy)
            return decode_steps(f, slots, "static") / decode_steps(f, slots, "continuous")

        spread = [ratio(self.cfg.seed + 1000 + i) for i in range(draws)]
        return {"this_draw": ratio(self.cfg.seed), "draws": draws, "min": min(spread),
                "median": float(np.median(spread)), "max": max(spread)}

    def draw_step_bounds(self, frames: list[int]) -> dict[str, float]:
        """Decode steps of one draw under each scheduler, and what continuous batching can gain on each."""
        slots = self.cfg.sched_slots
        st = {k: decode_steps(frames, slots, k) for k in ("static", "bucketed", "continuous")}
        return {"steps": st, "vs_static": st["static"] / st["continuous"],
                "vs_bucketed": st["bucketed"] / st["continuous"],
                "vs_best_static": min(st["static"], st["bucketed"]) / st["continuous"]}

    SCHEDULE_NAMES = ("static", "static_bucketed", "continuous")

    def measure_schedulers(self) -> dict[str, Any]:
        slots = self.cfg.sched_slots
        texts = self._mixed_requests(self.cfg.sched_requests, self.cfg.seed)
        policy = replace(self.policy, max_frames=self.cfg.sched_max_frames)
        # The three schedulers take turns, one iteration each, each timed on its own BusyClock: run one
        # after the other, machine drift between their windows decided the ratio (see BusyClock).
        engines = [self.engine(self.precision, slots, policy=policy, replica=r) for r in range(3)]
        for e in engines:  # warm-up
            run_static(e, [Request(t, i, frames=4) for i, t in enumerate(texts[:slots])], batch_size=slots)
        out: dict[str, Any] = {"slots": slots, "requests": len(texts), "max_frames": policy.max_frames,
                               "workload": "sentences of the sample texts, drawn with replacement",
                               "request_frames": self._request_frames(texts, policy),
                               "step_ratio_bound": self.step_bound(policy)}

        def compare(reqs: list[Request]) -> dict[str, dict[str, Any]]:
            done = run_interleaved([StaticSchedule(engines[0], reqs, slots, clock=BusyClock()),
                                    BucketedStaticSchedule(engines[1], reqs, slots, clock=BusyClock()),
                                    ContinuousSchedule(engines[2], reqs, clock=BusyClock())])
            return {name: r.summary(self.fps) for name, r in zip(self.SCHEDULE_NAMES, done, strict=True)}

        def ratios(res: dict[str, dict[str, Any]], key: str = "throughput_texts_per_s") -> dict[str, float]:
            c = res["continuous"][key]
            return {"continuous_vs_static_throughput": c / res["static"][key],
                    "continuous_vs_bucketed_throughput": c / res["static_bucketed"][key],
                    "continuous_vs_best_static_throughput": c / max(res["static"][key], res["static_bucketed"][key])}

        out["clock"] = ("each scheduler's own busy time, its iterations timed one by one while the three took "
                        "turns; idle gaps before an arrival are skipped, not slept")
        draws = max(1, self.cfg.sched_draws)
        with self.bar(draws + 1, "schedulers") as b:
            reqs = [Request(t, i) for i, t in enumerate(texts)]
            with NVMLSampler() as nv:
                res = compare(reqs)
            b.update()
            out["all_at_once"] = {**res, **ratios(res), "step_bound": self.draw_step_bounds(out["request_frames"])}
            out["gpu_telemetry"] = nv.summary()
            rate = self.cfg.poisson_load * res["continuous"]["throughput_texts_per_s"]
            ptexts = texts[: self.cfg.poisson_requests]
            arrivals = make_arrivals(len(ptexts), "poisson", rate, self.cfg.seed)
            pres = compare([Request(t, i, a) for i, (t, a) in enumerate(zip(ptexts, arrivals, strict=True))])
            b.update()
            best_p95 = min(pres["static"]["latency_ms_p95"], pres["static_bucketed"]["latency_ms_p95"])
            out["poisson"] = {"rate_per_s": rate, "load_fraction": self.cfg.poisson_load, "requests": len(ptexts),
                              **pres, **ratios(pres),
                              "continuous_vs_static_p95_latency": pres["continuous"]["latency_ms_p95"]
                              / pres["static"]["latency_ms_p95"],
                              "continuous_vs_best_static_p95_latency": pres["continuous"]["latency_ms_p95"] / best_p95}
            # Draw 0 is the all-at-once run above; the others are fresh seeded draws of the same size.
            rows = [{"draw": 0, "seed": self.cfg.seed, **ratios(res), "step_bound": out["all_at_once"]["step_bound"],
                     **{f"{k}_texts_per_s": res[k]["throughput_texts_per_s"] for k in self.SCHEDULE_NAMES}}]
            for d in range(1, draws):
                seed = self.cfg.seed + 100 + d
                dtexts = self._mixed_requests(self.cfg.sched_requests, seed)
                dres = compare([Request(t, i) for i, t in enumerate(dtexts)])
                rows.append({"draw": d, "seed": seed, **ratios(dres),
                             "step_bound": self.draw_step_bounds(self._request_frames(dtexts, policy)),
                             **{f"{k}_texts_per_s": dres[k]["throughput_texts_per_s"] for k in self.SCHEDULE_NAMES}})
                b.update()
                self.results["schedulers"] = out | {"draws": rows, "partial": True}
                self.save()  # each draw takes ~a minute: keep the ones measured
            out["draws"] = rows
        return out
