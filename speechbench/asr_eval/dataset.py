"""Manifests -> the utterances to evaluate: read, subset, audio-checked; every unusable item is a failure.

Nothing here is fatal for one bad item: a malformed or empty manifest line, a missing or unreadable file,
a clip that is silent, too short to hold a word (< 0.3 s), or holds NaN/inf samples, and a reference that
normalizes to nothing are each recorded (section, manifest line or id, error) and left out, so that every
model is scored on exactly the same utterances (a paired comparison needs that).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.asr_eval.normalize import normalize_text
from speechbench.speech.audio import AudioCheck, AudioLoadError, load_audio, validate_audio
from speechbench.speech.manifest import read_manifest

log = logging.getLogger(__name__)

UNLABELED = "unlabeled"
AUDIO_CHECK = AudioCheck(min_duration_s=0.3, silence_dbfs=-40.0)
# Reasons from validate_audio that make a clip unusable; clipping is only a warning (real corpora clip).
FATAL_AUDIO = ("no samples", "non-finite", "too short", "silent")


@dataclass
class EvalItem:
    """One utterance as a worker needs it: self-contained (absolute audio path), JSON-serializable."""

    id: str
    audio_path: str
    text: str
    duration: float
    dialect: str
    speaker: str
    condition: str
    sentence: str  # pairing key across dialects: the corpus's sentence_id, else the normalized text
    manifest: str
    # What kind of speech: "real" (people), "synthetic" (TTS voices), or a manifest's own ``source``
    # label; reported as separate sets, since a WER pooled over both says little about either.
    source: str = UNLABELED
    style: str = ""  # real speech: read, spontaneous, whispered... (the manifest's ``style``)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_items(manifests: list[Path]) -> tuple[list[EvalItem], list[dict[str, Any]], list[dict[str, Any]]]:
    """Read every manifest (audio headers checked). Returns (items, failures, per-manifest summaries).

    Ids must be unique across manifests (results are keyed by id): a repeated id is a failure.
    """
    items: list[EvalItem] = []
    failures: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in manifests:
        res = read_manifest(path)
        summaries.append({"path": str(path), "utterances": len(res.utterances), "failed_lines": len(res.failures)})
        for f in res.failures:
            failures.append({"section": "manifest", "manifest": str(path), "line": f.line, "id": None,
                             "error": f.reason, "raw": f.raw})
        for u in res.utterances:
            if u.id in seen:
                failures.append({"section": "manifest", "manifest": str(path), "line": None, "id": u.id,
                                 "error": f"duplicate id {u.id!r} (already in an earlier manifest)"})
                continue
            seen.add(u.id)
            sentence = str(u.extra.get("sentence_id") or normalize_text(u.text))
            items.append(EvalItem(id=u.id, audio_path=str(Path(u.audio_path or u.audio_filepath).resolve()),
                                  text=u.text, duration=float(u.duration), dialect=u.dialect, speaker=u.speaker,
                                  condition=u.condition, sentence=sentence, manifest=str(path),
                                  source=source_of(u.extra), style=str(u.extra.get("style") or "")))
    return items, failures, summaries


def source_of(extra: dict[str, Any]) -> str:
    """A row's set: its ``source`` field; the embedded corpus's rows (they name a TTS ``engine``) are
    "synthetic"; anything else is unlabeled."""
    if extra.get("source"):
        return str(extra["source"])
    return "synthetic" if extra.get("engine") else UNLABELED


def sources_summary(items: list[EvalItem]) -> dict[str, dict[str, Any]]:
    """Per set: utterances, audio, speakers, sentences, reference words (what its WER rests on)."""
    out: dict[str, dict[str, Any]] = {}
    for src in dict.fromkeys(it.source for it in items):
        its = [it for it in items if it.source == src]
        out[src] = {"utterances": len(its), "audio_s": round(sum(it.duration for it in its), 2),
                    "speakers": len({it.speaker for it in its}), "sentences": len({it.sentence for it in its}),
                    "dialects": len({it.dialect for it in its}),
                    "words": sum(len(normalize_text(it.text).split()) for it in its)}
    return out


def select_sentences(items: list[EvalItem], n: int | None) -> tuple[list[EvalItem], dict[str, Any]]:
    """Keep ``n`` sentences spread evenly over the corpus's sentence order, in every dialect and condition.

    The same sentences in every dialect keep the dialect comparison paired; spreading them (rather than
    taking the first n) covers every section of the sentence list and, in the default corpus, where
    sentence i is spoken by speaker i mod 3, every speaker about equally.
    """
    keys = list(dict.fromkeys(it.sentence for it in items))
    info: dict[str, Any] = {"sentences_available": len(keys)}
    if n is None or n >= len(keys):
        info.update({"sentences_selected": len(keys), "rule": "all sentences"})
        return items, info
    if n < 1:
        raise ValueError("--sentences must be >= 1")
    picks = sorted(set(np.linspace(0, len(keys) - 1, n).round().astype(int).tolist()))
    chosen = {keys[i] for i in picks}
    info.update({"sentences_selected": len(chosen), "sentence_positions": picks,
                 "rule": f"{len(chosen)} of {len(keys)} sentences, evenly spaced over the sentence list "
                         "(positions numpy.linspace(0, K-1, n) rounded), the same in every dialect"})
    return [it for it in items if it.sentence in chosen], info


def cap_utterances(items: list[EvalItem], n: int | None) -> tuple[list[EvalItem], dict[str, Any] | None]:
    """At most ``n`` utterances, evenly spaced through the list (may break the pairing across dialects)."""
    if n is None or n >= len(items):
        return items, None
    if n < 1:
        raise ValueError("--max-utterances must be >= 1")
    picks = sorted(set(np.linspace(0, len(items) - 1, n).round().astype(int).tolist()))
    return [items[i] for i in picks], {"max_utterances": n, "rule": "evenly spaced through the manifest order"}


def check_item_audio(item: EvalItem) -> tuple[str | None, list[str]]:
    """(fatal reason or None, warnings) for one item's audio and reference."""
    if not normalize_text(item.text):
        return "reference is empty after normalization", []
    try:
        audio = load_audio(item.audio_path)
    except AudioLoadError as e:
        return str(e), []
    except Exception as e:  # anything soundfile or the resampler raises: recorded, not fatal
        return f"{type(e).__name__}: {e}", []
    issues = validate_audio(audio, AUDIO_CHECK.sample_rate, AUDIO_CHECK)
    fatal = [r for r in issues if r.startswith(FATAL_AUDIO)]
    warnings = [r for r in issues if r not in fatal]
    return ("; ".join(fatal) if fatal else None), warnings


def check_audio(items: list[EvalItem], progress: bool = False) -> tuple[list[EvalItem], list[dict[str, Any]],
                                                                      list[dict[str, Any]]]:
    """Load and validate each clip once, before any model runs: (usable items, failures, warnings)."""
    from tqdm import tqdm

    ok: list[EvalItem] = []
    failures: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for it in tqdm(items, desc="audio check", unit="utt", disable=not progress, dynamic_ncols=True):
        fatal, warn = check_item_audio(it)
        if warn:
            warnings.append({"id": it.id, "warnings": warn})
        if fatal:
            failures.append({"section": "audio", "manifest": it.manifest, "line": None, "id": it.id,
                             "dialect": it.dialect, "error": fatal})
        else:
            ok.append(it)
    return ok, failures, warnings
