"""Part 1 sections: batch-size sweep (decode-step time, bandwidth achieved), peak memory in fresh
processes, torch.profiler top ops, and edge cases."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.common.measure import Stopwatch, synchronize, torch_profile
from speechbench.tts.baseline import NaiveTTSInference
from speechbench.tts.bench_config import REPO_ROOT
from speechbench.tts.engine import Request, TTSEngine, TTSEngineConfig
from speechbench.tts.length import LengthPolicy
from speechbench.tts.model import TextError
from speechbench.tts.scheduler import run_static


class ResourceSections:
    """Batch-size sweep with bandwidth achieved, fresh-process memory probes, profiles, edge cases."""

    def measure_batch_sweep(self) -> list[dict[str, Any]]:
        """Batch size vs latency/throughput on one fixed text, plus decode-step time and bandwidth."""
        text = self.latency_text()
        rows = []
        sizes = [b for b in self.cfg.batch_sizes]
        with self.bar(len(sizes), "batch sweep") as bar:
            for bs in sizes:
                eng = self.engine(self.precision, max(bs, 1))
                warm = [Request(text, i, frames=4) for i in range(bs)]
                run_static(eng, warm, batch_size=bs)  # warm-up at this batch shape (a few frames)
                t0 = time.perf_counter()
                step_ms, frames = self._timed_batch(eng, [text] * bs)
                synchronize(self.device)
                latency_s = time.perf_counter() - t0
                weight_bytes = eng.decode_weight_bytes()
                kv_bytes = self._kv_bytes_per_step(eng, bs, frames)
                rows.append({
                    "batch_size": bs,
                    "latency_ms": 1e3 * latency_s,
                    "throughput_texts_per_s": bs / latency_s,
                    "throughput_audio_s_per_s": bs * frames / self.fps / latency_s,
                    "decode_step_ms": step_ms,
                    "frames_per_s": bs * 1e3 / step_ms,
                    "weight_bytes_per_step": weight_bytes,
                    "kv_bytes_per_step_mean": kv_bytes,
                    "bandwidth_weights_gb_s": weight_bytes / (step_ms / 1e3) / 1e9,
                    "bandwidth_total_gb_s": (weight_bytes + kv_bytes) / (step_ms / 1e3) / 1e9,
                    "cache_mb": eng.cache_bytes() / 2**20,
                })
                bar.update()
                if bs > 1:  # large pools are only for the sweep: free them before the next size
                    self.drop_engine(self.precision, bs)
        return rows

    def _timed_batch(self, eng: TTSEngine, texts: list[str]) -> tuple[float, int]:
        """Serve one static batch, timing each decode step; returns (median step ms, frames)."""
        eng.prefill([Request(t, i) for i, t in enumerate(texts)])
        times = []
        while not all(s.done for s in eng.slots):
            with Stopwatch(self.device) as sw:
                eng._step_static_batch()
            times.append(sw.elapsed_s)
        done = eng.retire()
        return 1e3 * float(np.median(times)), done[0].frames

    def _kv_bytes_per_step(self, eng: TTSEngine, batch: int, frames: int) -> float:
        d = eng.decoder
        per_pos = 2 * d.num_layers * d.num_heads * d.head_dim * eng.cache_dtype.itemsize
        return batch * per_pos * (frames + 1) / 2  # the average prefix length over the sequence

    def measure_memory(self) -> dict[str, Any]:
        """Peak memory of the baseline and of the optimized engine, each alone in a fresh process."""
        texts = sorted(self.texts, key=len)
        probes = {
            "baseline": ["--variant", "baseline", "--text", texts[0]],
            "optimized_single": ["--variant", "optimized", "--precision", self.precision, "--slots", "1",
                                 "--text", texts[0]],
            "optimized_batched": ["--variant", "optimized", "--precision", self.precision, "--slots",
                                  str(self.cfg.slots)] + sum((["--text", t] for t in self.texts), []),
        }
        if self.cfg.quick:  # the smoke run needs only the pair: on 2 cores a third process only waits
            probes.pop("optimized_single")
        # The probes run side by side, one torch thread each: a probe reports its own process's peak (RSS,
        # or the CUDA allocator's peak, both per process), which sharing the CPU slows but does not change,
        # and most of a probe's time is the interpreter and torch starting up. (Two-thread probes side by
        # side would spin at OpenMP barriers waiting for each other's descheduled threads.)
        procs = {}
        for name, args in probes.items():
            cmd = [sys.executable, "-m", "speechbench.tts.memprobe", "--device", str(self.device),
                   "--seed", str(self.cfg.seed), "--max-frames", str(self.cfg.max_frames), "--threads", "1", *args]
            if self.cfg.checkpoint:
                cmd += ["--checkpoint", self.cfg.checkpoint]
            procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                           cwd=REPO_ROOT)
        out, errors = {}, []
        with self.bar(len(probes), "memory probes") as b:
            for name, proc in procs.items():
                try:
                    stdout, stderr = proc.communicate(timeout=900)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    stdout, stderr = proc.communicate()
                    errors.append(f"memory probe {name} timed out after 900 s")
                else:
                    if proc.returncode != 0:
                        errors.append(f"memory probe {name} failed (rc {proc.returncode}): {stderr[-2000:]}")
                    else:
                        out[name] = json.loads(stdout.strip().splitlines()[-1])
                b.update()
        if errors:  # what did finish is kept in the JSON
            self.results["memory"] = out | {"partial": True}
            raise RuntimeError("; ".join(errors))
        return out

    def measure_profiles(self) -> dict[str, Any]:
        """torch.profiler top ops: the seed loop vs the optimized engine on the same short text."""
        text = sorted(self.texts, key=len)[0]
        trace_dir = Path(self.cfg.trace_dir) if self.cfg.trace_dir else None
        out = {}
        # 40 frames show which ops dominate as well as 300 do, at a fraction of the profiler's overhead
        # (--quick: 8, a smoke check that the profile is produced).
        frames = 8 if self.cfg.quick else 40
        policy = LengthPolicy(frames_per_char=self.policy.frames_per_char, max_frames=min(frames, self.cfg.max_frames))
        runner = NaiveTTSInference(self.model, policy, self.tokenizer, causal=False, device=self.device)
        with torch_profile(self.device, trace_dir / "baseline.json" if trace_dir else None) as prof:
            runner.synthesize(text)
        out["baseline"] = asdict(prof)
        eng = TTSEngine(self.model, TTSEngineConfig(precision=self.precision), policy, self.tokenizer, self.device)
        eng.synthesize(text)  # warm-up outside the profile
        with torch_profile(self.device, trace_dir / "optimized.json" if trace_dir else None) as prof:
            eng.synthesize(text)
        out["optimized"] = asdict(prof)
        out["text_chars"] = len(text)
        out["frames"] = policy.frames_for(len(text))
        return out

    def measure_edge_cases(self) -> list[dict[str, Any]]:
        # Its own engine with a 500-frame cache: the seed's maximum, whatever the benchmark's clamp
        # (--quick: the quick clamp; the unit tests decode the 500-frame cases).
        edge_max = self.cfg.max_frames if self.cfg.quick else max(self.cfg.max_frames, 500)
        edge_policy = replace(self.policy, max_frames=edge_max)
        # The optimized engine as served (its precision): these cases check behaviour, not numerics.
        eng = TTSEngine(self.model, TTSEngineConfig(precision=self.precision, num_slots=2), edge_policy,
                        self.tokenizer, self.device)
        cases: list[dict[str, Any]] = []

        def case(name: str, fn: Callable[[], dict]) -> None:
            try:
                cases.append({"case": name, "ok": True} | fn())
            except TextError as e:
                cases.append({"case": name, "ok": False, "error": str(e), "expected_error": True})
            except Exception as e:
                cases.append({"case": name, "ok": False, "error": f"{type(e).__name__}: {e}",
                              "expected_error": False})
            eng.slots.clear()

        case("empty text", lambda: {"frames": eng.synthesize("").frames})
        case("whitespace only", lambda: {"frames": eng.synthesize("   \n").frames})
        case("one character", lambda: {"frames": eng.synthesize("a").frames})
        long_text = "the rain in spain stays mainly in the plain. " * 40
        case("text longer than max tokens", lambda: (lambda c: {
            "chars_in": len(long_text), "truncated_from": c.meta["truncated_from"], "frames": c.frames})(
                eng.synthesize(long_text)))
        case("non-ASCII (folded by ord % 256, counted)", lambda: (lambda c: {
            "non_ascii": c.meta["non_ascii"], "frames": c.frames})(eng.synthesize("Café — naïve façade, 東京")))

        def mixed() -> dict:
            eng.prefill([Request("a", 0, frames=1), Request(self.latency_text(), 1, frames=edge_policy.max_frames)])
            got = []
            while eng.active:  # the 1-frame request retires after the first step, the long one stays
                eng.step()
                got.extend(eng.retire())
            return {"frames": sorted(c.frames for c in got), "max_frames": edge_policy.max_frames}

        case("batch mixing 1 and max frames", mixed)
        return cases
