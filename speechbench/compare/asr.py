"""Part 2 (ASR evaluation) runs compared: WER per model and per dialect, paired on utterances.

For every model both runs scored, the per-utterance error counts of the utterances both runs scored are
paired (the references are checked to be the same) and tested with the Wilcoxon signed-rank test on
d_i = errors_NEW,i - errors_BASE,i (zero differences dropped; ``speechbench.asr_eval.stats.wilcoxon``,
which is scipy's test with an exact null for small untied samples). Corpus WER = sum(errors) / sum(ref
words) over the same utterances. A regression needs both: p < alpha with errors tending up, and
WER_NEW > WER_BASE + tolerance (absolute). The same per dialect, on that dialect's utterances.

Different utterance sets (another corpus size, a model that failed on some clips) are refused unless
the caller asks for the intersection, and then every figure says it was computed on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from speechbench.asr_eval import stats
from speechbench.compare.figures import IMPROVED, NOT_COMPARABLE, OK, REGRESSION, Comparison, Figure, Options
from speechbench.compare.loaders import ASR, UnusableInput

Records = dict[str, dict[str, dict[str, Any]]]  # model -> utterance id -> record


def _count(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def records_by_model(data: dict[str, Any], where: str) -> Records:
    """The per-utterance records, checked: every record has model, id, errors and ref_words."""
    out: Records = {}
    for i, r in enumerate(data["utterances"]):
        if not isinstance(r, dict):
            raise UnusableInput(f"{where}: utterances[{i}] is not an object")
        for f in ("model", "id", "errors", "ref_words"):
            if f not in r:
                raise UnusableInput(f"{where}: utterances[{i}] has no field '{f}'")
        for f in ("errors", "ref_words"):
            if not _count(r[f]):
                raise UnusableInput(f"{where}: utterances[{i}].{f} = {r[f]!r} is not a non-negative number")
        per_model = out.setdefault(str(r["model"]), {})
        uid = str(r["id"])
        if uid in per_model:
            raise UnusableInput(f"{where}: utterance {uid!r} appears twice for model {r['model']!r}")
        per_model[uid] = r
    return out


def paired_test(base_errors: Sequence[float], new_errors: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank on new - base per-utterance errors (two-sided); the result dict of
    ``stats.wilcoxon``: p_value, statistic, n (non-zero pairs), w_plus / w_minus, method."""
    return stats.wilcoxon(new_errors, base_errors)


def _wer(recs: dict[str, dict[str, Any]], ids: Sequence[str]) -> float | None:
    ref = sum(recs[i]["ref_words"] for i in ids)
    return sum(recs[i]["errors"] for i in ids) / ref if ref else None


def judge_wer(name: str, base: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], ids: Sequence[str],
              opts: Options) -> Figure:
    """One WER figure on the paired utterances ``ids``."""
    wb, wn = _wer(base, ids), _wer(new, ids)
    fig = Figure(name, wb, wn, NOT_COMPARABLE, kind="wer")
    if wb is None or wn is None:
        fig.note = "no utterances both runs scored" if not ids else "no reference words"
        return fig
    test = paired_test([base[i]["errors"] for i in ids], [new[i]["errors"] for i in ids])
    p = test["p_value"]
    fig.p_value = p
    significant = p is not None and p < opts.alpha
    up = test.get("w_plus", 0.0) > test.get("w_minus", 0.0)
    delta = wn - wb
    p_txt = "n/a" if p is None else f"{p:.2g}"
    fig.note = f"Wilcoxon p = {p_txt}, {test['n']} of {len(ids)} utterances differ"
    if delta > opts.wer_tolerance and significant and up:
        fig.verdict = REGRESSION
    elif delta < -opts.wer_tolerance and significant and not up:
        fig.verdict = IMPROVED
    else:
        fig.verdict = OK
        if abs(delta) > opts.wer_tolerance and not significant:
            fig.add_note(f"beyond the tolerance but not significant at alpha = {opts.alpha:g}")
    return fig


def check_references(base: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], ids: Sequence[str],
                     model: str) -> None:
    """Pairing needs the same reference for each utterance in both runs."""
    bad = [i for i in ids if base[i]["ref_words"] != new[i]["ref_words"]
           or ("ref" in base[i] and "ref" in new[i] and base[i]["ref"] != new[i]["ref"])]
    if bad:
        raise UnusableInput(f"model {model}: {len(bad)} utterance(s) have different references in BASE and "
                            f"NEW (e.g. {bad[0]!r}): the runs scored different texts or normalized them "
                            "differently, so their errors cannot be paired")


