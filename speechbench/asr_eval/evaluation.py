"""The evaluation behind ``comprehensive_asr_evaluation.py``: data -> shards -> records -> statistics -> JSON.

Partial results are written after every shard (status "running"), so a crash or an interrupt keeps what
was measured; each later section (statistics, analysis, advice, trn export) is guarded, and a section that
fails is recorded under ``failures`` (``section``, ``error``, ``traceback``: the shape of Parts 1 and 3) while
the rest still runs; per-item failures (manifest lines, audio, transcription) use the same two keys.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from speechbench.asr_eval import analysis, dataset, errors, runner
from speechbench.asr_eval.advice import make_advice
from speechbench.asr_eval.config import EvalConfig, estimate_seconds
from speechbench.asr_eval.executors import get_executor
from speechbench.asr_eval.export import write_trn
from speechbench.asr_eval.scoring import score
from speechbench.common.results import SectionedRun

log = logging.getLogger(__name__)
# Sections after transcription: one failing is recorded and the others still run.
ANALYSIS_SECTIONS = ("summary", "significance", "analysis", "domain_gap", "advice", "trn_export")

SCHEMA = "asr_evaluation/2"  # /2: failure records are {section, error, ...} like Parts 1 and 3 (/1: stage, reason)
def score_record(raw: dict[str, Any], item: dict[str, Any], model: str) -> dict[str, Any]:
    s = score(item["text"], raw["hyp_raw"])
    rec = {"model": model, "id": item["id"], "dialect": item["dialect"], "speaker": item["speaker"],
           "condition": item["condition"], "sentence": item["sentence"], "source": item.get("source", "unlabeled"),
           "style": item.get("style", ""),
           "ref_raw": item["text"], "hyp_raw": raw["hyp_raw"], **s.to_json(),
           "duration_s": raw["duration_s"], "latency_s": raw["latency_s"]}
    rec["rtf"] = rec["latency_s"] / rec["duration_s"] if rec["duration_s"] else None
    return rec


def _model_meta_for_own(spec: runner.ModelSpec, info: dict[str, Any]) -> dict[str, Any]:
    """Training accents and vocabulary of an own CTC model, read from its checkpoint."""
    path = (info.get("options") or {}).get("checkpoint")
    out: dict[str, Any] = {"checkpoint": path}
    if not path:
        return out
    try:
        import torch

        payload = torch.load(path, map_location="cpu", weights_only=True)
        accents = (((payload.get("meta") or {}).get("corpus") or {}).get("config") or {}).get("accents")
        out["training_accents"] = list(accents) if accents else None
        texts = payload.get("lm_texts") or []
        out["training_vocabulary"] = errors.vocabulary_from_texts(texts) if texts else None
        out["training_sentences"] = len(texts)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


class ASREvaluation(SectionedRun):
    def __init__(self, cfg: EvalConfig, output: Path, env: dict[str, Any]) -> None:
        self.cfg = cfg
        self.output = Path(output)
        self.results: dict[str, Any] = {
            "schema": SCHEMA, "status": "running", "env": env, "config": cfg.to_json(),
            "dataset": {}, "models": {}, "failures": [], "notes": [], "warnings": [], "utterances": [],
            "summary": {"quick": cfg.quick},
            "significance": {}, "analysis": {}, "advice": {}, "trn": {}, "timings": {},
            "executor": {"name": cfg.executor},
        }
        self.items: dict[str, dict[str, Any]] = {}
        self.specs: dict[str, runner.ModelSpec] = {}
        self._raw_shards: dict[str, list[dict[str, Any]]] = {}

    # -- helpers -----------------------------------------------------------------------------------------
    def _fail(self, section: str, error: str, **extra: Any) -> None:
        """An item's or a model's failure, in the one failure shape of all three parts."""
        self.results["failures"].append({"section": section, "error": error, **extra})

    # -- data --------------------------------------------------------------------------------------------
    def prepare_data(self) -> list[dataset.EvalItem]:
        cfg = self.cfg
        ds: dict[str, Any] = self.results["dataset"]
        if cfg.manifests:
            manifests = [Path(m) for m in cfg.manifests]
            missing = [str(m) for m in manifests if not m.exists()]
            if missing:
                raise FileNotFoundError(f"manifest not found: {', '.join(missing)}")
            ds["source"] = "manifests"
        else:
            from speechbench.speech.corpus import build_corpus, preset

            build = build_corpus(preset(cfg.corpus_preset), progress=cfg.progress)
            manifests = [build.manifest]
            ds["source"] = f"embedded corpus, preset {cfg.corpus_preset!r}"
            ds["corpus"] = {"path": str(build.path), "cached": build.cached, "utterances": build.utterances,
                            "build_failures": len(build.failures)}
        try:
            real = self._real_speech_manifest()
        except Exception as e:  # offline without the cached archive, say: recorded, the rest still runs
            log.error("real-speech set unavailable: %s", e)
            self._fail("real_speech", f"{type(e).__name__}: {e}")
            real = None
        items, failures, summaries = dataset.load_items(manifests + ([real] if real else []))
        self.results["failures"].extend(failures)
        ds["manifests"] = summaries
        ds["utterances_read"] = len(items)
        if cfg.dialects:
            items = [it for it in items if it.dialect in set(cfg.dialects)]
        if cfg.conditions:
            items = [it for it in items if it.condition in set(cfg.conditions)]
        # --sentences picks sentences of the paired design (the corpus or the user's manifests); the
        # real-speech set is taken whole (each clip its own text, nothing to pair across voices)
        real_items = [it for it in items if real is not None and it.manifest == str(real)]
        other = [it for it in items if real is None or it.manifest != str(real)]
        items, sel = dataset.select_sentences(other, cfg.sentences)
        items += real_items
        ds["subset"] = sel
        items, cap = dataset.cap_utterances(items, cfg.max_utterances)
        if cap:
            ds["subset"]["cap"] = cap
        items, audio_failures, warnings = dataset.check_audio(items, progress=cfg.progress)
        self.results["failures"].extend(audio_failures)
        self.results["warnings"].extend(warnings)
        ds["utterances_evaluated"] = len(items)
        ds["audio_s"] = sum(it.duration for it in items)
        ds["dialects"] = {d: sum(1 for it in items if it.dialect == d)
                          for d in dict.fromkeys(it.dialect for it in items)}
        ds["conditions"] = {c: sum(1 for it in items if it.condition == c)
                            for c in dict.fromkeys(it.condition for it in items)}
        ds["speakers"] = len({it.speaker for it in items})
        ds["sentences"] = len({it.sentence for it in items})
        ds["sources"] = dataset.sources_summary(items)
        self.items = {it.id: it.to_json() for it in items}
        return items

    def _real_speech_manifest(self) -> Path | None:
        """The real-speech set's manifest (built once, cached), or None for --real-speech none."""
        choice = self.cfg.real_speech
        if choice == "none":
            return None
        if choice not in ("default", "bundled"):
            return Path(choice)
        from speechbench.speech.real_speech import DEFAULT_OUT, build_real_speech

        out = DEFAULT_OUT if choice == "default" else DEFAULT_OUT.with_name("real_speech_bundled")
        sources = ("mfa", "moonshine-voice") if choice == "default" else ("moonshine-voice",)
        manifest = build_real_speech(out, sources=sources)
        self.results["dataset"]["real_speech"] = {"choice": choice, "manifest": str(manifest)}
        return manifest

    # -- measuring ---------------------------------------------------------------------------------------
    def _on_shard(self, res: dict[str, Any]) -> None:
        label = res["label"]
        m = self.results["models"].setdefault(label, {"status": "running", "shards": []})
        m["shards"].append({k: res.get(k) for k in ("shard_id", "status", "reason", "load_s", "warmup_s", "wall_s",
                                                      "worker_wall_s", "memory")})
        m["shards"][-1].update({k: res[k] for k in ("attempts", "first_attempt", "node") if k in res})  # Ray only
        if res.get("info"):
            m["info"] = res["info"]
        if res.get("batch_effect") is not None:
            m["batch_effect"] = res["batch_effect"]
        if res.get("timing"):
            m["timing"] = res["timing"]
        for k in ("batch_effect_note", "batch_effect_error", "timing_error"):
            if res.get(k):
                m[k] = res[k]
        if res.get("status") == "unavailable":  # e.g. its checkpoint disappeared after the first check
            m["status"], m["reason"] = "unavailable", res.get("reason")
        elif res.get("status") in ("failed", "crashed"):
            self._fail("model", res.get("reason", "unknown"), model=label, shard=res.get("shard_id"))
        for f in res.get("failures", []):
            self.results["failures"].append(f)
        for raw in res.get("records", []):
            item = self.items.get(raw["id"])
            if item is None:
                continue
            try:
                self.results["utterances"].append(score_record(raw, item, label))
            except Exception as e:
                self._fail("scoring", f"{type(e).__name__}: {e}", model=label, id=raw["id"])
        self.save()

    def measure(self, items: list[dataset.EvalItem]) -> None:
        cfg = self.cfg
        specs = []
        for text in cfg.models:
            try:
                spec = runner.parse_model_spec(text)
            except ValueError as e:
                self._fail("model", str(e), model=text)
                continue
            if spec.label in self.specs:
                continue
            reason = runner.unavailable_reason(spec, cfg.device)
            self.specs[spec.label] = spec
            self.results["models"][spec.label] = {"spec": spec.to_json(), "own": spec.own,
                                                  "status": "unavailable" if reason else "pending",
                                                  "reason": reason, "shards": []}
            if reason:
                log.warning("model %s unavailable: %s", spec.label, reason)
                continue
            specs.append(spec)
        if not specs or not items:
            return
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.workers))
        be = {"sizes": sorted(set(cfg.batch_sizes)), "utterances": cfg.batch_utterances} if cfg.batch_sizes else None
        timing = {"passes": cfg.timing_passes, "utterances": cfg.timing_utterances}
        shards = runner.make_shards(specs, [it.to_json() for it in items], cfg.workers, cfg.device, threads, be,
                                    cfg.warmup, timing)
        self.results["config"]["threads_per_worker"] = threads
        self.results["config"]["shards"] = len(shards)
        timing_ids = (shards[0].get("timing") or {}).get("ids") or []  # the same subset for every model
        self.results["config"]["timing_subset"] = timing_ids
        duration = {it.id: it.duration for it in items}
        audio = sum(duration.values()) + cfg.timing_passes * sum(duration[i] for i in timing_ids)
        est = estimate_seconds(audio, [s.backend for s in specs]) / max(1, cfg.workers)
        log.info("%d utterances x %d model(s) in %d shard(s); rough estimate %.0f s of transcription on 2 CPU cores",
                 len(items), len(specs), len(shards), est)
        self.save()
        self._run_shards(shards)
        # Records in model, then manifest order, not shard completion order: the bootstrap resamples by
        # position, so with several workers its intervals depended on which shard finished first.
        m_pos, u_pos = ({k: i for i, k in enumerate(d)} for d in (self.results["models"], self.items))
        self.results["utterances"].sort(key=lambda r: (m_pos.get(r["model"], -1), u_pos.get(r["id"], -1)))
        for m in self.results["models"].values():
            if m["status"] in ("pending", "running") and m["shards"]:
                st = [s["status"] for s in m["shards"]]
                m["status"] = "ok" if st and all(s == "ok" for s in st) else ("partial" if "ok" in st else "failed")
                if m["status"] != "ok":
                    m["reason"] = "; ".join(s.get("reason") or "" for s in m["shards"] if s["status"] != "ok")

    def _run_shards(self, shards: list[dict[str, Any]]) -> None:
        """Through the chosen executor; its start-up (Ray's) is timed apart from the transcription."""
        cfg = self.cfg
        executor = get_executor(cfg.executor, cfg.workers, cfg.ray_address, cfg.ray_upload)
        try:
            self.results["timings"]["executor_startup_s"] = executor.start()
            self.results["executor"] = executor.describe()
            self.save()
            t0 = time.perf_counter()
            executor.run(shards, self._on_shard, progress=cfg.progress, timeout_s=cfg.shard_timeout_s)
            self.results["timings"]["transcribe_s"] = time.perf_counter() - t0
        finally:
            executor.close()
            self.results["executor"] = executor.describe()

    # -- statistics --------------------------------------------------------------------------------------
    def by_model(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.results["utterances"]:
            out.setdefault(r["model"], []).append(r)
        return {m: out[m] for m in self.results["models"] if m in out}

    def summarize(self) -> None:
        cfg = self.cfg
        by_model = self.by_model()
        s = self.results["summary"]
        s.update({"device": cfg.device, "models_evaluated": list(by_model),
                  "models_unavailable": {m: v["reason"] for m, v in self.results["models"].items()
                                         if v["status"] == "unavailable"},
                  "utterances_evaluated": self.results["dataset"].get("utterances_evaluated"),
                  "items_failed": sum(1 for f in self.results["failures"] if f["section"] in ("manifest", "audio")
                                      and not f.get("model"))})
        s["models"], s["per_dialect"], s["per_condition"], s["per_speaker"] = {}, {}, {}, {}
        s["per_source"], s["real_speech"] = {}, {}
        for label, recs in by_model.items():
            m = self.results["models"][label]
            info = m.get("info") or {}
            mem = [sh["memory"] for sh in m["shards"] if sh.get("memory")]
            row = analysis.aggregate(recs, cfg.n_boot, cfg.seed)
            row.update(analysis.speed(recs))
            row.update(analysis.timing_summary(m.get("timing")))
            row.update({
                "peak_memory_mb": max((x["peak_rss_mb"] for x in mem), default=None),
                "model_memory_mb": max((x["model_rss_mb"] for x in mem), default=None),
                "cuda_peak_allocated_mb": max((x["cuda_peak_allocated_mb"] for x in mem
                                               if x.get("cuda_peak_allocated_mb") is not None), default=None),
                "params": info.get("params"), "precision": info.get("precision"), "backend": info.get("backend"),
                "load_s": max((sh.get("load_s") or 0 for sh in m["shards"]), default=None),
                "own": m.get("own", False), "status": m["status"],
                "failures": sum(1 for f in self.results["failures"] if f.get("model") == label),
            })
            s["models"][label] = row
            s["per_dialect"][label] = {d: analysis.aggregate(rs, cfg.n_boot, cfg.seed, within_dialect=True)
                                       for d, rs in analysis.group_by(analysis.dialect_records(recs),
                                                                      "dialect").items()}
            s["per_source"][label] = {src: analysis.aggregate(rs, cfg.n_boot, cfg.seed)
                                      for src, rs in analysis.group_by(recs, "source").items()}
            real = [r for r in recs if r.get("source") == "real"]
            if real:  # people, per speaker and per speaking style
                s["real_speech"][label] = {
                    key: {k: analysis.aggregate(rs, cfg.n_boot, cfg.seed) for k, rs in
                          analysis.group_by(real, field).items()}
                    for key, field in (("per_speaker", "speaker"), ("per_style", "style"))}
            s["per_condition"][label] = {c: analysis.aggregate(rs, cfg.n_boot, cfg.seed)
                                         for c, rs in analysis.group_by(recs, "condition").items()}
            s["per_speaker"][label] = {k: analysis.aggregate(rs, cfg.n_boot, cfg.seed, with_ci=False)
                                       for k, rs in analysis.group_by(recs, "speaker").items()}
        ranked = sorted((m for m in s["models"] if s["models"][m]["wer"] is not None),
                        key=lambda m: s["models"][m]["wer"])
        if ranked:
            s["best_model"] = ranked[0]
            s["best_wer"] = s["models"][ranked[0]]["wer"]
            s["best_wer_ci95"] = s["models"][ranked[0]].get("wer_ci95")
            # by the median of the timing passes when measured, as the advice ranks speed
            fastest = min(ranked, key=lambda m: analysis.speed_rtf(s["models"][m]) or float("inf"))
            s["fastest_model"] = fastest
            s["fastest_rtf"] = analysis.speed_rtf(s["models"][fastest])

    def significance(self) -> None:
        cfg = self.cfg
        by_model = self.by_model()
        sig = analysis.significance_between_models(by_model, cfg.n_boot, cfg.seed, cfg.alpha)
        sig["dialects"] = {m: analysis.dialect_effects(analysis.dialect_records(recs), cfg.alpha)
                           for m, recs in by_model.items()}
        # the same model comparisons within each set (real speech, synthetic accents), each its own family
        sources = list(self.results["dataset"].get("sources") or {})
        if len(sources) > 1:
            sig["by_source"] = {}
            for src in sources:
                sub = {m: [r for r in recs if r.get("source") == src] for m, recs in by_model.items()}
                sig["by_source"][src] = analysis.significance_between_models(
                    {m: rs for m, rs in sub.items() if rs}, cfg.n_boot, cfg.seed, cfg.alpha)
        self.results["significance"] = sig

    def domain(self) -> None:
        """In-domain vs held-out accents of the own models, with a non-own model's gap as a control."""
        cfg = self.cfg
        by_model = self.by_model()
        summary = self.results["summary"]["models"]
        own = [m for m in by_model if self.results["models"][m].get("own")]
        others = sorted((m for m in by_model if m not in own), key=lambda m: summary[m]["wer"])
        control = others[0] if others else None
        out: dict[str, Any] = {"control_model": control, "models": {}}
        meta = self.results["analysis"].setdefault("own_models", {})
        try:
            from speechbench.asr.ctc.training.data import IN_DOMAIN_ACCENTS
        except Exception:
            IN_DOMAIN_ACCENTS = ("en-us", "en", "piper")  # noqa: N806
        accent_recs = {m: analysis.dialect_records(recs) for m, recs in by_model.items()}
        for m in by_model:
            accents = (meta.get(m) or {}).get("training_accents") or (list(IN_DOMAIN_ACCENTS) if m in own else None)
            ref_accents = accents or list(IN_DOMAIN_ACCENTS)
            gap = analysis.domain_gap(accent_recs[m], ref_accents, cfg.n_boot, cfg.seed,
                                      control=accent_recs[control] if (m in own and control) else None)
            if gap:
                gap["own"] = m in own
                gap["training_accents"] = accents
                out["models"][m] = gap
        self.results["significance"]["domain_gap"] = out

    def analyze(self) -> None:
        by_model = self.by_model()
        own_meta: dict[str, Any] = self.results["analysis"].setdefault("own_models", {})
        for m in by_model:
            if self.results["models"][m].get("own") and m not in own_meta:
                own_meta[m] = _model_meta_for_own(self.specs[m], self.results["models"][m].get("info") or {})
        # frequency reference: the first own model's training text, else the project's training text
        vocab, source = None, None
        for m, meta in own_meta.items():
            if meta.get("training_vocabulary"):
                vocab, source = meta["training_vocabulary"], f"training transcripts of {m}"
                break
        if vocab is None:
            from speechbench.speech.texts import training_sentences

            n = 4000
            vocab = errors.vocabulary_from_texts(training_sentences(n, seed=0))
            source = f"the project's generated training text (texts.training_sentences({n}, seed=0))"
        refs = {w for r in self.results["utterances"] for w in r["ref"].split()}
        out = self.results["analysis"]
        out["vocabulary"] = {"source": source, "types": len(vocab),
                             "reference_word_counts": {w: vocab.get(w, 0) for w in sorted(refs)}}
        out["models"] = {}
        for m, recs in by_model.items():
            own_vocab = None
            if m in own_meta and own_meta[m].get("training_vocabulary"):
                own_vocab = set(own_meta[m]["training_vocabulary"])
            out["models"][m] = errors.error_analysis(recs, vocab, own_vocab)
        out["hardest_utterances"] = errors.hardest_utterances(by_model)
        for meta in own_meta.values():  # the full vocabularies are large; the counts above suffice
            if meta.get("training_vocabulary"):
                meta["training_vocabulary_types"] = len(meta.pop("training_vocabulary"))

    def advise(self) -> None:
        cfg = self.cfg
        by_model = self.by_model()
        gaps = {m: g for m, g in (self.results["significance"].get("domain_gap") or {}).get("models", {}).items()}
        own = {m for m in by_model if self.results["models"][m].get("own")}
        self.results["advice"] = make_advice(by_model, self.results["summary"], self.results["significance"], gaps,
                                             own, cfg.latency_budget_ms, cfg.memory_budget_mb, cfg.alpha,
                                             margin=cfg.margin, n_boot=cfg.n_boot, seed=cfg.seed)

    def export(self) -> None:
        if not self.cfg.trn_dir:
            return
        files = write_trn(Path(self.cfg.trn_dir), self.by_model())
        self.results["trn"] = {"dir": self.cfg.trn_dir, "files": files,
                               "sclite": "sclite -r <model>.ref.trn trn -h <model>.hyp.trn trn -i spu_id -o sum stdout"}

    # -- all -----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.save()
        items = self.prepare_data()
        self.results["timings"]["data_s"] = time.perf_counter() - t0
        self.save()
        # measure() records its own per-model failures; anything escaping it is a crash, not an analysis step
        self.section("transcription", lambda: self.measure(items), store=False, catch=False)
        self.section("summary", self.summarize, store=False)
        if self.results["summary"].get("models"):
            for name, fn in (("significance", self.significance), ("analysis", self.analyze),
                             ("domain_gap", self.domain), ("advice", self.advise), ("trn_export", self.export)):
                self.section(name, fn, store=False)
        self.results["timings"]["total_s"] = time.perf_counter() - t0
        model_fail = any(f["section"] in ("model", "transcribe", "scoring", "real_speech", *ANALYSIS_SECTIONS)
                         for f in self.results["failures"])
        self.results["status"] = "complete_with_failures" if model_fail else "complete"
        self.save()
        return self.results
