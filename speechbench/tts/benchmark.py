"""Part 1 benchmark: the seed's naive baseline and the optimized engine, measured side by side in one run.

Sections (each written to the JSON as soon as it is measured; a failing section is recorded, not fatal):
baseline -> fidelity -> optimized latency by length -> technique waterfall (sections/latency.py,
sections/fidelity_vs_reference.py) -> schedulers (static vs continuous, all-at-once and Poisson arrivals;
sections/batching.py) -> batch-size sweep (+ bandwidth achieved) -> memory (fresh-process probes) ->
profiles (torch.profiler top ops, before and after) -> edge cases (sections/resources.py). This module
keeps the run's state (model, engines, texts), the section order and the summary.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechbench.common.measure import capture_environment
from speechbench.common.results import SectionedRun
from speechbench.tts.bench_config import SCHEMA, TTSBenchConfig, load_texts
from speechbench.tts.engine import TTSEngine, TTSEngineConfig
from speechbench.tts.length import LengthPolicy
from speechbench.tts.model import CharTokenizer, build_tts_model
from speechbench.tts.sections.batching import SchedulerSections
from speechbench.tts.sections.fidelity_vs_reference import FidelitySections
from speechbench.tts.sections.latency import LatencySections
from speechbench.tts.sections.resources import ResourceSections
from speechbench.tts.sections.ttfa import measure_ttfa

log = logging.getLogger(__name__)


class TTSBenchmark(LatencySections, FidelitySections, SchedulerSections, ResourceSections, SectionedRun):
    """One Part 1 run: builds the model and engines, runs the sections (one module each under
    ``tts/sections/``) and the summary."""

    def __init__(self, cfg: TTSBenchConfig, output: Path, progress: bool = True):
        self.cfg = cfg
        self.output = output
        self.progress = progress
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        torch.set_grad_enabled(False)
        self.model = build_tts_model(cfg.seed, cfg.checkpoint)
        honor = cfg.stop_head == "honor" or (cfg.stop_head == "auto" and cfg.checkpoint is not None)
        self.policy = LengthPolicy(frames_per_char=cfg.frames_per_char, max_frames=cfg.max_frames,
                                   honor_stop=honor)
        self.tokenizer = CharTokenizer(self.model.config.vocab_size)
        self.fps = self.model.config.frames_per_second
        data = load_texts(cfg.texts_file)
        self.texts: list[str] = data["texts"]
        self.category_of: dict[str, str] = data["category_of"]
        if cfg.quick:  # one text per category keeps the smoke run small but covers every category
            seen, picked = set(), []
            for t in self.texts:
                c = self.category_of.get(t, "all")
                if c not in seen:
                    seen.add(c)
                    picked.append(t)
            self.texts = picked
        self.precision = cfg.precision
        if self.precision == "auto":
            self.precision = "fp16" if self.device.type == "cuda" else "int8"
        self.use_compile = cfg.compile == "on" or (cfg.compile == "auto" and self.device.type == "cuda")
        self.results: dict[str, Any] = {
            "schema": SCHEMA,
            "status": "running",
            "env": capture_environment(self.device),
            "config": asdict(cfg) | {"resolved_precision": self.precision, "honor_stop_head": honor,
                                     "compile_resolved": self.use_compile},
            "summary": {},
            "model": self._model_info(),
            "texts": [{"id": i, "chars": len(t), "category": self.category_of.get(t, "all"),
                       "frames": self.policy.frames_for(len(self.tokenizer(t).ids)), "text": t}
                      for i, t in enumerate(self.texts)],
            "failures": [],
            "notes": [],
        }
        self._engines: dict[tuple[str, int, bool, int, int], TTSEngine] = {}
        self._baseline_mels: dict[str, torch.Tensor] = {}

    # -- helpers -------------------------------------------------------------------------------------------

    def _model_info(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "name": "SimpleTTSModel (seed architecture)",
            "weights": self.cfg.checkpoint or f"random, seed {self.cfg.seed}",
            "params": n_params,
            "decoder_params": sum(p.numel() for p in self.model.decoder.parameters()),
            "config": asdict(self.model.config),
            "frames_per_second": self.fps,
            "length_policy": asdict(self.policy),
        }

    def engine(self, precision: str, slots: int, static: bool = False, policy: LengthPolicy | None = None,
               replica: int = 0) -> TTSEngine:
        """A cached engine; ``replica`` > 0 gives another one of the same kind (its own slots, same weights)."""
        policy = policy or self.policy
        key = self._engine_key(precision, slots, static, policy, replica)
        if key not in self._engines:
            cfg = TTSEngineConfig(precision=precision, num_slots=slots, static_shapes=static,
                               compile=static and self.use_compile)
            eng = TTSEngine(self.model, cfg, policy, self.tokenizer, self.device)
            eng.warmup_compiled()
            for note in eng.notes:
                self.note(f"engine {precision} x{slots}: {note}")
            self._engines[key] = eng
        return self._engines[key]

    def _engine_key(self, precision: str, slots: int, static: bool = False, policy: LengthPolicy | None = None,
                    replica: int = 0) -> tuple[str, int, bool, int, int]:
        return (precision, slots, static, (policy or self.policy).max_frames, replica)

    def drop_engine(self, precision: str, slots: int) -> None:
        """Free a cached (default-policy, non-static) engine's pool."""
        self._engines.pop(self._engine_key(precision, slots), None)

    def bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False, dynamic_ncols=True)

    def latency_text(self) -> str:
        """The sample text closest to 50 characters: the seed's latency target is for such a text."""
        return min(self.texts, key=lambda t: abs(len(t) - 50))

    # -- sections ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        phases = [
            ("baseline", self.measure_baseline),
            ("fidelity", self.measure_fidelity),
            ("latency", self.measure_latency),
            ("waterfall", self.measure_waterfall),
            ("schedulers", self.measure_schedulers),
            ("ttfa", lambda: measure_ttfa(self)),
            ("batch_sweep", self.measure_batch_sweep),
            ("memory", self.measure_memory),
            ("profiles", self.measure_profiles),
            ("edge_cases", self.measure_edge_cases),
        ]
        if not self.cfg.profile:
            phases = [p for p in phases if p[0] != "profiles"]
        with tqdm(phases, desc="TTS benchmark", disable=not self.progress, dynamic_ncols=True) as bar:
            for name, fn in bar:
                bar.set_postfix_str(name)
                self.section(name, fn)
        self.results["summary"] = self.build_summary()
        self.results["status"] = "complete" if not self.results["failures"] else "complete_with_failures"
        self.save()
        return self.results


    # -- summary ---------------------------------------------------------------------------------------------

    def model_bytes(self) -> dict[str, Any]:
        """The model's own bytes beside the process peaks: weights of the seed model (fp32) and of the
        optimized engine (its precision), and the engine's preallocated KV cache at the batched pool size.
        The seed asks for a 50% memory reduction: whether the weights alone reach it is said here."""
        try:
            eng = self.engine(self.precision, self.cfg.slots)
        except Exception as e:  # recorded, not fatal: the timings do not depend on it
            return {"model_bytes_error": f"{type(e).__name__}: {e}"}
        base = sum(p.numel() * p.element_size() for p in self.model.parameters())
        opt = eng.weight_bytes()
        return {"model_weight_bytes_baseline": base, "model_weight_bytes_optimized": opt,
                "model_weight_bytes_reduction": 1 - opt / base, "weights_reach_50pct_reduction": opt <= base / 2,
                "kv_cache_bytes_peak": eng.cache_bytes(), "kv_cache_slots": self.cfg.slots,
                "kv_cache_max_frames": self.policy.max_frames}

    def build_summary(self) -> dict[str, Any]:
        r = self.results
        s: dict[str, Any] = {"device": str(self.device), "device_name": r["env"].get("device_name"),
                             "precision": self.precision, "quick": self.cfg.quick}
        ltext = self.latency_text()
        lid = self.texts.index(ltext)
        base = r.get("baseline") or {}
        lat = (r.get("latency") or {}).get(f"kv_cache_{self.precision}") or {}
        if base.get("per_text") and lat.get("per_text"):
            b = base["per_text"][lid]["latency_s"]
            o = lat["per_text"][lid]["latency_s"]
            if (base.get("headline_optimized") or {}).get("precision") == self.precision:
                o = base["headline_optimized"]["latency_s"]  # measured in the baseline's own time window
                s["latency_interleaved_with_baseline"] = True
            s["latency_text_chars"] = len(ltext)
            s["latency_text_frames"] = lat["per_text"][lid]["frames"]
            s["baseline_latency_ms_p50"] = 1e3 * float(np.median(b))
            s["optimized_latency_ms_p50"] = 1e3 * float(np.median(o))
            s["optimized_latency_ms_p95"] = 1e3 * float(np.percentile(o, 95))
            # ratio of the two medians; the headline below is the median of the per-pair speedups when the
            # runs were paired, so the headline and its spread come from the same estimator
            s["latency_speedup_ratio_of_medians"] = s["baseline_latency_ms_p50"] / s["optimized_latency_ms_p50"]
            s["latency_speedup"] = s["latency_speedup_ratio_of_medians"]
            s["baseline_latency_ms_spread"] = [1e3 * float(min(b)), 1e3 * float(max(b))]
            s["optimized_latency_ms_spread"] = [1e3 * float(min(o)), 1e3 * float(max(o))]
            pairs = headline_pairs(b, base.get("headline_optimized") or {})
            if pairs:
                s["latency_speedup_pairs"] = pairs
                s["latency_speedup"] = float(np.median(pairs))
                s["latency_speedup_spread"] = [min(pairs), max(pairs)]
            allo = [x for row in lat["per_text"] for x in row["latency_s"]]
            s["optimized_latency_ms_mean_all_texts"] = 1e3 * float(np.mean(allo))
            s["optimized_latency_ms_p95_all_texts"] = 1e3 * float(np.percentile(allo, 95))
        wf = r.get("waterfall") or []
        batched = [w for w in wf if "batching" in w["technique"]]
        if wf and batched and "sequential_throughput_texts_per_s" in base:
            best = max(batched, key=lambda w: w["throughput_texts_per_s"])
            s["optimized_throughput_per_s"] = best["throughput_texts_per_s"]
            s["optimized_throughput_engine"] = best["technique"]
            s["baseline_throughput_per_s"] = base["sequential_throughput_texts_per_s"]
            s["throughput_speedup"] = best["throughput_texts_per_s"] / base["sequential_throughput_texts_per_s"]
            s["optimized_throughput_audio_s_per_s"] = best["detail"].get("throughput_audio_s_per_s")
            tputs = best["detail"].get("runs_texts_per_s") or []
            if tputs:
                # The seed baseline's side is one pass over the texts (its quadratic loop takes ~100 s a
                # pass); how much the machine moved during it is what its repeated headline-text runs show.
                s["optimized_throughput_runs"] = tputs
                s["optimized_throughput_spread"] = [min(tputs), max(tputs)]
                sb = base["sequential_throughput_texts_per_s"]
                s["throughput_speedup_spread"] = [min(tputs) / sb, max(tputs) / sb]
                s["baseline_throughput_passes"] = 1
        sch = r.get("schedulers") or {}
        if sch.get("all_at_once") and sch.get("poisson"):
            s["continuous_vs_static_throughput"] = sch["all_at_once"]["continuous_vs_static_throughput"]
            s["continuous_vs_static_throughput_poisson"] = sch["poisson"]["continuous_vs_static_throughput"]
            if "step_ratio_bound" in sch:
                s["continuous_vs_static_step_bound"] = sch["step_ratio_bound"]["this_draw"]
            s.update(best_static_summary(sch))
        ttfa = r.get("ttfa") or {}
        if ttfa.get("knee"):
            s["ttfa_target_ms"] = ttfa["target_ttfa_ms"]
            s["ttfa_knee_rate_per_s"] = {k: v["first_rate_over_target"] for k, v in ttfa["knee"].items()}
            s["ttfa_last_rate_within_target"] = {k: v["last_rate_within_target"] for k, v in ttfa["knee"].items()}
            lv = ttfa["levels"]
            s["ttfa_ms_p95_lowest_rate"] = {k: lv[0][k]["ttfa_ms_p95"] for k in ttfa["knee"]}
        fid = (r.get("fidelity") or {}).get("variants") or {}
        if "kv_cache_fp32" in fid:
            fp32 = [v["aggregate"] for k, v in fid.items() if k.endswith("fp32")]
            s["fidelity_fp32_max_abs_mel_diff"] = max(a["max_abs_diff"] for a in fp32)
            s["fidelity_fp32_frame_agreement"] = min(a["frame_agreement"] for a in fp32)
        clamp = ((r.get("fidelity") or {}).get("long_clamp") or {}).get("variants") or {}
        if "kv_cache_fp32" in clamp:
            s["fidelity_fp32_max_abs_mel_diff_at_sched_clamp"] = clamp["kv_cache_fp32"]["max_abs_diff"]
            s["fidelity_sched_clamp_frames"] = r["fidelity"]["long_clamp"]["max_frames"]
            lowp = [v for k, v in clamp.items() if k != "kv_cache_fp32"]
            if lowp:
                s["fidelity_reduced_precision_rel_l2_at_sched_clamp"] = max(v["rel_l2"] for v in lowp)
        red = [v["aggregate"] for k, v in fid.items() if not k.endswith("fp32") and "compiled" not in k]
        if red:
            s["fidelity_reduced_precision_rel_l2"] = max(a["rel_l2_max"] for a in red)
            s["fidelity_reduced_precision_mcd_db"] = max(a["mcd_db_max"] for a in red)
        mem = r.get("memory") or {}
        if mem:
            key = "cuda_peak_allocated_mb" if self.device.type == "cuda" else "rss_peak_mb"
            if "baseline" in mem:
                s["baseline_peak_memory_mb"] = mem["baseline"][key]
            if "optimized_batched" in mem:
                s["optimized_peak_memory_mb"] = mem["optimized_batched"][key]
            if "optimized_single" in mem:
                s["optimized_single_peak_memory_mb"] = mem["optimized_single"][key]
            s["peak_memory_kind"] = "CUDA allocator peak" if key.startswith("cuda") else "host RSS peak (fresh process)"
        s.update(self.model_bytes())
        sweep = r.get("batch_sweep") or []
        if sweep:
            s["bandwidth_gb_s_batch1"] = sweep[0]["bandwidth_weights_gb_s"]
            s["decode_step_ms_batch1"] = sweep[0]["decode_step_ms"]
            best = max(sweep, key=lambda x: x["throughput_texts_per_s"])
            s["best_batch_size"] = best["batch_size"]
        s["failures"] = len(r["failures"])
        return s


