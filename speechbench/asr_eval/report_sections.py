"""The Part 2 report's detail sections (per dialect, domain gap, significance, dialect effects, speed, error
analysis, advice) and the formatters every section shares. Each section takes the results, the figure names
and the figures' relative folder, and returns its Markdown lines; ``report.render`` puts them in order."""

from __future__ import annotations

from typing import Any

from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct

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


def figure_adder(L: list[str], figs: dict[str, str], rel: str):
    """``fig(key, caption)``: append a figure's Markdown (and a blank line) when that figure was drawn."""
    def fig(key: str, caption: str) -> None:
        if key in figs:
            L.append(f"![{caption}]({rel}/{figs[key]})")
            L.append("")

    return fig


def dialect_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """WER by dialect (held-out accents marked) and by condition."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    sig = res.get("significance", {})
    models = _models(res)
    fig = figure_adder(L, figs, rel)
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
            "that interval leaves out the speaker variance and is a lower bound on the spread). "
            + ("Dialects marked † are in the own CTC models' training accents; the others are held out."
               if in_dom else ""))
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
    return L


def domain_gap_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """In-domain vs held-out accents, with the control model's gap."""
    L: list[str] = []
    add = L.append
    sig = res.get("significance", {})
    gap_all = (sig.get("domain_gap") or {})
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
        add("| model | own | in-domain accents | in-domain WER | held-out WER | gap (points) | 95% CI | "
            "Wilcoxon p (sentences) | gap minus control | 95% CI |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for m, g in gm.items():
            w = g.get("wilcoxon_over_sentences") or {}
            add(f"| {m} | {'yes' if g.get('own') else 'no'} | {', '.join(g.get('in_domain') or [])} | "
                f"{_pct(g['wer_in_domain'])} | {_pct(g['wer_held_out'])} | "
                f"{_pp(g['gap'])} | {_ci(g['gap_ci95'])} | {_p(w.get('p_value'))} | "
                f"{_pp(g.get('gap_minus_control')) if 'gap_minus_control' in g else ''} | "
                f"{_ci(g.get('gap_minus_control_ci95')) if 'gap_minus_control' in g else ''} |")
        add("")
    return L


def significance_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Paired tests between every pair of models, utterance and sentence level."""
    L: list[str] = []
    add = L.append
    sig = res.get("significance", {})
    fig = figure_adder(L, figs, rel)
    if sig.get("pairs"):
        primary = sig.get("primary_test", "mapsswe")
        add("## Are the differences between models real?")
        add("")
        add("Paired on the same utterances. Each test's p-values are Holm-corrected over all model pairs "
            f"(`p_holm`); **bold** = significant at {sig.get('alpha')}. MAPSSWE (NIST's matched-pairs "
            "sentence-segment test) is the primary test; Wilcoxon, sign and t work on per-utterance error "
            "counts, McNemar on whole-sentence correctness. P(A better) is the paired-bootstrap probability "
            "that A has the lower corpus WER; the CI is for WER(A) - WER(B), from the paired bootstrap resampling "
            f"the same units as the headline interval ({sig['pairs'][0].get('bootstrap_method', 'n/a')}). "
            "The pairs pool every utterance (real and synthetic); the real-speech pairs, on which the advice "
            "rests, follow the table. The utterance-level tests take the "
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
        n_sent = sum(1 for p in sig["pairs"]
                     if ((p.get("sentence_level") or {}).get("wilcoxon") or {}).get("significant"))
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
    return L


def dialect_effects_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Friedman and pairwise tests over dialects, paired by sentence."""
    L: list[str] = []
    add = L.append
    sig = res.get("significance", {})
    de = sig.get("dialects") or {}
    if any(v.get("friedman") or v.get("pairwise") for v in de.values()):
        add("## Dialect effects (paired by sentence)")
        add("")
        add("Every dialect speaks the same sentences, so dialects are compared within sentences: Friedman's "
            "test over dialects (blocks = sentence x condition), Kendall's W as effect size (0 = dialect does "
            "not matter, 1 = it orders every sentence the same way), then Wilcoxon signed-rank between each "
            "pair of dialects with Holm over the pairs.")
        add("")
        add("| model | blocks | Friedman chi2 | df | p | Kendall's W | significant dialect pairs (Holm) | "
            "hardest dialect (mean rank) |")
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
    return L


def speed_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """RTF passes, latency, load time, memory, batch-size effect."""
    L: list[str] = []
    add = L.append
    models = _models(res)
    sm = res.get("summary", {}).get("models", {})
    add("## Speed and memory")
    add("")
    add("| model | audio | compute | RTF one pass | timing passes: RTF per pass (audio) | "
        "latency mean / p50 / p95 / max (ms) | load | peak RSS | model RSS | backend |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        r = sm[m]
        passes = (", ".join(_f(x, 3) for x in r["rtf_passes"]) + f" ({_f(r.get('timing_audio_s'), 0, ' s')})"
                  if r.get("rtf_passes") else "n/a")
        add(f"| {m} | {_f(r.get('audio_s'), 0, ' s')} | {_f(r.get('compute_s'), 1, ' s')} | {_f(r.get('rtf'), 3)} | "
            f"{passes} | "
            f"{_f(r.get('latency_ms_mean'), 0)} / {_f(r.get('latency_ms_p50'), 0)} / "
            f"{_f(r.get('latency_ms_p95'), 0)} / {_f(r.get('latency_ms_max'), 0)} | {_f(r.get('load_s'), 1, ' s')} | "
            f"{_f(r.get('peak_memory_mb'), 0, ' MB')} | {_f(r.get('model_memory_mb'), 0, ' MB')} | "
            f"{r.get('backend')} |")
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
    return L


def error_analysis_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Where the errors fall: word classes, lengths, frequency, OOV, hardest utterances."""
    L: list[str] = []
    add = L.append
    models = _models(res)
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
        add("| model | WER vs duration (Spearman rho, p) | top substitutions (ref -> hyp x count) | top deletions | "
            "top insertions |")
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
                    f"{_short(best)}: {h['hyps'][best] or '(empty)'} / "
                    f"{_short(worst)}: {h['hyps'][worst] or '(empty)'} |")
            add("")
    return L


def advice_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Budget ladders, the recommended model, per-dialect choices and routing."""
    L: list[str] = []
    add = L.append
    sm = res.get("summary", {}).get("models", {})
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
            scope = adv.get("scope", "all")
            rr = (((res.get("summary") or {}).get("per_source") or {}).get(adv["recommended"]) or {}).get("real") \
                if scope == "real" else r
            where = "on real speech" if scope == "real" else "over every utterance"
            add(f"- **One model for everything:** {adv['recommended']} ({_pct(rr.get('wer'))} WER {where}, CI "
                f"{_ci(rr.get('wer_ci95'))}; RTF {_rtf_spread(r)}, p95 {_f(r.get('latency_ms_p95'), 0, ' ms')}).")
            if adv.get("recommended_reason"):
                margin = adv.get("margin", (adv.get("recommendation") or {}).get("margin"))
                add(f"  Why: {adv['recommended_reason']}. (Rule, {where}: the lowest-WER eligible model, "
                    f"{adv.get('lowest_wer_model')}, unless a cheaper one is non-inferior: the upper end of the 95% "
                    f"CI of its WER difference at most {_f(100 * (margin or 0), 1)} point(s), `--margin`; then the "
                    "cheapest such model by median RTF, then p95 latency, then peak memory. \"Not significantly "
                    "worse\" is not used: on a small set every model passes it.)")
        if adv.get("excluded_by_budget"):
            add("- Outside the budget: "
                + "; ".join(f"{m} ({why})" for m, why in adv["excluded_by_budget"].items()) + ".")
        if adv.get("note"):
            add(f"- Note: {adv['note']}.")
        add(f"- **Pareto front** (WER, RTF, memory: no other model is better on all three): "
            f"{', '.join(adv.get('pareto_front') or []) or 'n/a'}; on WER and RTF alone: "
            f"{', '.join(adv.get('pareto_front_wer_rtf') or []) or 'n/a'}.")
        add("")
        per = adv.get("per_dialect") or {}
        if per:
            add("**Model per dialect** within the budget: the lowest WER on that dialect, unless a cheaper model "
                "is non-inferior there (95% CI of its WER difference, paired bootstrap over the dialect's "
                "sentences, ends within the margin):")
            add("")
            add("| dialect | lowest WER | WER | runner-up | its WER | runner-up - best, 95% CI (points) | choice "
                "| why |")
            add("|---|---|---|---|---|---|---|---|")
            for d, row in per.items():
                ci = row.get("runner_up_diff_ci95")
                ci_txt = f"[{_pp(ci[0])}, {_pp(ci[1])}]" if ci and ci[0] is not None else ""
                add(f"| {d} | {row['best']} | {_pct(row['wer'])} | {row.get('runner_up', '')} | "
                    f"{_pct(row.get('runner_up_wer')) if row.get('runner_up') else ''} | {ci_txt} | "
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
                   f"; models used: {', '.join(rt['models_used'])}. This is in-sample: the routes were chosen on the "
                   "same utterances."))
            add("")
        ho = adv.get("routing_heldout")
        if ho:
            add(f"**Routing on held-out sentences** ({ho['rule']}): {_pct(ho['wer'])} WER vs "
                f"{_pct(ho['single_model_wer'])} for {ho['single_model']} alone on the same utterances: a gain of "
                f"{_pp(ho['gain'])} points. "
                + " ".join(f"Routes chosen on half {f['chosen_on']}: {', '.join(f['models_used'])}."
                           for f in ho["folds"]))
            add("")
        wd = adv.get("worst_dialect")
        if wd and not wd.get("dialect"):
            add(f"**Worst dialect for {wd['model']}: none separated** (tied: {', '.join(wd.get('tied') or [])}).")
            add("")
            for n in wd["notes"]:
                add(f"- {n}")
            add("")
        elif wd:
            add(f"**Worst dialect for {wd['model']}: {wd['dialect']}** (separated from the next worst: Wilcoxon over "
                f"sentences, Holm p = {_p(wd.get('p_holm_next'))}).")
            add("")
            for n in wd["notes"]:
                add(f"- {n}")
            add("")
    return L

