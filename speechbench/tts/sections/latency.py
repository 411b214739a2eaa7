"""Part 1 sections: the seed baseline (the headline text's runs alternating with optimized runs), optimized
latency by length, and the technique waterfall that carries the throughput headline."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from speechbench.common.measure import Stopwatch, summarize
from speechbench.tts.baseline import NaiveTTSInference
from speechbench.tts.engine import Request
from speechbench.tts.scheduler import run_continuous, run_static


class LatencySections:
    """Seed baseline (with the headline's interleaved optimized runs), optimized latency, technique waterfall."""

    def measure_baseline(self) -> dict[str, Any]:
        """The seed's loop on every sample text (the headline text ``headline_baseline_repeats`` times).
        Around and between its runs of the headline text, the optimized engine decodes that same text
        (``headline_repeats`` runs in groups): this machine's speed drifts by 20-40% over minutes, so the
        latency speedup's two sides must be measured seconds apart. (Spread over the whole baseline, the
        optimized samples came from a slower stretch than the one baseline sample: 10.1x against 11.6x from
        its neighbours alone.)"""
        runner = NaiveTTSInference(self.model, self.policy, self.tokenizer, causal=False, device=self.device)
        # Warm-up (allocator, kernels), not timed: 16 frames do it; a full short text cost seconds of a
        # quadratic loop.
        NaiveTTSInference(self.model, replace(self.policy, max_frames=16), self.tokenizer, causal=False,
                          device=self.device).synthesize(sorted(self.texts, key=len)[0])
        headline = self.latency_text()
        # The headline text's baseline runs alternate with groups of optimized runs (group g comes before
        # baseline run g, the last group after the last run), so each baseline run has optimized runs
        # seconds away on both sides: the speedup is a median over these pairs, with their spread.
        rounds = max(self.cfg.baseline_repeats, self.cfg.headline_baseline_repeats)
        per_group = -(-self.cfg.headline_repeats // (rounds + 1))
        try:
            fast = self.engine(self.precision, 1)
            fast.synthesize(headline)  # warm-up
        except Exception as e:  # the baseline must not be lost to an optimized-engine failure
            self.note(f"headline latency not measured beside the baseline ({type(e).__name__}: {e})")
            fast, per_group = None, 0
        rows, fast_lat, fast_t, fast_group = [], [], [], []
        t_section = time.perf_counter()

        def optimized_headline(n: int, group: int) -> None:
            for _ in range(n):
                fast_t.append(time.perf_counter() - t_section)
                with Stopwatch(self.device) as sw:
                    fast.synthesize(headline)
                fast_lat.append(sw.elapsed_s)
                fast_group.append(group)
                b.update()

        def headline_record() -> dict[str, Any]:
            if not fast_lat:
                return {}
            return {"headline_optimized": {
                "text_id": self.texts.index(headline), "precision": self.precision, "latency_s": list(fast_lat),
                "start_s": list(fast_t), "group": list(fast_group), "baseline_rounds": rounds,
                "how": "optimized engine, batch 1, in groups alternating with the baseline's runs of this text "
                       "(group g before baseline run g, the last group after the last run)"}}

        total = len(self.texts) * self.cfg.baseline_repeats + (rounds - self.cfg.baseline_repeats) \
            + per_group * (rounds + 1)
        with self.bar(total, "baseline (seed naive loop)") as b:
            for i, t in enumerate(self.texts):
                is_headline = t == headline
                lat, starts = [], []
                for j in range(rounds if is_headline else self.cfg.baseline_repeats):
                    if is_headline:
                        optimized_headline(per_group, j)
                    starts.append(time.perf_counter() - t_section)
                    with Stopwatch(self.device) as sw:
                        r = runner.synthesize(t)
                    lat.append(sw.elapsed_s)
                    b.update()
                if is_headline:
                    optimized_headline(per_group, rounds)
                rows.append({"id": i, "chars": len(t), "category": self.category_of.get(t, "all"),
                             "frames": r.frames, "latency_s": lat, "start_s": starts, "audio_s": r.frames / self.fps})
                self._baseline_mels[t] = r.mel
                self.results["baseline"] = {"per_text": rows, "partial": True} | headline_record()
                self.save()  # the baseline is the slow part: keep every text as soon as it is measured
        total_s = sum(float(np.median(r["latency_s"])) for r in rows)
        out = {
            "runner": "seed naive loop: one text at a time, full-prefix recompute, fp32, no causal mask",
            "per_text": rows,
            "per_category": self._per_category(rows),
            "sequential_throughput_texts_per_s": len(rows) / total_s,
            "sequential_throughput_audio_s_per_s": sum(r["audio_s"] for r in rows) / total_s,
        }
        return out | headline_record()

    def _per_category(self, rows: list[dict]) -> dict[str, Any]:
        cats: dict[str, list[float]] = {}
        for r in rows:
            cats.setdefault(r["category"], []).extend(r["latency_s"])
        return {c: summarize(v, scale=1e3) for c, v in cats.items()}

    def measure_latency(self) -> dict[str, Any]:
        """Single-request latency by length category for the optimized single-stream engines."""
        out = {}
        precisions = list(dict.fromkeys(["fp32", self.precision] + self.cfg.extra_precisions))
        headline = self.latency_text()

        def repeats(prec: str, text: str) -> int:
            if prec == "fp32" and self.precision != "fp32":
                return self.cfg.fp32_repeats
            if text == headline and not (self.results.get("baseline") or {}).get("headline_optimized"):
                return max(self.cfg.repeats, self.cfg.headline_repeats)  # the baseline section did not
            return self.cfg.repeats

        total_runs = sum(repeats(p, t) for p in precisions for t in self.texts)
        with self.bar(total_runs, "optimized latency") as b:
            for prec in precisions:
                eng = self.engine(prec, 1)
                eng.synthesize(self.texts[0])  # warm-up
                rows = []
                for i, t in enumerate(self.texts):
                    lat = []
                    for _ in range(repeats(prec, t)):
                        with Stopwatch(self.device) as sw:
                            c = eng.synthesize(t)
                        lat.append(sw.elapsed_s)
                        b.update()
                    rows.append({"id": i, "chars": len(t), "category": self.category_of.get(t, "all"),
                                 "frames": c.frames, "latency_s": lat, "audio_s": c.frames / self.fps,
                                 "ms_per_frame": 1e3 * float(np.median(lat)) / c.frames})
                total = sum(float(np.median(r["latency_s"])) for r in rows)
                out[f"kv_cache_{prec}"] = {
                    "precision": prec,
                    "per_text": rows,
                    "per_category": self._per_category(rows),
                    "sequential_throughput_texts_per_s": len(rows) / total,
                    "sequential_throughput_audio_s_per_s": sum(r["audio_s"] for r in rows) / total,
                }
                self.results["latency"] = out
                self.save()
        return out

    def measure_waterfall(self) -> list[dict[str, Any]]:
        """Throughput on the sample texts as techniques are added one at a time (same texts, same run)."""
        base = self.results.get("baseline") or {}
        lat = self.results.get("latency") or {}
        steps = []
        if "sequential_throughput_texts_per_s" in base:
            steps.append(("seed baseline (naive loop, fp32)", base["sequential_throughput_texts_per_s"], {}))
        if "kv_cache_fp32" in lat:
            steps.append(("+ KV cache & precomputed cross-attn K/V",
                          lat["kv_cache_fp32"]["sequential_throughput_texts_per_s"], {}))
        if f"kv_cache_{self.precision}" in lat and self.precision != "fp32":
            steps.append((f"+ {self.precision}",
                          lat[f"kv_cache_{self.precision}"]["sequential_throughput_texts_per_s"], {}))
        slots = self.cfg.slots
        copies = max(1, self.cfg.waterfall_copies)
        reqs = [Request(t, i) for i, t in enumerate(self.texts * copies)]
        eng = self.engine(self.precision, slots)
        run_static(eng, reqs[:2], batch_size=2)  # warm-up of the batched shapes
        # The two batched rows carry the throughput headline: each is the median of repeated runs, the two
        # schedulers alternating so both see the same drift (a run is a few seconds).
        runs: dict[str, list[dict[str, Any]]] = {"static": [], "continuous": []}
        for _ in range(max(1, self.cfg.throughput_repeats)):
            runs["static"].append(run_static(eng, reqs, batch_size=slots).summary(self.fps))
            runs["continuous"].append(run_continuous(eng, reqs).summary(self.fps))
        for name, label in (("static", f"+ padded static batching (batch {slots})"),
                            ("continuous", f"+ continuous batching ({slots} slots)")):
            tputs = [r["throughput_texts_per_s"] for r in runs[name]]
            median_run = sorted(runs[name], key=lambda r: r["throughput_texts_per_s"])[len(tputs) // 2]
            steps.append((label, float(np.median(tputs)), median_run | {"runs_texts_per_s": tputs}))
        first = steps[0][1]
        out = []
        prev = None
        for name, tput, detail in steps:
            out.append({"technique": name, "throughput_texts_per_s": tput,
                        "speedup_vs_first": tput / first, "step_gain": tput / prev if prev else 1.0,
                        "detail": detail})
            prev = tput
        return out
