"""Score a trained checkpoint on an evaluation manifest, accent by accent, greedy and beam + LM.

The model card's headline: how the model does on sentences it never heard, in the accents it was trained
on and in the accents held out. Written beside the checkpoint as ``<name>.eval.json``; the card renders
it. The beam-search weights are tuned on the training corpus's held-out split (never on the evaluation
set) by ``tune_beam`` and stored in the same file, so the evaluation numbers are not fitted to themselves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import jiwer
import torch

from speechbench.asr.ctc.decode import BeamConfig, CharNgramLM, greedy_decode, prefix_beam_search
from speechbench.asr.ctc.features import LogMel, waveforms_to_batch
from speechbench.asr.ctc.tokenizer import Tokenizer, normalize_target
from speechbench.asr.ctc.training.data import IN_DOMAIN_ACCENTS
from speechbench.speech.audio import load_audio
from speechbench.speech.manifest import Utterance, read_manifest


@torch.no_grad()
def log_probs(model, extractor: LogMel, utts: list[Utterance], batch_size: int = 16
              ) -> list[torch.Tensor]:
    """One (T, V) log-prob matrix per utterance, in input order (length-sorted batches inside)."""
    waves = [load_audio(u.audio_path or u.audio_filepath) for u in utts]
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    out: list[torch.Tensor | None] = [None] * len(waves)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        audio, lengths = waveforms_to_batch([waves[i] for i in idx])
        feats, flen = extractor(audio, lengths)
        lp, olen = model(feats, flen)
        for j, i in enumerate(idx):
            out[i] = lp[j, : int(olen[j])].clone()
    return out  # type: ignore[return-value]


def _scores(refs: list[str], hyps: list[str]) -> dict[str, float]:
    hyps = [h or "" for h in hyps]
    return {"cer": float(jiwer.cer(refs, hyps)), "wer": float(jiwer.wer(refs, hyps)), "n": len(refs)}


def decode_all(lps: list[torch.Tensor], tokenizer: Tokenizer, lm: CharNgramLM | None, beam: BeamConfig | None
               ) -> list[str]:
    if beam is None:
        return [tokenizer.decode(greedy_decode(lp)[0]) for lp in lps]
    return [prefix_beam_search(lp, lm, beam, tokenizer.chars) for lp in lps]


def tune_beam(lps: list[torch.Tensor], refs: list[str], tokenizer: Tokenizer, lm: CharNgramLM,
              grid: tuple[tuple[float, float], ...] = ((0.3, 0.5), (0.5, 0.5), (0.5, 1.0), (0.8, 1.0),
                                                      (0.8, 1.5), (1.0, 1.5), (1.2, 2.0))
              ) -> tuple[BeamConfig, list[dict[str, float]]]:
    """Pick (lm_weight, char_bonus) by WER on a tuning set; returns the best config and the grid's scores."""
    rows = []
    for alpha, beta in grid:
        cfg = replace(BeamConfig(), lm_weight=alpha, char_bonus=beta)
        rows.append({"lm_weight": alpha, "char_bonus": beta, **_scores(refs, decode_all(lps, tokenizer, lm, cfg))})
    best = min(rows, key=lambda r: (r["wer"], r["cer"]))
    return replace(BeamConfig(), lm_weight=best["lm_weight"], char_bonus=best["char_bonus"]), rows