def best_static_summary(sch: dict[str, Any]) -> dict[str, Any]:
    """Continuous batching vs the better of FIFO and length-bucketed static batching: median and spread
    over the seeded all-at-once draws, each draw's decode-step bound beside it, plus the Poisson run."""
    draws = sch.get("draws") or []
    if not draws:
        return {}
    r = [d["continuous_vs_best_static_throughput"] for d in draws]
    bound = [d["step_bound"]["vs_best_static"] for d in draws]
    pois = sch["poisson"]
    return {"continuous_vs_best_static_throughput": float(np.median(r)),
            "continuous_vs_best_static_throughput_spread": [min(r), max(r)],
            "continuous_vs_best_static_draws": len(r),
            "continuous_vs_best_static_step_bound": float(np.median(bound)),
            "continuous_vs_best_static_step_bound_spread": [min(bound), max(bound)],
            "continuous_vs_bucketed_throughput": float(np.median([d["continuous_vs_bucketed_throughput"]
                                                                  for d in draws])),
            "continuous_vs_best_static_throughput_poisson": pois.get("continuous_vs_best_static_throughput"),
            "continuous_vs_best_static_p95_latency_poisson": pois.get("continuous_vs_best_static_p95_latency")}


def headline_pairs(baseline_s: list[float], opt: dict[str, Any]) -> list[float]:
    """Speedup of each baseline run of the headline text over the optimized runs on both sides of it
    (groups g and g+1 of ``headline_optimized``); [] when the runs were not grouped."""
    groups = opt.get("group")
    if not groups or len(groups) != len(opt.get("latency_s", [])):
        return []
    lat = np.array(opt["latency_s"])
    g = np.array(groups)
    out = []
    for j, b in enumerate(baseline_s):
        near = lat[(g == j) | (g == j + 1)]
        if near.size:
            out.append(float(b / np.median(near)))
    return out