def paired_ids(base_by: Records, new_by: Records, models: Sequence[str], intersection: bool,
               context: list[str]) -> dict[str, list[str]]:
    """Per model, the utterance ids to compare (BASE's order). Differing sets: UnusableInput, or the
    intersection (said in ``context``) when allowed."""
    out, differ = {}, []
    for m in models:
        b, n = base_by[m], new_by[m]
        only_b, only_n = [i for i in b if i not in n], [i for i in n if i not in b]
        if only_b or only_n:
            differ.append(f"{m}: {len(only_b)} only in BASE{f' (e.g. {only_b[0]!r})' if only_b else ''}, "
                          f"{len(only_n)} only in NEW{f' (e.g. {only_n[0]!r})' if only_n else ''}")
        out[m] = [i for i in b if i in n]
    if differ and not intersection:
        raise UnusableInput("the runs scored different utterances (pass --intersection to compare on the "
                            "utterances both scored):\n  " + "\n  ".join(differ))
    if differ:
        context.append("Utterance sets differ; compared on the intersection: " + "; ".join(
            f"{m} {len(out[m])} utterances" for m in models if any(d.startswith(f"{m}:") for d in differ)) + ".")
    return out


def _status(data: dict[str, Any], model: str) -> str | None:
    for src in (data["summary"]["models"].get(model), (data.get("models") or {}).get(model)):
        if isinstance(src, dict) and src.get("status"):
            return str(src["status"])
    return None


def _dialects(recs: dict[str, dict[str, Any]], ids: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in ids:
        if recs[i].get("dialect") is not None:
            out.setdefault(str(recs[i]["dialect"]), []).append(i)
    return out


def _summary_note(fig: Figure, data: dict[str, Any], model: str, recs: dict[str, dict[str, Any]], role: str,
                  complete: bool) -> None:
    """Flag a summary WER that disagrees with the file's own records (the gate trusts the records)."""
    s = data["summary"]["models"].get(model)
    w = s.get("wer") if isinstance(s, dict) else None
    mine = _wer(recs, list(recs))
    if complete and isinstance(w, int | float) and mine is not None and abs(w - mine) > 1e-9:
        fig.add_note(f"{role} summary WER {100 * w:.2f}% disagrees with its records ({100 * mine:.2f}%)")


def compare_asr(base: dict[str, Any], new: dict[str, Any], opts: Options) -> Comparison:
    comp = Comparison(ASR)
    base_by, new_by = records_by_model(base, "BASE"), records_by_model(new, "NEW")
    names = list(dict.fromkeys([*base["summary"]["models"], *base_by, *new["summary"]["models"], *new_by]))
    both = []
    for m in names:
        sb, sn = _status(base, m), _status(new, m)
        missing = [role for role, by, st in (("BASE", base_by, sb), ("NEW", new_by, sn))
                   if not by.get(m) or st not in (None, "ok", "partial")]
        if missing:
            why = ", ".join(f"{r}: {'status ' + repr(st) if st not in (None, 'ok', 'partial') else 'no records'}"
                            for r, st in (("BASE", sb), ("NEW", sn)) if r in missing)
            comp.figures.append(Figure(f"{m} WER", None, None, NOT_COMPARABLE, kind="wer", note=why))
            continue
        both.append(m)
    ids = paired_ids(base_by, new_by, both, opts.intersection, comp.context)
    for m in both:
        check_references(base_by[m], new_by[m], ids[m], m)
        fig = judge_wer(f"{m} WER", base_by[m], new_by[m], ids[m], opts)
        for role, data, by in (("BASE", base, base_by), ("NEW", new, new_by)):
            _summary_note(fig, data, m, by[m], role, complete=len(ids[m]) == len(by[m]))
        comp.figures.append(fig)
        dialects = _dialects(base_by[m], ids[m])
        for dialect, dids in dialects.items() if len(dialects) > 1 else ():
            comp.figures.append(judge_wer(f"{m} WER [{dialect}]", base_by[m], new_by[m], dids, opts))
    comp.context.append(
        f"WER figures: Wilcoxon signed-rank on per-utterance errors (NEW - BASE), alpha = {opts.alpha:g} per "
        f"figure (no multiplicity correction); regression = significant AND NEW WER > BASE WER + "
        f"{100 * opts.wer_tolerance:.2g} points.")
    return comp
