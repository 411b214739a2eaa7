"""Render docs/asr_report.md (and its plots) from results/asr_evaluation_results.json, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechbench.asr_eval import report_real
from speechbench.asr_eval import report_sections as sections
from speechbench.asr_eval.analysis import MIN_SPEAKER_BLOCKS, speed_rtf
from speechbench.asr_eval.report_sections import (
    TEST_NAMES,
    _ci,
    _models,
    _params,
    _rtf_spread,
    _short,
    figure_adder,
)
from speechbench.common.figures import save_figure
from speechbench.common.fmt import commit, commit_line, generated_from
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct
from speechbench.common.noise import noise_markdown
from speechbench.common.report_page import render_page

# --- plots -------------------------------------------------------------------------------------------------


def make_plots(res: dict[str, Any], out_dir: Path, prefix: str = "asr") -> dict[str, str]:
    """Write the report's PNGs into ``out_dir`` as ``<prefix>_*.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s = res.get("summary", {})
    models = _models(res)
    made: dict[str, str] = {}
    if not models:
        return made
    out_dir.mkdir(parents=True, exist_ok=True)
    pd = s.get("per_dialect", {})
    dialects = list(dict.fromkeys(d for m in models for d in pd.get(m, {})))
    # 1. WER by dialect and model, 95% CI bars
    if dialects:
        fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(dialects) + 2), 4.5))
        w = 0.8 / len(models)
        for i, m in enumerate(models):
            vals, lo, hi = [], [], []
            for d in dialects:
                c = pd.get(m, {}).get(d, {})
                v = c.get("wer")
                ci = c.get("wer_ci95") or [None, None]
                vals.append(100 * v if v is not None else np.nan)
                lo.append(100 * (v - ci[0]) if v is not None and ci[0] is not None else 0)
                hi.append(100 * (ci[1] - v) if v is not None and ci[1] is not None else 0)
            ax.bar([j + i * w for j in range(len(dialects))], vals, w, yerr=[lo, hi], capsize=2, label=_short(m))
        ax.set_xticks([j + w * (len(models) - 1) / 2 for j in range(len(dialects))], dialects, rotation=30,
                      ha="right")
        ax.set_ylabel("WER, % (bars: 95% bootstrap CI)")
        ax.set_title("WER by dialect and model")
        ax.legend(fontsize=7, ncol=2)
        made["wer_by_dialect"] = save_figure(fig, out_dir, f"{prefix}_wer_by_dialect.png")
    made.update(report_real.plot_real_vs_synthetic(res, models, out_dir, prefix))
    # 2. WER vs RTF, Pareto front, marker size ~ memory
    sm = s.get("models", {})
    pts = [(m, speed_rtf(sm[m]), sm[m]["wer"], sm[m].get("peak_memory_mb")) for m in models
           if speed_rtf(sm[m]) is not None and sm[m].get("wer") is not None]
    if pts:
        front = set((res.get("advice") or {}).get("pareto_front_wer_rtf") or [])
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m, rtf, wer, mem in pts:
            ci = sm[m].get("wer_ci95") or [None, None]
            yerr = [[100 * (wer - ci[0])], [100 * (ci[1] - wer)]] if ci[0] is not None else None
            spread = sm[m].get("rtf_spread")
            xerr = [[rtf - spread[0]], [spread[1] - rtf]] if spread else None
            ax.errorbar(rtf, 100 * wer, yerr=yerr, xerr=xerr, fmt="o", ms=4 + (mem or 0) / 100,
                        color="tab:red" if m in front else "tab:blue", alpha=0.8, capsize=2)
            ax.annotate(_short(m), (rtf, 100 * wer), textcoords="offset points", xytext=(5, 4), fontsize=7)
        fp = sorted((p for p in pts if p[0] in front), key=lambda p: p[1])
        if len(fp) > 1:
            ax.plot([p[1] for p in fp], [100 * p[2] for p in fp], "--", color="tab:red", lw=1,
                    label="Pareto front (WER, RTF)")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("real-time factor (compute / audio; median of the timing passes, bars min-max), log scale")
        ax.set_ylabel("WER, % (95% CI)")
        ax.set_title("Accuracy vs speed (marker size ~ peak memory)")
        made["pareto"] = save_figure(fig, out_dir, f"{prefix}_wer_vs_rtf.png")
    # 3. S/D/I stacked bars
    fig, ax = plt.subplots(figsize=(max(6, 1.0 * len(models) + 2), 4))
    bottom = np.zeros(len(models))
    for key, name, color in (("sub_rate", "substitutions", "tab:orange"), ("del_rate", "deletions", "tab:blue"),
                             ("ins_rate", "insertions", "tab:green")):
        vals = np.array([100 * (sm[m].get(key) or 0) for m in models])
        ax.bar(range(len(models)), vals, bottom=bottom, label=name, color=color)
        bottom += vals
    ax.set_xticks(range(len(models)), [_short(m) for m in models], rotation=30, ha="right")
    ax.set_ylabel("errors per 100 reference words")
    ax.set_title("Error types (stack height = WER)")
    ax.legend(fontsize=8)
    made["sdi"] = save_figure(fig, out_dir, f"{prefix}_sdi.png")
    # 4. significance matrix (primary test, Holm-adjusted p; sign of the WER difference)
    sig = res.get("significance", {})
    primary = sig.get("primary_test", "mapsswe")
    if len(models) > 1 and sig.get("pairs"):
        k = len(models)
        mat = np.full((k, k), np.nan)
        idx = {m: i for i, m in enumerate(models)}
        for p in sig["pairs"]:
            t = p["tests"].get(primary, {})
            ph = t.get("p_holm")
            if ph is None or p["a"] not in idx or p["b"] not in idx:
                continue
            i, j = idx[p["a"]], idx[p["b"]]
            mat[i, j] = mat[j, i] = ph
        fig, ax = plt.subplots(figsize=(1.0 * k + 3, 0.9 * k + 2))
        im = ax.imshow(-np.log10(np.clip(mat, 1e-6, 1)), cmap="viridis", vmin=0, vmax=6)
        for i in range(k):
            for j in range(k):
                if i == j or np.isnan(mat[i, j]):
                    continue
                wi, wj = sm[models[i]]["wer"], sm[models[j]]["wer"]
                mark = "<" if wi < wj else ">"
                star = "*" if mat[i, j] < sig.get("alpha", 0.05) else ""
                ax.text(j, i, f"{mark}{star}\n{mat[i, j]:.2g}", ha="center", va="center", fontsize=6, color="w")
        ax.set_xticks(range(k), [_short(m) for m in models], rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(k), [_short(m) for m in models], fontsize=7)
        ax.set_title(f"{TEST_NAMES.get(primary, primary)}, Holm-adjusted p (row model's WER < or > column's; "
                     "* significant)", fontsize=8)
        fig.colorbar(im, ax=ax, label="-log10 p (Holm)")
        made["significance"] = save_figure(fig, out_dir, f"{prefix}_significance.png")
    return made


