"""The Part 2 report's sections on real human speech and on what each test family can detect."""

from __future__ import annotations

from typing import Any

from speechbench.asr_eval.report_sections import TEST_NAMES, _ci, _models, _p, _pp, _short, figure_adder
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct


def _source_label(src: str) -> str:
    return {"real": "real speech", "synthetic": "synthetic accents"}.get(src, src)


def real_speech_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """People first: every model on the real-speech set (and the synthetic set beside it), per speaker and
    per speaking style, with CIs and the words each figure rests on."""
    L: list[str] = []
    add = L.append
    s = res.get("summary", {})
    ps = s.get("per_source") or {}
    sources = (res.get("dataset") or {}).get("sources") or {}
    models = [m for m in _models(res) if (ps.get(m) or {}).get("real")]
    if not models:
        return L
    fig = figure_adder(L, figs, rel)
    real = sources.get("real") or {}
    add("## Real human speech")
    add("")
    add(f"{real.get('utterances')} recordings of people ({_f((real.get('audio_s') or 0) / 60, 1)} min, "
        f"{real.get('words')} reference words, {real.get('speakers')} speakers; "
        f"`{((res.get('dataset') or {}).get('real_speech') or {}).get('manifest', 'n/a')}`), scored by every "
        "model on the same clips, beside the synthetic accents (one WER pooled over both would describe "
        "neither). CI: 95% bootstrap; the real set has few speakers, most clips from one, so its headline "
        "interval resamples utterances, and the speaker-block interval (which carries the speaker variance "
        "but rests on few blocks) is beside it.")
    add("")
    others = [src for src in sources if src != "real"]
    add("| model | WER, real speech | 95% CI (utterances) | speaker blocks | CER | words | "
        + " | ".join(f"WER, {_source_label(src)} [95% CI]" for src in others) + " |")
    add("|---|---|---|---|---|---|" + "---|" * len(others))
    for m in models:
        r = ps[m]["real"]
        cells = [f"{_pct(ps[m][src].get('wer'))} {_ci(ps[m][src].get('wer_ci95'))}" if src in ps[m] else "n/a"
                 for src in others]
        add(f"| {m} | **{_pct(r.get('wer'))}** | {_ci(r.get('wer_ci95'))} | {_ci(r.get('wer_ci95_speaker'))} | "
            f"{_pct(r.get('cer'))} | {r.get('ref_words')} | " + " | ".join(cells) + " |")
    add("")
    own = [m for m in models if ((res.get("models") or {}).get(m) or {}).get("own")]
    if own:
        w = [ps[m]["real"]["wer"] for m in own if ps[m]["real"].get("wer") is not None]
        if w:
            add(f"The project's own CTC models ({', '.join(own)}) are trained on synthetic speech only: "
                f"{_pct(min(w), 0)}-{_pct(max(w), 0)} WER on these recordings. They are the engine's fast, "
                "trainable family, not recognizers of people.")
            add("")
    fig("real_speech", "WER on real speech vs synthetic accents")
    rs = s.get("real_speech") or {}
    for key, title in (("per_speaker", "speaker"), ("per_style", "speaking style")):
        groups = list(dict.fromkeys(g for m in models for g in ((rs.get(m) or {}).get(key) or {})))
        if len(groups) < 2:
            continue
        first = (rs.get(models[0]) or {}).get(key) or {}
        add(f"**By {title}** (WER; n = clips, words; 95% CI over that group's clips in brackets for the "
            "pretrained models):")
        add("")
        add(f"| {title} | clips | words | " + " | ".join(_short(m) for m in models) + " |")
        add("|---|---|---|" + "---|" * len(models))
        for g in groups:
            cells = []
            for m in models:
                c = ((rs.get(m) or {}).get(key) or {}).get(g) or {}
                own_m = ((res.get("models") or {}).get(m) or {}).get("own")
                ci = "" if own_m or _ci(c.get("wer_ci95")) == "n/a" else f" {_ci(c.get('wer_ci95'), 0)}"
                cells.append(f"{_pct(c.get('wer'))}{ci}" if c else "")
            add(f"| {g} | {(first.get(g) or {}).get('n', '')} | {(first.get(g) or {}).get('ref_words', '')} | "
                + " | ".join(cells) + " |")
        add("")
    return L


