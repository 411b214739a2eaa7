"""From per-utterance records to the figures a report quotes: aggregates with confidence intervals,
paired significance between models, dialect effects, the in-domain vs held-out gap (error analysis:
:mod:`speechbench.asr_eval.errors`).

Every function reads the scored records (dicts with ``model``, ``id``, ``dialect``, ``speaker``,
``sentence``, ``ref``, ``hyp``, ``ref_words``, ``errors``, ``sub``/``del``/``ins``, ``char_errors``,
``ref_chars``, ``duration_s``, ``latency_s``) and returns plain dicts for the results JSON.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from speechbench.asr_eval import stats
from speechbench.asr_eval.scoring import align

MIN_SPEAKER_BLOCKS = 10  # fewer speakers than this: a speaker-block bootstrap cannot estimate the spread
TESTS = ("mapsswe", "wilcoxon", "sign", "paired_t", "mcnemar")
PRIMARY_TEST = "mapsswe"


class PairingError(ValueError):
    """Two systems were not scored on the same utterances: a paired test would be meaningless."""


# --- aggregates ------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _speakers_repeat(recs: list[dict[str, Any]]) -> bool:
    counts = Counter(r["speaker"] for r in recs)
    return any(c > 1 for c in counts.values())


def _sentence(r: dict[str, Any]) -> Any:
    """The sentence a record reads; without one (hand-made records) it counts as a sentence of its own."""
    return r.get("sentence", r.get("id"))


def crossed(recs: list[dict[str, Any]]) -> bool:
    """Sentences x speakers crossed: some sentence read by >= 2 speakers and some speaker reading >= 2
    sentences (the grid may be sparse). Then neither factor is nested in the other and both vary."""
    by_sentence: dict[Any, set] = defaultdict(set)
    by_speaker: dict[Any, set] = defaultdict(set)
    for r in recs:
        by_sentence[_sentence(r)].add(r["speaker"])
        by_speaker[r["speaker"]].add(_sentence(r))
    return any(len(v) > 1 for v in by_sentence.values()) and any(len(v) > 1 for v in by_speaker.values())


def ci_for(recs: list[dict[str, Any]], n_boot: int, seed: int, key: str = "errors",
           den: str = "ref_words", within_dialect: bool = False) -> dict[str, Any]:
    """Bootstrap CIs of sum(key)/sum(den) by every resampling unit the records allow; ``chosen`` is the one
    quoted as the headline:

    * two-way (sentences and speakers resampled independently) when the design is crossed: each
      sentence's errors are shared by every speaker reading it and each speaker's by every sentence, so
      90 utterances are not 90 independent units, and resampling one factor treats the other as fixed;
    * otherwise, for one dialect's row (``within_dialect``): sentence blocks. In the embedded corpus a
      dialect has 3 speakers and each sentence is read by one of them, so speakers are too few to
      resample and cannot be told apart from sentences; the sentence block keeps a sentence's
      conditions together. This omits the speaker variance, so it is a lower bound on the true spread;
    * otherwise speaker blocks when speakers repeat and there are at least MIN_SPEAKER_BLOCKS of them, else
      utterances (the behaviour before the two-way bootstrap).
    """
    e = [r[key] for r in recs]
    n = [r[den] for r in recs]
    sentences = [_sentence(r) for r in recs]
    speakers = [r["speaker"] for r in recs]
    out: dict[str, Any] = {"utterance": stats.bootstrap_ci(e, n, n_boot, seed), "speaker": None,
                           "sentence": None, "two_way": None, "chosen": "utterance"}
    n_spk, n_sent = len(set(speakers)), len(set(sentences))
    if _speakers_repeat(recs) and n_spk >= 2:
        out["speaker"] = stats.bootstrap_ci(e, n, n_boot, seed, groups=speakers)
        if n_spk >= MIN_SPEAKER_BLOCKS:
            out["chosen"] = "speaker"
    if n_sent >= 2:
        out["sentence"] = stats.bootstrap_ci(e, n, n_boot, seed, groups=sentences, method="sentence-block")
    if n_sent >= 2 and n_spk >= 2:
        out["two_way"] = stats.bootstrap_ci_two_way(e, n, sentences, speakers, n_boot, seed)
    if out["two_way"] and crossed(recs):
        out["chosen"] = "two_way"
    elif within_dialect and out["sentence"]:
        out["chosen"] = "sentence"
    return out


def aggregate(recs: list[dict[str, Any]], n_boot: int, seed: int, with_ci: bool = True,
              within_dialect: bool = False) -> dict[str, Any]:
    """Corpus WER (total errors / total reference words) with S/D/I, CER, sentence error rate, CIs
    (``within_dialect``: one dialect's records; see ``ci_for`` for the headline interval's unit)."""
    ref_words = sum(r["ref_words"] for r in recs)
    errors = sum(r["errors"] for r in recs)
    sub, dele, ins = (sum(r[k] for r in recs) for k in ("sub", "del", "ins"))
    ref_chars = sum(r["ref_chars"] for r in recs)
    char_err = sum(r["char_errors"] for r in recs)
    out: dict[str, Any] = {
        "n": len(recs), "ref_words": ref_words, "errors": errors, "sub": sub, "del": dele, "ins": ins,
        "wer": errors / ref_words if ref_words else None,
        "sub_rate": sub / ref_words if ref_words else None, "del_rate": dele / ref_words if ref_words else None,
        "ins_rate": ins / ref_words if ref_words else None,
        "cer": char_err / ref_chars if ref_chars else None,
        "ser": sum(1 for r in recs if r["errors"]) / len(recs) if recs else None,
    }
    if with_ci and recs:
        ci = ci_for(recs, n_boot, seed, within_dialect=within_dialect)
        chosen = ci[ci["chosen"]]
        out["wer_ci95"] = [chosen["lo"], chosen["hi"]]
        out["wer_ci95_method"] = chosen["method"]
        out["wer_ci95_utterance"] = [ci["utterance"]["lo"], ci["utterance"]["hi"]]
        if ci["speaker"]:
            out["wer_ci95_speaker"] = [ci["speaker"]["lo"], ci["speaker"]["hi"]]
            out["speaker_blocks"] = ci["speaker"]["n_units"]
        if ci["sentence"]:
            out["wer_ci95_sentence"] = [ci["sentence"]["lo"], ci["sentence"]["hi"]]
            out["sentence_blocks"] = ci["sentence"]["n_units"]
        if ci["two_way"]:
            tw = ci["two_way"]
            out["wer_ci95_two_way"] = [tw["lo"], tw["hi"]]
            out["two_way_units"] = {k: tw[k] for k in ("n_sentences", "n_speakers", "n_cells")}
        cci = stats.bootstrap_ci([r["char_errors"] for r in recs], [r["ref_chars"] for r in recs], n_boot, seed)
        out["cer_ci95"] = [cci["lo"], cci["hi"]]
    return out


def speed(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """RTF = total compute / total audio (RTFx its inverse); latency per utterance at batch size 1."""
    lat = [r["latency_s"] for r in recs]
    audio = sum(r["duration_s"] for r in recs)
    compute = sum(lat)
    return {
        "audio_s": audio, "compute_s": compute,
        "rtf": compute / audio if audio else None, "rtfx": audio / compute if compute else None,
        "latency_ms_mean": 1000 * float(np.mean(lat)) if lat else None,
        "latency_ms_p50": 1000 * _pct(lat, 50) if lat else None,
        "latency_ms_p95": 1000 * _pct(lat, 95) if lat else None,
        "latency_ms_max": 1000 * max(lat) if lat else None,
    }


def timing_summary(timing: dict[str, Any] | None) -> dict[str, Any]:
    """The repeated timing passes of one model (worker ``timing``): RTF per pass (its compute / its audio),
    their median and [min, max]. Empty when no pass ran, so readers fall back to the accuracy pass's rtf."""
    passes = [p["rtf"] for p in (timing or {}).get("passes") or [] if isinstance(p.get("rtf"), (int, float))]
    if not passes:
        return {}
    return {"rtf_passes": passes, "rtf_median": float(np.median(passes)),
            "rtf_spread": [float(min(passes)), float(max(passes))], "timing_passes": len(passes),
            "timing_utterances": len(timing["utterances"]), "timing_audio_s": timing.get("audio_s")}


