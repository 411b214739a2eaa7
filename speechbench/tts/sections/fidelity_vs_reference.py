"""Part 1 section: every optimized variant (KV cache, static and continuous batching, reduced precision,
compiled) against the causal reference rolled out by the naive loop on the same weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from speechbench.tts.baseline import NaiveTTSInference
from speechbench.tts.engine import Request
from speechbench.tts.fidelity import aggregate, compare_mels
from speechbench.tts.scheduler import run_continuous


class FidelitySections:
    """Every optimized variant against the causal reference on the same weights."""

    def fidelity_text_set(self) -> list[str]:
        """The ``fidelity_texts`` shortest sample texts plus the shortest of each length class, so every class
        (and the clamp at ``max_frames``) is checked, in length order."""
        chosen = set(sorted(self.texts, key=len)[: self.cfg.fidelity_texts])
        for cat in dict.fromkeys(self.category_of.values()):
            chosen.add(min((t for t in self.texts if self.category_of.get(t) == cat), key=len))
        return sorted(chosen, key=len)

    def measure_fidelity(self) -> dict[str, Any]:
        """Every optimized variant against the causal reference, same weights, same texts."""
        texts = self.fidelity_text_set()
        ref_runner = NaiveTTSInference(self.model, self.policy, self.tokenizer, causal=True, device=self.device)
        seed_runner = NaiveTTSInference(self.model, self.policy, self.tokenizer, causal=False, device=self.device)
        refs = {}
        seed_out = dict(self._baseline_mels)  # the baseline section already rolled the seed loop out
        with self.bar(len(texts), "fidelity: reference rollouts") as b:
            for t in texts:
                refs[t] = ref_runner.synthesize(t).mel
                if t not in seed_out:
                    seed_out[t] = seed_runner.synthesize(t).mel
                b.update()
        variants: dict[str, Callable[[list[str]], list[torch.Tensor]]] = {
            "kv_cache_fp32": lambda ts: [self.engine("fp32", 1).synthesize(t).mel for t in ts],
            # Each text inside a padded batch with shorter companions: batching must not change output.
            "static_batch_fp32": lambda ts: [c.mel for c in self.engine("fp32", 2 * len(ts)).synthesize_batch(
                ts + self._companions(ts))[: len(ts)]],
            "continuous_fp32": lambda ts: self._continuous_mels("fp32", ts),
        }
        reduced = [self.precision] + [p for p in self.cfg.extra_precisions if p != self.precision]
        for prec in reduced:
            if prec == "fp32":
                continue
            variants[f"kv_cache_{prec}"] = lambda ts, p=prec: [self.engine(p, 1).synthesize(t).mel for t in ts]
            variants[f"continuous_{prec}"] = lambda ts, p=prec: self._continuous_mels(p, ts)
        if self.use_compile:
            variants["static_cache_compiled"] = lambda ts: [
                self.engine(self.precision, 1, static=True).synthesize(t).mel for t in ts]
        out: dict[str, Any] = {"texts": texts, "reference": "naive loop with causal mask, fp32", "variants": {}}
        for name, fn in variants.items():
            mels = fn(texts)
            rows = [compare_mels(m, refs[t]) | {"chars": len(t)} for m, t in zip(mels, texts, strict=True)]
            out["variants"][name] = {"aggregate": aggregate(rows), "per_text": rows}
        # What the seed's missing causal mask does to the output, for the record.
        rows = [compare_mels(seed_out[t], refs[t]) for t in texts]
        out["seed_noncausal_vs_reference"] = aggregate(rows)
        out["long_clamp"] = self.fidelity_at_scheduler_clamp()
        return out

    def fidelity_at_scheduler_clamp(self) -> dict[str, Any] | None:
        """The scheduler section decodes up to ``sched_max_frames`` (the seed's 500), past the main clamp:
        check the engine there too, on the shortest sample text that reaches that clamp."""
        policy = replace(self.policy, max_frames=self.cfg.sched_max_frames)
        if policy.max_frames <= self.policy.max_frames:
            return None
        text = min((t for t in self.texts if policy.frames_for(len(self.tokenizer(t).ids)) >= policy.max_frames),
                   key=len, default=None)
        if text is None:
            return None
        ref = NaiveTTSInference(self.model, policy, self.tokenizer, causal=True,
                                device=self.device).synthesize(text).mel
        out: dict[str, Any] = {"text_chars": len(text), "max_frames": policy.max_frames, "variants": {}}
        for prec in dict.fromkeys(["fp32", self.precision]):
            mel = self.engine(prec, 1, policy=policy).synthesize(text).mel
            out["variants"][f"kv_cache_{prec}"] = compare_mels(mel, ref)
        return out

    @staticmethod
    def _companions(texts: list[str]) -> list[str]:
        """Shorter texts to share a batch with: different lengths, cheap to decode."""
        return [t[: max(1, len(t) // 3)] for t in texts]

    def _continuous_mels(self, precision: str, texts: list[str]) -> list[torch.Tensor]:
        """Texts decoded by the continuous scheduler in a 2-slot pool, so slots retire and refill."""
        eng = self.engine(precision, 2)
        reqs = [Request(t, i) for i, t in enumerate(self._companions(texts)[:1] + texts + self._companions(texts))]
        res = run_continuous(eng, reqs)
        by_id = {c.request_id: c.mel for c in res.completed}
        return [by_id[i + 1] for i in range(len(texts))]