def families_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """What each family of tests could detect at all with this design (the smallest p after Holm)."""
    L: list[str] = []
    add = L.append
    sig = res.get("significance") or {}
    rows: list[tuple[str, dict[str, Any]]] = [("all utterances", f) for f in sig.get("families") or []]
    for src, sub in (sig.get("by_source") or {}).items():
        rows += [(_source_label(src), f) for f in sub.get("families") or []]
    dl = sig.get("dialects") or {}
    first = next((m for m in dl if dl[m].get("families")), None)
    if first:  # the same design for every model
        rows += [("dialects (per model)", f) for f in dl[first]["families"]]
    if not rows:
        return L
    add("### What each test family can detect")
    add("")
    add(f"A family of m tests under Holm's correction can reject only if m x (the smallest p one test could "
        f"give) < {sig.get('alpha', 0.05)}; for the rank and counting tests that smallest p is set by the number "
        "of units (an exact signed-rank test on n pairs cannot go below 2 / 2^n). A family that cannot reach "
        "significance finds nothing whatever the models do, and its \"not significant\" says nothing.")
    add("")
    add("| scope | family | test | unit | units | hypotheses (m) | smallest p | smallest Holm p | can reject |")
    add("|---|---|---|---|---|---|---|---|---|")
    for scope, f in rows:
        floor = "none (parametric)" if f["min_p"] == 0 else f"{f['min_p']:.2g}"
        holm = "none" if f["min_p"] == 0 else f"{f['min_p_holm']:.2g}"
        add(f"| {scope} | {f['family']} | {TEST_NAMES.get(f['test'], f['test'])} | {f['unit']} | {f['units']} | "
            f"{f['hypotheses']} | {floor} | {holm} | {'yes' if f['can_reject'] else '**no**'} |")
    add("")
    cannot = [(scope, f) for scope, f in rows if not f["can_reject"]]
    if cannot:
        add("Cannot reach significance in this run: " + "; ".join(
            f"{f['family']} {TEST_NAMES.get(f['test'], f['test'])} ({scope}, {f['units']} {f['unit']})"
            for scope, f in cannot) + ". Their columns below are shown for completeness, not as findings.")
        add("")
    return L


def real_pairs_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """The model pairs on real speech alone: the comparisons the recommendation rests on."""
    L: list[str] = []
    add = L.append
    sig = res.get("significance") or {}
    primary = sig.get("primary_test", "mapsswe")
    real = (sig.get("by_source") or {}).get("real") or {}
    if real.get("pairs"):
        add(f"**On real speech only** ({real['pairs'][0]['n']} recordings; CI: paired bootstrap, "
            f"{real['pairs'][0].get('bootstrap_method')}; {TEST_NAMES.get(primary, primary)} Holm over these "
            "pairs):")
        add("")
        add("| A | B | WER A | WER B | A - B (points) | 95% CI | P(A better) | "
            f"{TEST_NAMES.get(primary, primary)} p (Holm) |")
        add("|---|---|---|---|---|---|---|---|")
        for p in real["pairs"]:
            t = p["tests"][primary]
            txt = _p(t.get("p_holm"))
            add(f"| {p['a']} | {p['b']} | {_pct(p['wer_a'])} | {_pct(p['wer_b'])} | {_pp(p['wer_diff'])} | "
                f"{_ci(p['wer_diff_ci95'])} | {_f(p.get('p_a_better'), 3)} | "
                f"{f'**{txt}**' if t.get('significant') else txt} |")
        add("")
    return L


def plot_real_vs_synthetic(res: dict[str, Any], models: list[str], out_dir: Any, prefix: str) -> dict[str, str]:
    """Grouped bars: each model's WER on real speech and on the synthetic accents, each with its own CI."""
    import matplotlib.pyplot as plt
    import numpy as np

    from speechbench.common.figures import save_figure

    s = res.get("summary", {})
    made: dict[str, str] = {}
    ps = s.get("per_source") or {}
    srcs = [src for src in ((res.get("dataset") or {}).get("sources") or {}) if any(src in (ps.get(m) or {})
                                                                                for m in models)]
    if "real" in srcs and len(srcs) > 1:
        fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(models) + 2), 4.2))
        w = 0.8 / len(srcs)
        for i, src in enumerate(srcs):
            vals, lo, hi = [], [], []
            for m in models:
                c = (ps.get(m) or {}).get(src) or {}
                v, ci = c.get("wer"), c.get("wer_ci95") or [None, None]
                vals.append(100 * v if v is not None else np.nan)
                lo.append(100 * (v - ci[0]) if v is not None and ci[0] is not None else 0)
                hi.append(100 * (ci[1] - v) if v is not None and ci[1] is not None else 0)
            ax.bar([j + i * w for j in range(len(models))], vals, w, yerr=[lo, hi], capsize=2,
                   label={"real": "real speech (people)", "synthetic": "synthetic accents"}.get(src, src))
        ax.set_xticks([j + w * (len(srcs) - 1) / 2 for j in range(len(models))], [_short(m) for m in models],
                      rotation=30, ha="right")
        ax.set_ylabel("WER, % (bars: 95% bootstrap CI)")
        ax.set_title("WER on real speech and on synthetic accents")
        ax.legend(fontsize=8)
        made["real_speech"] = save_figure(fig, out_dir, f"{prefix}_real_vs_synthetic.png")
    return made