def speed_rtf(row: dict[str, Any]) -> float | None:
    """The RTF to rank models by: the median of the timing passes when they ran (one pass over every
    utterance is a single draw of the machine's noise), else the accuracy pass's RTF."""
    med = row.get("rtf_median")
    return med if isinstance(med, (int, float)) else row.get("rtf")


def group_by(recs: Iterable[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        out[r.get(key, "unlabeled" if key == "source" else None)].append(r)
    return dict(out)


def dialect_records(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the sets that compare dialects: a set (``source``) speaking >= 2 dialects, such as the
    corpus's accents. A set of one dialect (the real-speech set: people, not accents) has nothing to pair
    across dialects and would count as a held-out accent in the domain gap. No such set: every record."""
    keep = {src for src, rs in group_by(recs, "source").items() if len({r["dialect"] for r in rs}) >= 2}
    return [r for r in recs if r.get("source", "unlabeled") in keep] if keep else list(recs)


# --- paired comparisons between models -------------------------------------------------------------------


def paired_arrays(a: list[dict[str, Any]], b: list[dict[str, Any]], name_a: str = "A",
                  name_b: str = "B") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The two record lists in the same utterance order; PairingError if the utterance sets differ."""
    ia = {r["id"]: r for r in a}
    ib = {r["id"]: r for r in b}
    if ia.keys() != ib.keys():
        only_a, only_b = sorted(ia.keys() - ib.keys()), sorted(ib.keys() - ia.keys())
        raise PairingError(
            f"{name_a} and {name_b} were not scored on the same utterances ({len(only_a)} only in {name_a}, "
            f"e.g. {only_a[:3]}; {len(only_b)} only in {name_b}, e.g. {only_b[:3]}): refusing a paired test")
    bad = [k for k in ia if ia[k]["ref"] != ib[k]["ref"]]
    if bad:
        raise PairingError(f"{name_a} and {name_b} have different references for {len(bad)} utterance(s), "
                           f"e.g. {bad[:3]}: refusing a paired test")
    ids = sorted(ia)
    return [ia[k] for k in ids], [ib[k] for k in ids]


def sentence_totals(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-sentence error totals (summed over voices and conditions) of two paired record lists, over the
    sentences both transcribed (paired_arrays has already made the utterance sets equal)."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for x, y in zip(ra, rb, strict=True):
        acc[_sentence(x)][0] += x["errors"]
        acc[_sentence(x)][1] += y["errors"]
    keys = sorted(acc)
    return keys, np.array([acc[k][0] for k in keys]), np.array([acc[k][1] for k in keys])


def sentence_level_tests(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> dict[str, Any]:
    """A vs B with the sentence as the unit: the utterance tests treat 90 utterances as independent, but
    the 9 voices reading one sentence share its difficulty, so their differences are correlated. Summing
    each sentence's errors over the voices gives one independent pair per sentence; Wilcoxon signed-rank
    and the paired t run on those totals (few units: low power, but honest about the design)."""
    keys, ta, tb = sentence_totals(ra, rb)
    out: dict[str, Any] = {"n_sentences": len(keys), "sentences": keys, "errors_a": ta.tolist(),
                           "errors_b": tb.tolist(), "wilcoxon": stats.wilcoxon(ta, tb),
                           "paired_t": stats.paired_t(ta, tb)}
    if len(keys) < 6:  # the exact two-sided signed-rank p-value cannot go below 2 / 2^n
        out["note"] = f"{len(keys)} sentences: Wilcoxon cannot reach p < 0.05 with fewer than 6"
    return out


def compare_pair(a: list[dict[str, Any]], b: list[dict[str, Any]], n_boot: int, seed: int,
                 name_a: str = "A", name_b: str = "B", min_good: int = 2) -> dict[str, Any]:
    """Every paired test of A vs B on the same utterances, with effect sizes."""
    ra, rb = paired_arrays(a, b, name_a, name_b)
    ea = np.array([r["errors"] for r in ra], float)
    eb = np.array([r["errors"] for r in rb], float)
    nw = np.array([r["ref_words"] for r in ra], float)
    segments: list[tuple[int, int]] = []
    for x, y in zip(ra, rb, strict=True):
        segments += stats.mapsswe_segments(align(x["ref"].split(), x["hyp"].split()),
                                           align(y["ref"].split(), y["hyp"].split()), min_good)
    tests = {
        "mapsswe": stats.mapsswe(segments),
        "wilcoxon": stats.wilcoxon(ea, eb),
        "sign": stats.sign_test(ea, eb),
        "paired_t": stats.paired_t(ea, eb),
        "mcnemar": stats.mcnemar(ea == 0, eb == 0),
    }
    # the difference's interval resamples the same units as the headline interval (ci_for's choice)
    sentences, speakers = [_sentence(r) for r in ra], [r["speaker"] for r in ra]
    two_way = (sentences, speakers) if crossed(ra) and len(set(sentences)) >= 2 and len(set(speakers)) >= 2 \
        else None
    groups = speakers if two_way is None and _speakers_repeat(ra) and len(set(speakers)) >= MIN_SPEAKER_BLOCKS \
        else None
    boot = stats.paired_bootstrap(ea, eb, nw, n_boot, seed, groups, two_way=two_way)
    wa, wb = ea.sum() / nw.sum(), eb.sum() / nw.sum()
    return {
        "a": name_a, "b": name_b, "n": len(ra), "wer_a": float(wa), "wer_b": float(wb),
        "wer_diff": float(wa - wb), "relative_diff": float((wa - wb) / wa) if wa else None,
        "mean_error_diff": float((ea - eb).mean()), "cohen_dz": tests["paired_t"].get("cohen_dz"),
        "rank_biserial": tests["wilcoxon"].get("rank_biserial"),
        "mcnemar_odds_ratio": tests["mcnemar"].get("odds_ratio"),
        "p_a_better": boot["p_a_better"], "wer_diff_ci95": boot["diff_ci95"], "bootstrap_method": boot.get("method"),
        "tests": tests, "sentence_level": sentence_level_tests(ra, rb),
    }


def _holm_sentence_level(pairs: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Holm over the model-pair family, separately for the sentence-level Wilcoxon and paired t. Returns,
    per pair, the compact ``sentence_level`` entry the flat rows of significance["models"] carry."""
    for test in ("wilcoxon", "paired_t"):
        results = [p["sentence_level"][test] for p in pairs]
        for res, ph in zip(results, stats.holm([r["p_value"] for r in results]), strict=True):
            res["p_holm"] = ph
            res["significant"] = bool(ph is not None and ph < alpha)
    out = []
    for p in pairs:
        sl = p["sentence_level"]
        w, t = sl["wilcoxon"], sl["paired_t"]
        out.append({
            "test": "wilcoxon", "p_value": w["p_value"], "p_holm": w["p_holm"], "n_sentences": sl["n_sentences"],
            "significant": w["significant"],
            "paired_t": {"p_value": t["p_value"], "p_holm": t["p_holm"], "significant": t["significant"]},
        })
    return out


def significance_between_models(by_model: dict[str, list[dict[str, Any]]], n_boot: int, seed: int,
                                alpha: float = 0.05) -> dict[str, Any]:
    """All pairs, all tests; Holm over the pairs separately for each test (each test is one family of
    k(k-1)/2 hypotheses). Pairs whose utterance sets differ are refused and listed."""
    names = list(by_model)
    pairs: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for a, b in itertools.combinations(names, 2):
        try:
            pairs.append(compare_pair(by_model[a], by_model[b], n_boot, seed, a, b))
        except PairingError as e:
            refused.append({"a": a, "b": b, "reason": str(e)})
    sentence_level = _holm_sentence_level(pairs, alpha)
    flat: list[dict[str, Any]] = []
    for test in TESTS:
        ps = [p["tests"][test]["p_value"] for p in pairs]
        adj = stats.holm(ps)
        for p, pv, ph, sl in zip(pairs, ps, adj, sentence_level, strict=True):
            p["tests"][test]["p_holm"] = ph
            p["tests"][test]["significant"] = bool(ph is not None and ph < alpha)
            flat.append({"a": p["a"], "b": p["b"], "test": test, "p_value": pv, "p_holm": ph,
                         "significant": bool(ph is not None and ph < alpha),
                         "statistic": p["tests"][test]["statistic"], "n": p["tests"][test]["n"],
                         "wer_a": p["wer_a"], "wer_b": p["wer_b"],
                         "sentence_level": dict(sl)})
    return {"alpha": alpha, "primary_test": PRIMARY_TEST, "correction": "holm (per test, over model pairs)",
            "sentence_level_test": "wilcoxon on per-sentence error totals (summed over voices), holm over model pairs",
            "models": flat, "pairs": pairs, "refused": refused, "families": model_pair_families(pairs, alpha)}


def model_pair_families(pairs: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """What each model-pair test family could detect at best with this design (stats.family_reach): the
    rank and counting tests have a floor set by the number of units; MAPSSWE and the t-tests (normal and
    t approximations) have none."""
    if not pairs:
        return []
    m, n_utt = len(pairs), pairs[0]["n"]
    n_sent = (pairs[0].get("sentence_level") or {}).get("n_sentences", 0)
    fam = "model pairs"
    return [
        stats.family_reach(fam, "mapsswe", "utterances", n_utt, m, 0.0, alpha),
        stats.family_reach(fam, "wilcoxon", "utterances", n_utt, m, stats.min_p_signed_rank(n_utt), alpha),
        stats.family_reach(fam, "sign", "utterances", n_utt, m, stats.min_p_binomial(n_utt), alpha),
        stats.family_reach(fam, "paired_t", "utterances", n_utt, m, 0.0, alpha),
        stats.family_reach(fam, "mcnemar", "utterances", n_utt, m, stats.min_p_binomial(n_utt), alpha),
        stats.family_reach(fam + ", sentence level", "wilcoxon", "sentences", n_sent, m,
                           stats.min_p_signed_rank(n_sent), alpha),
        stats.family_reach(fam + ", sentence level", "paired_t", "sentences", n_sent, m, 0.0, alpha),
    ]


# --- dialects ----------------------------------------------------------------------------------------------


def _blocks(recs: list[dict[str, Any]], dialects: list[str]) -> tuple[list[tuple[str, str]], dict]:
    """(sentence, condition) blocks present in every dialect, and each cell's pooled WER by (block, dialect).

    A cell can hold several recordings (speakers of one dialect reading the same sentence, as user
    manifests often have): their errors and reference words are summed, so none is silently dropped.
    """
    sums: dict[tuple[tuple[str, str], str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in recs:
        acc = sums[((r["sentence"], r["condition"]), r["dialect"])]
        acc[0] += r["errors"]
        acc[1] += r["ref_words"]
    cell = {k: {"wer": e / n if n else float(e), "errors": e, "ref_words": n} for k, (e, n) in sums.items()}
    blocks = sorted({b for (b, _) in cell})
    complete = [b for b in blocks if all((b, d) in cell for d in dialects)]
    return complete, cell


def dialect_effects(recs: list[dict[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """Friedman over dialects, blocked by sentence (and condition): the same sentence spoken in every
    accent; then pairwise Wilcoxon signed-rank between dialects with Holm over the pairs.

    Per-utterance WER is the response; within a block the reference is the same, so ranks equal those of
    the error counts. Blocks missing a dialect are left out (and counted).
    """
    dialects = sorted({r["dialect"] for r in recs})
    if len(dialects) < 2:
        return {"dialects": dialects, "note": "one dialect only"}
    blocks, cell = _blocks(recs, dialects)
    all_blocks = {(r["sentence"], r["condition"]) for r in recs}
    out: dict[str, Any] = {"dialects": dialects, "blocks": len(blocks),
                           "blocks_incomplete": len(all_blocks) - len(blocks)}
    if len(blocks) < 2:
        out["note"] = "fewer than 2 sentences spoken in every dialect: no paired dialect test"
        return out
    m = np.array([[cell[(b, d)]["wer"] for d in dialects] for b in blocks], float)
    if len(dialects) >= 3:
        out["friedman"] = stats.friedman(m)
    pairwise = []
    for i, j in itertools.combinations(range(len(dialects)), 2):
        w = stats.wilcoxon(m[:, i], m[:, j])
        pairwise.append({"a": dialects[i], "b": dialects[j], "p_value": w["p_value"], "n": w["n"],
                         "rank_biserial": w.get("rank_biserial"),
                         "mean_wer_a": float(m[:, i].mean()), "mean_wer_b": float(m[:, j].mean())})
    for p, ph in zip(pairwise, stats.holm([p["p_value"] for p in pairwise]), strict=True):
        p["p_holm"] = ph
        p["significant"] = bool(ph is not None and ph < alpha)
    out["pairwise"] = pairwise
    out["mean_wer_by_dialect"] = {d: float(m[:, k].mean()) for k, d in enumerate(dialects)}
    out["families"] = [
        stats.family_reach("dialect pairs", "wilcoxon", "blocks", len(blocks), len(pairwise),
                           stats.min_p_signed_rank(len(blocks)), alpha),
        stats.family_reach("dialects", "friedman", "blocks", len(blocks), 1,
                           stats.min_p_friedman(len(blocks), len(dialects)), alpha)]
    return out


def domain_gap(recs: list[dict[str, Any]], in_domain: Iterable[str], n_boot: int, seed: int,
               control: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Pooled WER on held-out accents minus pooled WER on in-domain accents, with a CI from resampling
    sentences (the same sentences are in both groups, so the sentence is the pairing unit), and a
    Wilcoxon test over sentences. ``control``: another model's records on the same utterances; the
    difference of the two gaps (difference-in-differences) separates "these accents are unheard" from
    "these accents are harder for any recognizer"."""
    in_domain = set(in_domain)
    dialects = {r["dialect"] for r in recs}
    ins, outs = sorted(dialects & in_domain), sorted(dialects - in_domain)
    if not ins or not outs:
        return None

    def per_sentence(rs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        acc: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4))
        for r in rs:
            k = 0 if r["dialect"] in in_domain else 2
            acc[r["sentence"]][k] += r["errors"]
            acc[r["sentence"]][k + 1] += r["ref_words"]
        return acc

    acc = per_sentence(recs)
    keys = sorted(k for k, v in acc.items() if v[1] > 0 and v[3] > 0)
    if len(keys) < 2:
        return None
    vals = np.array([acc[k] for k in keys])
    if control is not None:
        cacc = per_sentence(control)
        if all(k in cacc and cacc[k][1] > 0 and cacc[k][3] > 0 for k in keys):
            vals = np.hstack([vals, np.array([cacc[k] for k in keys])])
        else:
            control = None
    sums = stats.bootstrap_sums(vals, n_boot, seed)
    gap_reps = sums[:, 2] / sums[:, 3] - sums[:, 0] / sums[:, 1]
    tot = vals.sum(axis=0)
    w_in, w_out = tot[0] / tot[1], tot[2] / tot[3]
    per_in, per_out = vals[:, 0] / vals[:, 1], vals[:, 2] / vals[:, 3]
    out = {
        "in_domain": ins, "held_out": outs, "sentences": len(keys),
        "wer_in_domain": float(w_in), "wer_held_out": float(w_out), "gap": float(w_out - w_in),
        "gap_ci95": [float(np.quantile(gap_reps, 0.025)), float(np.quantile(gap_reps, 0.975))],
        "wilcoxon_over_sentences": stats.wilcoxon(per_out, per_in),
    }
    if control is not None:
        c_gap_reps = sums[:, 6] / sums[:, 7] - sums[:, 4] / sums[:, 5]
        c_gap = tot[6] / tot[7] - tot[4] / tot[5]
        did = gap_reps - c_gap_reps
        out["control_gap"] = float(c_gap)
        out["gap_minus_control"] = float((w_out - w_in) - c_gap)
        out["gap_minus_control_ci95"] = [float(np.quantile(did, 0.025)), float(np.quantile(did, 0.975))]
    return out