# --- report ------------------------------------------------------------------------------------------------


def render(res: dict[str, Any], report_path: Path, plots: bool = True) -> str:
    return render_page(res, report_path, SECTIONS, make_plots, plots)


def _header_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Title, provenance, machine noise, data and statistics settings."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    env = res.get("env", {})
    cfg = res.get("config", {})
    ds = res.get("dataset", {})
    sig = res.get("significance", {})
    add("# Part 2: multi-dialect ASR evaluation")
    add("")
    add(generated_from(res, "comprehensive_asr_evaluation.py", "results/asr_evaluation_results.json"))
    add("")
    add(f"- Device: **{s.get('device')}** ({env.get('device_name')}), {env.get('cpu_count')} CPU threads visible, "
        f"{cfg.get('workers')} worker(s) x {cfg.get('threads_per_worker')} thread(s); Python {env.get('python')}, "
        f"torch {env.get('torch')}")
    add(commit_line(res, f"; wall time {_f((res.get('timings') or {}).get('total_s'), 0, ' s')}"))
    L.extend(noise_markdown(res))
    sub = ds.get("subset") or {}
    srcs = ds.get("sources") or {}
    if len(srcs) > 1:
        add("- Sets: " + "; ".join(f"{src}: {v['utterances']} utterances, {_f(v['audio_s'] / 60, 1)} min, "
                                   f"{v['words']} words, {v['speakers']} speakers, {v['sentences']} sentences"
                                   for src, v in srcs.items()) + ".")
    add(f"- Data: {ds.get('source')}; {ds.get('utterances_evaluated')} utterances evaluated "
        f"({_f((ds.get('audio_s') or 0) / 60, 1)} min of audio), {len(ds.get('dialects') or {})} dialects, "
        f"{ds.get('sentences')} sentences, {ds.get('speakers')} speakers, conditions: "
        f"{', '.join(ds.get('conditions') or {})}.")
    if sub.get("rule"):
        add(f"- Subset: {sub['rule']} (of {ds.get('utterances_read')} utterances read)."
            + (f" Then capped: {sub['cap']['rule']}, {sub['cap']['max_utterances']}." if sub.get("cap") else ""))
    add(f"- Statistics: {cfg.get('n_boot')} bootstrap resamples, seed {cfg.get('seed')}, "
        f"alpha {sig.get('alpha', cfg.get('alpha'))}.")
    if s.get("quick"):
        add("- **This is a `--quick` smoke run**: tiny sizes, numbers are not for citing.")
    add("")
    return L