def score_checkpoint(checkpoint: str | Path, manifest: str | Path, tune_utts: list[Utterance] | None = None,
                     conditions: tuple[str, ...] = ("clean",), threads: int = 2) -> dict[str, Any]:
    """Greedy and beam + LM scores per accent (corpus-level CER/WER on normalized text)."""
    from speechbench.asr.ctc.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    model, feat_cfg, payload = load_checkpoint(checkpoint)
    extractor = LogMel(feat_cfg)
    tok = Tokenizer(payload["chars"])
    lm = CharNgramLM(6, tok.chars).fit(payload.get("lm_texts") or [])
    trained_on = set(payload.get("meta", {}).get("train_hours") or IN_DOMAIN_ACCENTS)  # accent -> hours

    beam, grid, heldout_text = BeamConfig(), [], None
    if tune_utts:
        t_lps = log_probs(model, extractor, tune_utts)
        t_refs = [normalize_target(u.text) for u in tune_utts]
        beam, grid = tune_beam(t_lps, t_refs, tok, lm)
        # Unseen sentences of the training grammar, in the training accents: greedy, and beam + LM with the
        # weights this same set picked (every grid point is listed, so the selection's optimism is visible).
        chosen = next(r for r in grid if (r["lm_weight"], r["char_bonus"]) == (beam.lm_weight, beam.char_bonus))
        heldout_text = {"greedy": _scores(t_refs, decode_all(t_lps, tok, None, None)),
                        "beam_lm": {k: chosen[k] for k in ("cer", "wer", "n")}}

    utts = [u for u in read_manifest(manifest).utterances if u.condition in conditions]
    t0 = time.perf_counter()
    lps = log_probs(model, extractor, utts)
    forward_s = time.perf_counter() - t0
    refs = [normalize_target(u.text) for u in utts]
    t0 = time.perf_counter()
    greedy = decode_all(lps, tok, None, None)
    t1 = time.perf_counter()
    beamed = decode_all(lps, tok, lm, beam)
    beam_s = time.perf_counter() - t1

    def group(keep) -> dict[str, Any]:
        idx = [i for i, u in enumerate(utts) if keep(u)]
        r = [refs[i] for i in idx]
        return {"greedy": _scores(r, [greedy[i] for i in idx]), "beam_lm": _scores(r, [beamed[i] for i in idx])}

    accents = sorted({u.dialect for u in utts}, key=lambda a: (a not in trained_on, a))
    audio_s = sum(u.duration for u in utts)
    return {
        "checkpoint": str(checkpoint),
        "manifest": str(manifest),
        "conditions": list(conditions),
        "trained_accents": sorted(trained_on),
        "beam": asdict(beam),
        "lm": {"kind": "character 6-gram, Witten-Bell", "texts": len(payload.get("lm_texts") or [])},
        "beam_tuning": {"utterances": len(tune_utts or []), "grid": grid},
        "heldout_text": heldout_text,
        "per_accent": {a: {"in_domain": a in trained_on, **group(lambda u, a=a: u.dialect == a)}
                       for a in accents},
        "in_domain": group(lambda u: u.dialect in trained_on),
        "held_out": group(lambda u: u.dialect not in trained_on),
        "timing": {"audio_s": round(audio_s, 1), "forward_s": round(forward_s, 2),
                   "greedy_s": round(t1 - t0, 2), "beam_s": round(beam_s, 2), "threads": threads},
        "examples": [{"dialect": utts[i].dialect, "ref": refs[i], "greedy": greedy[i], "beam_lm": beamed[i]}
                     for i in range(0, len(utts), max(1, len(utts) // 6))][:6],
    }


def render_scorecard(ev: dict[str, Any]) -> list[str]:
    """Model-card section (Markdown lines) for a score_checkpoint result."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    b = ev["beam"]
    lines = ["## Evaluation corpus, by accent", "",
             f"Manifest `{Path(ev['manifest']).parent.name}`, conditions {', '.join(ev['conditions'])}; "
             f"sentences never in the training text. Trained on: {', '.join(ev['trained_accents'])}; every "
             "other accent is held out. Beam + LM: prefix beam search (beam "
             f"{b['beam_size']}) with a {ev['lm']['kind']} character LM fitted on the {ev['lm']['texts']:,} "
             f"training transcripts; weights (LM {b['lm_weight']:g}, character bonus {b['char_bonus']:g}) tuned on "
             f"{ev['beam_tuning']['utterances']} held-out training-corpus utterances, not on this set.", "",
             "| accent | in training | n | greedy CER | greedy WER | beam+LM CER | beam+LM WER |",
             "|---|---|---|---|---|---|---|"]
    ht = ev.get("heldout_text")
    if ht:
        g, bl = ht["greedy"], ht["beam_lm"]
        lines.append(f"| *held-out training-grammar sentences* | yes | {g['n']} | {pct(g['cer'])} | {pct(g['wer'])} | "
                     f"{pct(bl['cer'])} | {pct(bl['wer'])} |")
    rows = [(a, "yes" if v["in_domain"] else "held out", v) for a, v in ev["per_accent"].items()]
    rows += [("**all in-domain**", "", ev["in_domain"]), ("**all held-out**", "", ev["held_out"])]
    for a, flag, v in rows:
        g, bl = v["greedy"], v["beam_lm"]
        lines.append(f"| {a} | {flag} | {g['n']} | {pct(g['cer'] if g['n'] else None)} | "
                     f"{pct(g['wer'] if g['n'] else None)} | {pct(bl['cer'] if bl['n'] else None)} | "
                     f"{pct(bl['wer'] if bl['n'] else None)} |")
    t = ev["timing"]
    if ht:
        lines += ["", "The first row is not the evaluation corpus: unseen sentences from the training text's grammar "
                  "(the beam weights were tuned on them). The LM knows that grammar's templates, so its beam+LM "
                  "figures show what the LM contributes on familiar sentence shapes; the rows below show the "
                  "evaluation corpus's different (partly literary) text."]
    lines += ["", f"Scoring {t['audio_s'] / 60:.1f} min of audio: forward {t['forward_s']} s, greedy "
              f"{t['greedy_s']} s, beam {t['beam_s']} s ({t['threads']} threads).", ""]
    return lines
