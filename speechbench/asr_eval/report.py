"""Render docs/asr_report.md (and its plots) from results/asr_evaluation_results.json, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from speechbench.asr_eval.analysis import MIN_SPEAKER_BLOCKS, speed_rtf
from speechbench.common.figures import save_figure
from speechbench.common.fmt import commit, commit_line, generated_from
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct
from speechbench.common.noise import noise_markdown
from speechbench.common.results import write_text_atomic

TEST_NAMES = {"mapsswe": "MAPSSWE", "wilcoxon": "Wilcoxon", "sign": "sign", "paired_t": "paired t",
              "mcnemar": "McNemar"}




def _pp(x: Any, nd: int = 1) -> str:
    return "n/a" if not isinstance(x, (int, float)) else f"{100 * x:+.{nd}f}"


def _ci(ci: Any, nd: int = 1) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "n/a"
    return f"[{100 * ci[0]:.{nd}f}, {100 * ci[1]:.{nd}f}]"




def _p(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return "n/a"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _rtf_spread(r: dict[str, Any]) -> str:
    """Median RTF of the timing passes with [min, max]; the one-pass RTF for results without passes."""
    spread = r.get("rtf_spread")
    if not spread:
        return f"{_f(r.get('rtf'), 3)} (1 pass)"
    return f"{_f(r.get('rtf_median'), 3)} [{_f(spread[0], 3)}, {_f(spread[1], 3)}]"


def _params(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return "n/a"
    return f"{x / 1e6:.1f} M" if x >= 1e5 else f"{x:,.0f}"


def _models(res: dict[str, Any]) -> list[str]:
    return list(res.get("summary", {}).get("models", {}))


def _short(label: str) -> str:
    return label.replace("whisper-tiny.en", "whisper").replace("pocketsphinx", "sphinx")


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
    report_path = Path(report_path)
    figs = make_plots(res, report_path.parent / "figures", prefix=report_path.stem) if plots else {}
    rel = os.path.relpath(report_path.parent / "figures", report_path.parent)
    text = "\n".join(_body(res, figs, rel)) + "\n"
    write_text_atomic(report_path, text)
    return text


def _body(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    s = res.get("summary", {})
    env = res.get("env", {})
    cfg = res.get("config", {})
    ds = res.get("dataset", {})
    sig = res.get("significance", {})
    models = _models(res)
    sm = s.get("models", {})
    L: list[str] = []
    add = L.append

    def fig(key: str, caption: str) -> None:
        if key in figs:
            add(f"![{caption}]({rel}/{figs[key]})")
            add("")

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
    add(f"- Data: {ds.get('source')}; {ds.get('utterances_evaluated')} utterances evaluated "
        f"({_f((ds.get('audio_s') or 0) / 60, 1)} min of audio), {len(ds.get('dialects') or {})} dialects, "
        f"{ds.get('sentences')} sentences, {ds.get('speakers')} speakers, conditions: "
        f"{', '.join(ds.get('conditions') or {})}.")
    if sub.get("rule"):
        add(f"- Subset: {sub['rule']} (of {ds.get('utterances_read')} utterances read)."
            + (f" Then capped: {sub['cap']['rule']}, {sub['cap']['max_utterances']}." if sub.get("cap") else ""))
    add(f"- Statistics: {cfg.get('n_boot')} bootstrap resamples, seed {cfg.get('seed')}, alpha {sig.get('alpha', cfg.get('alpha'))}.")
    if s.get("quick"):
        add("- **This is a `--quick` smoke run**: tiny sizes, numbers are not for citing.")
    add("")

    # headline
    add("## Headline: accuracy, speed and cost per model")
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
    add("| model | WER | 95% CI | CI method | CER | SER | RTF median [min, max] | RTF one pass (RTFx) | latency p50 / p95 | peak memory | params | precision |")
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

    # S/D/I
    add("## Error types")
    add("")
    add("| model | substitutions | deletions | insertions | S / D / I (per 100 ref words) | ref words |")
    add("|---|---|---|---|---|---|")
    for m in models:
        r = sm[m]
        add(f"| {m} | {r.get('sub')} | {r.get('del')} | {r.get('ins')} | {_f(100 * (r.get('sub_rate') or 0), 1)} / "
            f"{_f(100 * (r.get('del_rate') or 0), 1)} / {_f(100 * (r.get('ins_rate') or 0), 1)} | {r.get('ref_words')} |")
    add("")
    fig("sdi", "S/D/I")

    # per dialect
    pd = s.get("per_dialect", {})
    dialects = list(dict.fromkeys(d for m in models for d in pd.get(m, {})))
    gap_all = (sig.get("domain_gap") or {})
    in_dom = set()
    for g in (gap_all.get("models") or {}).values():
        if g.get("own"):
            in_dom |= set(g.get("in_domain") or [])
    if dialects:
        add("## WER by dialect")
        add("")
        add("WER with its 95% bootstrap CI: the two-way bootstrap where several speakers of the dialect read the "
            "same sentences; otherwise sentences resampled as blocks within the dialect (in the embedded "
            "corpus each sentence is read by one of a dialect's 3 speakers: too few speakers to resample, so "
            "that interval leaves out the speaker variance and is a lower bound on the spread). " + ("Dialects marked † are in the own CTC "
                                                                  "models' training accents; the others are "
                                                                  "held out." if in_dom else ""))
        add("")
        add("| dialect | n | " + " | ".join(_short(m) for m in models) + " |")
        add("|---|---|" + "---|" * len(models))
        for d in dialects:
            n = next((pd[m][d]["n"] for m in models if d in pd.get(m, {})), "")
            cells = []
            for m in models:
                c = pd.get(m, {}).get(d)
                cells.append(f"{_pct(c['wer'])} {_ci(c.get('wer_ci95'), 0)}" if c else "n/a")
            add(f"| {d}{' †' if d in in_dom else ''} | {n} | " + " | ".join(cells) + " |")
        add("")
        fig("wer_by_dialect", "WER by dialect")
    pc = s.get("per_condition", {})
    conds = list(dict.fromkeys(c for m in models for c in pc.get(m, {})))
    if len(conds) > 1:
        add("## WER by condition")
        add("")
        add("| condition | " + " | ".join(_short(m) for m in models) + " |")
        add("|---|" + "---|" * len(models))
        for c in conds:
            add(f"| {c} | " + " | ".join(f"{_pct(pc[m][c]['wer'])} {_ci(pc[m][c].get('wer_ci95'), 0)}"
                                          if c in pc.get(m, {}) else "n/a" for m in models) + " |")
        add("")

    # domain gap
    gm = gap_all.get("models") or {}
    if gm:
        add("## In-domain vs held-out accents")
        add("")
        ctrl = gap_all.get("control_model")
        add("Pooled WER on the accents a model was trained on vs the others, the same sentences in both groups; "
            "CI from resampling sentences. For the models that were not trained here the split uses the own "
            "models' training accents, so their gap measures how much harder the held-out accents are for any "
            "recognizer." + (f" The control for the own models is {ctrl}: gap minus control gap is the part of "
                             "the gap due to not hearing those accents in training." if ctrl else ""))
        add("")
        add("| model | own | in-domain accents | in-domain WER | held-out WER | gap (points) | 95% CI | Wilcoxon p (sentences) | gap minus control | 95% CI |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for m, g in gm.items():
            w = g.get("wilcoxon_over_sentences") or {}
            add(f"| {m} | {'yes' if g.get('own') else 'no'} | {', '.join(g.get('in_domain') or [])} | "
                f"{_pct(g['wer_in_domain'])} | {_pct(g['wer_held_out'])} | "
                f"{_pp(g['gap'])} | {_ci(g['gap_ci95'])} | {_p(w.get('p_value'))} | "
                f"{_pp(g.get('gap_minus_control')) if 'gap_minus_control' in g else ''} | "
                f"{_ci(g.get('gap_minus_control_ci95')) if 'gap_minus_control' in g else ''} |")
        add("")

    # significance
    if sig.get("pairs"):
        primary = sig.get("primary_test", "mapsswe")
        add("## Are the differences between models real?")
        add("")
        add("Paired on the same utterances. Each test's p-values are Holm-corrected over all model pairs "
            f"(`p_holm`); **bold** = significant at {sig.get('alpha')}. MAPSSWE (NIST's matched-pairs "
            "sentence-segment test) is the primary test; Wilcoxon, sign and t work on per-utterance error "
            "counts, McNemar on whole-sentence correctness. P(A better) is the paired-bootstrap probability "
            "that A has the lower corpus WER; the CI is for WER(A) - WER(B). The utterance-level tests take the "
            "utterances as independent, which they are not (the voices reading one sentence share its "
            "difficulty); the last column tests with the sentence as the unit: Wilcoxon signed-rank on "
            "per-sentence error totals (summed over the voices), Holm over the pairs, n = sentences.")
        add("")
        add("| A | B | WER A | WER B | A - B (points) | 95% CI | P(A better) | d_z | " +
            " | ".join(TEST_NAMES[t] for t in ("mapsswe", "wilcoxon", "sign", "paired_t", "mcnemar")) +
            " | sentence-level Wilcoxon (n) |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for p in sig["pairs"]:
            cells = []
            for t in ("mapsswe", "wilcoxon", "sign", "paired_t", "mcnemar"):
                tr = p["tests"][t]
                txt = _p(tr.get("p_holm"))
                cells.append(f"**{txt}**" if tr.get("significant") else txt)
            sw = (p.get("sentence_level") or {}).get("wilcoxon") or {}
            txt = _p(sw.get("p_holm"))
            cells.append(f"{f'**{txt}**' if sw.get('significant') else txt} "
                         f"({(p.get('sentence_level') or {}).get('n_sentences', 'n/a')})")
            add(f"| {p['a']} | {p['b']} | {_pct(p['wer_a'])} | {_pct(p['wer_b'])} | {_pp(p['wer_diff'])} | "
                f"{_ci(p['wer_diff_ci95'])} | {_f(p.get('p_a_better'), 3)} | {_f(p.get('cohen_dz'), 2)} | "
                + " | ".join(cells) + " |")
        add("")
        n_sig = sum(1 for p in sig["pairs"] if p["tests"][primary].get("significant"))
        n_sent = sum(1 for p in sig["pairs"] if ((p.get("sentence_level") or {}).get("wilcoxon") or {}).get("significant"))
        add(f"{n_sig} of {len(sig['pairs'])} pairs differ significantly on the primary test after Holm"
            + (f", {n_sent} at the sentence level." if any(p.get("sentence_level") for p in sig["pairs"]) else "."))
        add("")
        fig("significance", "significance matrix")
    if sig.get("refused"):
        add("Refused paired comparisons (utterance sets differ):")
        add("")
        for r in sig["refused"]:
            add(f"- {r['a']} vs {r['b']}: {r['reason']}")
        add("")

    # dialect effects
    de = sig.get("dialects") or {}
    if any(v.get("friedman") or v.get("pairwise") for v in de.values()):
        add("## Dialect effects (paired by sentence)")
        add("")
        add("Every dialect speaks the same sentences, so dialects are compared within sentences: Friedman's "
            "test over dialects (blocks = sentence x condition), Kendall's W as effect size (0 = dialect does "
            "not matter, 1 = it orders every sentence the same way), then Wilcoxon signed-rank between each "
            "pair of dialects with Holm over the pairs.")
        add("")
        add("| model | blocks | Friedman chi2 | df | p | Kendall's W | significant dialect pairs (Holm) | hardest dialect (mean rank) |")
        add("|---|---|---|---|---|---|---|---|")
        for m, v in de.items():
            fr = v.get("friedman") or {}
            pw = v.get("pairwise") or []
            hard = ""
            if fr.get("mean_ranks"):
                k = max(range(len(fr["mean_ranks"])), key=lambda i: fr["mean_ranks"][i])
                hard = f"{v['dialects'][k]} ({fr['mean_ranks'][k]:.1f})"
            add(f"| {m} | {v.get('blocks', 'n/a')} | {_f(fr.get('statistic'), 1)} | {fr.get('df', 'n/a')} | "
                f"{_p(fr.get('p_value'))} | {_f(fr.get('kendall_w'), 2)} | "
                f"{sum(1 for p in pw if p['significant'])} of {len(pw)} | {hard} |")
        add("")

    # speed
    add("## Speed and memory")
    add("")
    add("| model | audio | compute | RTF one pass | timing passes: RTF per pass (audio) | latency mean / p50 / p95 / max (ms) | load | peak RSS | model RSS | backend |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        r = sm[m]
        passes = (", ".join(_f(x, 3) for x in r["rtf_passes"]) + f" ({_f(r.get('timing_audio_s'), 0, ' s')})"
                  if r.get("rtf_passes") else "n/a")
        add(f"| {m} | {_f(r.get('audio_s'), 0, ' s')} | {_f(r.get('compute_s'), 1, ' s')} | {_f(r.get('rtf'), 3)} | "
            f"{passes} | "
            f"{_f(r.get('latency_ms_mean'), 0)} / {_f(r.get('latency_ms_p50'), 0)} / {_f(r.get('latency_ms_p95'), 0)} / "
            f"{_f(r.get('latency_ms_max'), 0)} | {_f(r.get('load_s'), 1, ' s')} | {_f(r.get('peak_memory_mb'), 0, ' MB')} | "
            f"{_f(r.get('model_memory_mb'), 0, ' MB')} | {r.get('backend')} |")
    add("")
    mods = res.get("models", {})
    be_rows = [(m, row) for m in models for row in (mods.get(m, {}).get("batch_effect") or [])]
    if be_rows:
        add("**Batch-size effect** (the backend's own batching, the same first clips at each size; texts "
            "compared with the batch-size-1 pass of the same path):")
        add("")
        add("| model | batch size | utterances | seconds | RTF | utterances/s | same text as batch 1 |")
        add("|---|---|---|---|---|---|---|")
        for m, row in be_rows:
            add(f"| {m} | {row['batch_size']} | {row['utterances']} | {_f(row['seconds'], 2)} | {_f(row['rtf'], 3)} | "
                f"{_f(row['utterances_per_s'], 2)} | {_pct(row['same_text_as_batch1'], 0)} |")
        add("")
    notes = [(m, mods[m].get("batch_effect_note")) for m in models if mods.get(m, {}).get("batch_effect_note")]
    for m, note in notes:
        add(f"- {m}: {note}.")
    if notes:
        add("")

    # error analysis
    an = res.get("analysis") or {}
    am = an.get("models") or {}
    if am:
        add("## Error analysis")
        add("")
        voc = an.get("vocabulary") or {}
        add(f"Per reference word: recognized, or substituted / deleted. Frequency bands count each word in "
            f"{voc.get('source')} ({voc.get('types')} word types). OOV = not in the model's own training "
            "transcripts (own models only).")
        add("")
        cols = [("word_class", "function"), ("word_class", "content"), ("word_length", "1-3"),
                ("word_length", "4-6"), ("word_length", "7-9"), ("word_length", "10+"),
                ("frequency_band", "unseen"), ("frequency_band", "1-9"), ("frequency_band", "10-99"),
                ("frequency_band", "100+"), ("oov", "out of vocabulary"), ("oov", "in vocabulary")]
        head = ["function words", "content words", "1-3 letters", "4-6", "7-9", "10+", "freq unseen", "freq 1-9",
                "10-99", "100+", "OOV", "in-vocab"]
        add("| model | " + " | ".join(head) + " |")
        add("|---|" + "---|" * len(head))
        for m in models:
            a = am.get(m) or {}
            cells = []
            for sec, key in cols:
                c = (a.get(sec) or {}).get(key)
                cells.append(f"{_pct(c['error_rate'], 0)} ({c['words']})" if c else "-")
            add(f"| {m} | " + " | ".join(cells) + " |")
        add("")
        add("Cells: word error rate (substituted or deleted) and, in brackets, how many reference words fall in the "
            "class.")
        add("")
        add("| model | WER vs duration (Spearman rho, p) | top substitutions (ref -> hyp x count) | top deletions | top insertions |")
        add("|---|---|---|---|---|")
        for m in models:
            a = am.get(m) or {}
            sp = a.get("wer_vs_duration") or {}
            subs = ", ".join(f"{x['ref']}->{x['hyp']} x{x['count']}" for x in (a.get("top_substitutions") or [])[:5])
            dels = ", ".join(f"{x['word']} x{x['count']}" for x in (a.get("top_deletions") or [])[:5])
            inss = ", ".join(f"{x['word']} x{x['count']}" for x in (a.get("top_insertions") or [])[:5])
            add(f"| {m} | {_f(sp.get('spearman_rho'), 2)} ({_p(sp.get('p_value'))}) | {subs} | {dels} | {inss} |")
        add("")
        hard = an.get("hardest_utterances") or []
        if hard:
            add("**Hardest utterances** (highest mean WER over the models):")
            add("")
            add("| id | dialect | mean WER | reference | best / worst hypothesis |")
            add("|---|---|---|---|---|")
            for h in hard:
                best = min(h["wers"], key=h["wers"].get)
                worst = max(h["wers"], key=h["wers"].get)
                add(f"| {h['id']} | {h['dialect']} | {_pct(h['mean_wer'], 0)} | {h['ref']} | "
                    f"{_short(best)}: {h['hyps'][best] or '(empty)'} / {_short(worst)}: {h['hyps'][worst] or '(empty)'} |")
            add("")

    # advice
    adv = res.get("advice") or {}
    if adv:
        add("## Advice (derived from the numbers above)")
        add("")
        lb, mb = adv.get("latency_budget_ms"), adv.get("memory_budget_mb")
        add("Budgets: " + (f"p95 latency <= {_f(lb, 0, ' ms')}" if lb else "no latency budget") + ", "
            + (f"peak memory <= {_f(mb, 0, ' MB')}" if mb else "no memory budget")
            + " (flags `--latency-budget-ms`, `--memory-budget-mb`).")
        add("")
        for key, title, unit in (("latency_ladder", "p95 latency", "ms"), ("memory_ladder", "peak memory", "MB")):
            ladder = adv.get(key) or []
            if not ladder:
                continue
            ds_ = list(dict.fromkeys(d for r in ladder for d in r["per_dialect"]))
            add(f"**Budget ladder, {title}**: at each budget level where the answer changes, the lowest-WER "
                "model within it, overall and per dialect.")
            add("")
            add(f"| {title} budget | best overall | " + " | ".join(ds_) + " |")
            add("|---|---|" + "---|" * len(ds_))
            for r in ladder:
                cells = [f"{_short(r['per_dialect'][d]['model'])} {_pct(r['per_dialect'][d]['wer'], 0)}"
                         if d in r["per_dialect"] else "" for d in ds_]
                add(f"| <= {_f(r['budget'], 0, ' ' + unit)} | {_short(r['best'])} {_pct(r['wer'])} | "
                    + " | ".join(cells) + " |")
            add("")
        if adv.get("recommended"):
            r = sm.get(adv["recommended"], {})
            add(f"- **One model for everything:** {adv['recommended']} ({_pct(r.get('wer'))} WER, CI "
                f"{_ci(r.get('wer_ci95'))}, RTF {_rtf_spread(r)}, p95 {_f(r.get('latency_ms_p95'), 0, ' ms')}).")
            if adv.get("recommended_reason"):
                add(f"  Why: {adv['recommended_reason']}. (Rule: the cheapest eligible model, by median RTF, then "
                    "p95 latency, then peak memory, among those the primary test does not find significantly "
                    f"worse than the lowest-WER one, {adv.get('lowest_wer_model')}.)")
        if adv.get("excluded_by_budget"):
            add("- Outside the budget: " + "; ".join(f"{m} ({why})" for m, why in adv["excluded_by_budget"].items()) + ".")
        if adv.get("note"):
            add(f"- Note: {adv['note']}.")
        add(f"- **Pareto front** (WER, RTF, memory: no other model is better on all three): "
            f"{', '.join(adv.get('pareto_front') or []) or 'n/a'}; on WER and RTF alone: "
            f"{', '.join(adv.get('pareto_front_wer_rtf') or []) or 'n/a'}.")
        add("")
        per = adv.get("per_dialect") or {}
        if per:
            add("**Model per dialect** within the budget (the runner-up is tested against the best on that "
                "dialect's utterances, Wilcoxon; if it is not significantly worse and is cheaper, it is chosen):")
            add("")
            add("| dialect | lowest WER | WER | runner-up | its WER | p | choice | why |")
            add("|---|---|---|---|---|---|---|---|")
            for d, row in per.items():
                add(f"| {d} | {row['best']} | {_pct(row['wer'])} | {row.get('runner_up', '')} | "
                    f"{_pct(row.get('runner_up_wer')) if row.get('runner_up') else ''} | {_p(row.get('p_value'))} | "
                    f"**{row['choice']}** | {row['reason']} |")
            add("")
        rt = adv.get("routing")
        if rt:
            same = rt["models_used"] == [rt["single_model"]]
            dw = None if rt["wer"] is None or rt["single_model_wer"] is None else rt["wer"] - rt["single_model_wer"]
            add(f"**Dynamic selection.** Route by dialect (a dialect/accent ID or the user's locale picks the "
                f"route; unknown dialects go to {rt['fallback_for_unknown_dialect']}), using the per-dialect "
                f"choices above: expected WER {_pct(rt['wer'])} at RTF {_f(rt['rtf'], 3)}, vs "
                f"{_pct(rt['single_model_wer'])} at RTF {_f(rt['single_model_rtf'], 3)} with {rt['single_model']} "
                f"alone ({_pp(dw)} points WER)"
                + (": one model wins everywhere, so routing buys nothing here." if same else
                   f"; models used: {', '.join(rt['models_used'])}."))
            add("")
        wd = adv.get("worst_dialect")
        if wd:
            add(f"**Worst dialect for {wd['model']}: {wd['dialect']}.**")
            add("")
            for n in wd["notes"]:
                add(f"- {n}")
            add("")

    # failures
    fails = res.get("failures") or []
    add("## Failures and warnings")
    add("")
    if not fails:
        add("None: every selected utterance was scored by every available model.")
    else:
        add(f"{len(fails)} recorded failure(s); each was skipped and the run went on:")
        add("")
        add("| stage | model | item | reason |")
        add("|---|---|---|---|")
        for f in fails[:40]:
            item = f.get("id") or (f"line {f['line']}" if f.get("line") else "")
            add(f"| {f['stage']} | {f.get('model') or ''} | {item} | {str(f['reason'])[:160]} |")
        if len(fails) > 40:
            add(f"| ... | | | {len(fails) - 40} more in the JSON |")
    add("")
    warns = res.get("warnings") or []
    if warns:
        add(f"{len(warns)} clip(s) carry audio warnings (kept), e.g. {warns[0]['id']}: {', '.join(warns[0]['warnings'])}.")
        add("")

    # method
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


def headline_markdown(res: dict[str, Any]) -> str:
    """The figures the README quotes, rendered from the JSON."""
    s = res.get("summary", {})
    env = res.get("env", {})
    ds = res.get("dataset", {})
    sm = s.get("models", {})
    adv = res.get("advice") or {}
    lines = [
        f"Latest full run: {s.get('device')} ({env.get('device_name')}, {env.get('cpu_count')} threads), commit "
        f"{commit(env, 10)}, {env.get('time_utc')}; {ds.get('utterances_evaluated')} "
        f"utterances, {len(ds.get('dialects') or {})} dialects, {_f((ds.get('audio_s') or 0) / 60, 1)} min of audio.",
        "",
        "| model | WER (95% CI) | CER | RTF median [min, max] | latency p95 | peak memory | params |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, r in sm.items():
        lines.append(f"| {m} | {_pct(r.get('wer'))} {_ci(r.get('wer_ci95'))} | {_pct(r.get('cer'))} | "
                     f"{_rtf_spread(r)} | {_f(r.get('latency_ms_p95'), 0, ' ms')} | "
                     f"{_f(r.get('peak_memory_mb'), 0, ' MB')} | {_params(r.get('params'))} |")
    if adv.get("recommended"):
        why = f" ({adv['recommended_reason']})" if adv.get("recommended_reason") else ""
        lines += ["", f"Recommended within budget: **{adv['recommended']}**{why}; Pareto front (WER, RTF, memory): "
                      f"{', '.join(adv.get('pareto_front') or [])}."]
    un = s.get("models_unavailable") or {}
    if un:
        lines += ["", "Not available in that run: " + ", ".join(un) + "."]
    return "\n".join(lines)