def _headline_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Accuracy, speed and cost per model, and the confidence-interval methods side by side."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    models = _models(res)
    sm = res.get("summary", {}).get("models", {})
    fig = figure_adder(L, figs, rel)
    add("## Headline: accuracy, speed and cost per model")
    add("")
    if len((res.get("dataset") or {}).get("sources") or {}) > 1:
        add("Over every utterance evaluated (real speech and synthetic accents pooled; each set apart: the "
            "section above). Speed, latency and memory do not depend on the set.")
        add("")
    n_pass = next((sm[m]["timing_passes"] for m in models if sm[m].get("timing_passes")), None)
    n_timing = next((sm[m]["timing_utterances"] for m in models if sm[m].get("timing_utterances")), None)
    add("Corpus WER = total errors / total reference words, after the same normalization of both sides. "
        "CI: 95% bootstrap (method per row). RTF = compute / audio (RTFx = its inverse). "
        + (f"Speed: the median RTF of {n_pass} timing passes over the same {n_timing} utterances per model "
           "(after the accuracy pass, one utterance at a time), [min, max] over the passes; this is the RTF "
           "the advice and the Pareto front use. The one-pass RTF over every utterance is beside it. "
           if n_pass else "Speed: one timed pass over every utterance (no timing passes in this run). ")
        + "Latency: one utterance at a time, warm-up excluded. Memory: peak resident set of the worker "
        "process running the model alone (imports + weights + transcription).")
    add("")
    add("| model | WER | 95% CI | CI method | CER | SER | RTF median [min, max] | RTF one pass (RTFx) | "
        "latency p50 / p95 | peak memory | params | precision |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        r = sm[m]
        add(f"| {m} | **{_pct(r.get('wer'))}** | {_ci(r.get('wer_ci95'))} | {r.get('wer_ci95_method', 'n/a')} | "
            f"{_pct(r.get('cer'))} | {_pct(r.get('ser'), 0)} | {_rtf_spread(r)} | "
            f"{_f(r.get('rtf'), 3)} ({_f(r.get('rtfx'), 1)}x) | "
            f"{_f(r.get('latency_ms_p50'), 0)} / {_f(r.get('latency_ms_p95'), 0)} ms | "
            f"{_f(r.get('peak_memory_mb'), 0, ' MB')} | {_params(r.get('params'))} | {r.get('precision')} |")
    add("")
    unavailable = s.get("models_unavailable") or {}
    if unavailable:
        add("Not evaluated (unavailable here):")
        add("")
        for m, why in unavailable.items():
            add(f"- `{m}`: {why}")
        add("")
    fig("pareto", "WER vs RTF")
    add("Sentences and speakers are crossed (every sentence is read by several speakers, every speaker reads "
        "several sentences), so the utterances are not independent: a hard sentence is hard for every voice "
        "and a hard voice for every sentence. The headline interval is therefore the two-way (pigeonhole) "
        "bootstrap: sentences and speakers resampled independently, every (sentence, speaker) cell of the "
        "drawn pairs kept, counted by the product of the draws. Without a crossed design it falls back to "
        f"speaker blocks (speakers repeat and there are at least {MIN_SPEAKER_BLOCKS}) or utterances. The "
        "JSON keeps each interval (`wer_ci95_two_way`, `wer_ci95_speaker`, `wer_ci95_sentence`, "
        "`wer_ci95_utterance`); the utterance interval treats every utterance as independent.")
    add("")
    wide = [(m, sm[m]) for m in models if sm[m].get("wer_ci95_two_way") and sm[m].get("wer_ci95_utterance")]
    if wide:
        add("| model | two-way (sentence x speaker) | speaker blocks | sentence blocks | utterances |")
        add("|---|---|---|---|---|")
        for m, r in wide:
            add(f"| {m} | {_ci(r.get('wer_ci95_two_way'))} | {_ci(r.get('wer_ci95_speaker'))} | "
                f"{_ci(r.get('wer_ci95_sentence'))} | {_ci(r.get('wer_ci95_utterance'))} |")
        add("")
    return L


def error_types_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Substitutions, deletions and insertions per model."""
    L: list[str] = []
    add = L.append
    models = _models(res)
    sm = res.get("summary", {}).get("models", {})
    fig = figure_adder(L, figs, rel)
    add("## Error types")
    add("")
    add("| model | substitutions | deletions | insertions | S / D / I (per 100 ref words) | ref words |")
    add("|---|---|---|---|---|---|")
    for m in models:
        r = sm[m]
        add(f"| {m} | {r.get('sub')} | {r.get('del')} | {r.get('ins')} | {_f(100 * (r.get('sub_rate') or 0), 1)} / "
            f"{_f(100 * (r.get('del_rate') or 0), 1)} / {_f(100 * (r.get('ins_rate') or 0), 1)} | "
            f"{r.get('ref_words')} |")
    add("")
    fig("sdi", "S/D/I")
    return L


def _failures_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Recorded per-item failures and audio warnings."""
    L: list[str] = []
    add = L.append
    fails = res.get("failures") or []
    add("## Failures and warnings")
    add("")
    if not fails:
        add("None: every selected utterance was scored by every available model.")
    else:
        add(f"{len(fails)} recorded failure(s); each was skipped and the run went on:")
        add("")
        add("| section | model | item | error |")
        add("|---|---|---|---|")
        for f in fails[:40]:
            item = f.get("id") or (f"line {f['line']}" if f.get("line") else "")
            section, error = f.get("section", f.get("stage")), f.get("error", f.get("reason"))  # /1: stage, reason
            add(f"| {section} | {f.get('model') or ''} | {item} | {str(error)[:160]} |")
        if len(fails) > 40:
            add(f"| ... | | | {len(fails) - 40} more in the JSON |")
    add("")
    warns = res.get("warnings") or []
    if warns:
        add(f"{len(warns)} clip(s) carry audio warnings (kept), e.g. {warns[0]['id']}: "
            f"{', '.join(warns[0]['warnings'])}.")
        add("")
    return L


def _method_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """How the figures were computed."""
    L: list[str] = []
    add = L.append
    add("## Method")
    add("")
    add("- **Normalization** (both sides, `speechbench/asr_eval/normalize.py`): lowercase, accents and "
        "punctuation stripped, bracketed annotations dropped, hyphens split words, digits spelled out "
        "(American cardinals without \"and\", years read as years, ordinals, decimals, %, currency), "
        "unambiguous contractions expanded (n't, 're, 'm, 'll, 've, 'd, won't, can't/cannot -> can not), "
        "possessive/'s kept, common British spellings mapped to American, hesitations dropped. Whisper's "
        "English normalizer (Open ASR Leaderboard) maps words to digits instead and splits 's; the raw strings "
        "are in the JSON to rescore either way.")
    add("- **Alignment**: Levenshtein with unit costs; errors per utterance = edit distance, so corpus WER equals "
        "jiwer's / sclite's; ties prefer substitution over deletion + insertion.")
    add("- **Statistics**: percentile bootstrap (Bisani & Ney 2004); paired tests on the same utterances "
        "(refused with a message when the utterance sets differ); MAPSSWE segments bounded by >= 2 words "
        "both systems got right (Gillick & Cox 1989, as in NIST sc_stats); McNemar exact binomial on the "
        "discordant sentences; Holm step-down over pairs; Friedman with tie correction. Crossed designs "
        "(sentences x speakers): the two-way pigeonhole bootstrap for the WER interval (Owen 2007) and "
        "sentence-level paired tests on per-sentence error totals.")
    add("- **Speed**: after the accuracy pass each model re-transcribes a fixed subset of the utterances "
        "(`config.timing_subset`, the same for every model, spread over dialects and sentences) several "
        "times in its own worker, back to back (models run one after another in separate processes, so the "
        "passes are not interleaved across models); RTF per pass = its compute / its audio, reported as the "
        "median with [min, max].")
    trn = res.get("trn") or {}
    if trn.get("dir"):
        add(f"- **sclite**: hypotheses and references of every model are in `{trn['dir']}` (trn format), e.g. "
            f"`{trn.get('sclite')}`.")
    add("")
    return L


# The report's sections in page order; each returns its Markdown lines.
SECTIONS = (_header_section, report_real.real_speech_section, _headline_section, error_types_section,
            sections.dialect_section,
            sections.domain_gap_section, sections.significance_section, report_real.real_pairs_section,
            report_real.families_section, sections.dialect_effects_section,
            sections.speed_section, sections.error_analysis_section, sections.advice_section, _failures_section,
            _method_section)


def headline_markdown(res: dict[str, Any]) -> str:
    """The figures the README quotes, rendered from the JSON."""
    s = res.get("summary", {})
    env = res.get("env", {})
    ds = res.get("dataset", {})
    sm = s.get("models", {})
    adv = res.get("advice") or {}
    sets = "; ".join(f"{src}: {v['utterances']}, {v['words']} words" for src, v in (ds.get("sources") or {}).items())
    lines = [
        f"Latest full run: {s.get('device')} ({env.get('device_name')}, {env.get('cpu_count')} threads), commit "
        f"{commit(env, 10)}, {env.get('time_utc')}; {ds.get('utterances_evaluated')} "
        f"utterances ({sets}), {_f((ds.get('audio_s') or 0) / 60, 1)} min of audio.",
        "",
        "| model | WER, real speech (95% CI) | WER, synthetic accents (95% CI) | CER, all | RTF median [min, max] "
        "| latency p95 | peak memory | params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ps = s.get("per_source") or {}
    for m, r in sm.items():
        real, syn = ((ps.get(m) or {}).get(k) or {} for k in ("real", "synthetic"))
        lines.append(f"| {m} | {_pct(real.get('wer'))} {_ci(real.get('wer_ci95'))} | "
                     f"{_pct(syn.get('wer'))} {_ci(syn.get('wer_ci95'))} | {_pct(r.get('cer'))} | "
                     f"{_rtf_spread(r)} | {_f(r.get('latency_ms_p95'), 0, ' ms')} | "
                     f"{_f(r.get('peak_memory_mb'), 0, ' MB')} | {_params(r.get('params'))} |")
    if adv.get("recommended"):
        why = f" ({adv['recommended_reason']})" if adv.get("recommended_reason") else ""
        lines += ["", f"Recommended within budget: **{adv['recommended']}**{why}; "
                      "Pareto front (overall WER, RTF, memory): "
                      f"{', '.join(adv.get('pareto_front') or [])}."]
    un = s.get("models_unavailable") or {}
    if un:
        lines += ["", "Not available in that run: " + ", ".join(un) + "."]
    return "\n".join(lines)


def own_models_human_speech(res: dict[str, Any]) -> str:
    """models/README.md's block: the own CTC models' WER on real speech beside the best pretrained model's."""
    ps = (res.get("summary") or {}).get("per_source") or {}
    models = res.get("models") or {}
    real = {m: v["real"] for m, v in ps.items() if v.get("real")}
    if not real:
        return "(no real-speech set in the latest Part 2 run)"
    env = res.get("env", {})
    n = next(iter(real.values()))
    lines = [f"Part 2 at commit {commit(env, 10)} ({env.get('time_utc')}): {n.get('n')} recordings of people, "
             f"{n.get('ref_words')} reference words.", "",
             "| model | WER on real speech (95% CI) | WER on the synthetic accents |", "|---|---|---|"]
    own = [m for m in real if (models.get(m) or {}).get("own")]
    pre = [m for m in real if m not in own]
    best = min(pre, key=lambda m: real[m]["wer"]) if pre else None
    for m in own + ([best] if best else []):
        syn = (ps.get(m) or {}).get("synthetic") or {}
        label = m if m in own else f"{m} (the best pretrained model, for scale)"
        lines.append(f"| {label} | {_pct(real[m].get('wer'))} {_ci(real[m].get('wer_ci95'))} | "
                     f"{_pct(syn.get('wer'))} |")
    return "\n".join(lines)
