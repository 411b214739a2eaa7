"""JSONL manifests: one utterance a line, NeMo / Common Voice style, so real corpora plug in unchanged.

    {"id": "...", "audio_filepath": "wavs/x.wav", "text": "...", "duration": 2.1,
     "dialect": "en-us", "speaker": "en-us-s0", "condition": "clean"}

Reading never fails as a whole for one bad line: every line that cannot be used (malformed JSON, a
missing required field, a missing / empty / unreadable audio file) becomes a ``ManifestFailure`` with its
line number and reason, and the good lines are returned beside them. A benchmark records the failures.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speechbench.common.results import write_text_atomic
from speechbench.speech.audio import AudioLoadError, audio_info

REQUIRED_FIELDS = ("audio_filepath", "text")
"""What every line must have. The rest default (NeMo manifests carry no dialect/speaker/condition)."""

ALL_FIELDS = ("id", "audio_filepath", "text", "duration", "dialect", "speaker", "condition")
UNKNOWN = "unknown"


@dataclass
class Utterance:
    id: str
    audio_filepath: str  # as written in the manifest (relative paths stay relative)
    text: str
    duration: float
    dialect: str = UNKNOWN
    speaker: str = UNKNOWN
    condition: str = "clean"
    extra: dict[str, Any] = field(default_factory=dict)  # any other keys, kept for round trips
    audio_path: Path | None = None  # resolved against the manifest's folder when read

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ALL_FIELDS}
        if not math.isfinite(self.duration):
            d["duration"] = None  # unknown (read without checking audio); strict JSON has no NaN
        d.update(self.extra)
        return d


@dataclass
class ManifestFailure:
    line: int  # 1-based, as an editor shows it
    reason: str
    raw: str = ""


@dataclass
class ManifestReadResult:
    utterances: list[Utterance]
    failures: list[ManifestFailure]
    path: Path

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "utterances": len(self.utterances),
            "failed_lines": len(self.failures),
            "failures": [asdict(f) for f in self.failures],
        }


def _parse_line(obj: Any, line_no: int, base: Path, required: tuple[str, ...],
                check_audio: bool) -> Utterance:
    """One manifest line -> Utterance; raises ValueError with the reason the line is unusable."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if obj.get(k) in (None, "")]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    text = obj["text"]
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {type(text).__name__}")
    rel = str(obj["audio_filepath"])
    path = Path(rel).expanduser()
    if not path.is_absolute():
        path = base / path  # relative to the manifest's folder, not the working directory
    duration = obj.get("duration")
    if check_audio:
        try:
            sr, frames, _ = audio_info(path)
        except AudioLoadError as e:
            raise ValueError(str(e)) from None
        if duration is None:
            duration = frames / sr
    if duration is None:
        duration = float("nan")
    try:
        duration = float(duration)
    except (TypeError, ValueError):
        raise ValueError(f"'duration' is not a number: {duration!r}") from None
    extra = {k: v for k, v in obj.items() if k not in ALL_FIELDS}
    return Utterance(
        id=str(obj.get("id") or f"{Path(rel).stem}-L{line_no}"),
        audio_filepath=rel,
        text=text,
        duration=duration,
        dialect=str(obj.get("dialect") or UNKNOWN),
        speaker=str(obj.get("speaker") or UNKNOWN),
        condition=str(obj.get("condition") or "clean"),
        extra=extra,
        audio_path=path,
    )


def read_manifest(
    path: str | Path,
    required: tuple[str, ...] = REQUIRED_FIELDS,
    check_audio: bool = True,
) -> ManifestReadResult:
    """Read a JSONL manifest; bad lines are reported in ``failures``, never raised.

    ``check_audio`` reads each file's header (cheap) so a missing or empty file is caught here, once, with
    its line number, rather than half-way through a benchmark. Duplicate ids are failures too: results
    are keyed by id. Only a manifest that does not exist at all raises (FileNotFoundError).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    base = path.resolve().parent
    utterances: list[Utterance] = []
    failures: list[ManifestFailure] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                obj = json.loads(stripped)
            except json.JSONDecodeError as e:
                reason = f"malformed JSON: {e.msg} (col {e.colno})"
                failures.append(ManifestFailure(line_no, reason, stripped[:200]))
                continue
            try:
                utt = _parse_line(obj, line_no, base, required, check_audio)
            except ValueError as e:
                failures.append(ManifestFailure(line_no, str(e), stripped[:200]))
                continue
            if utt.id in seen:
                failures.append(ManifestFailure(line_no, f"duplicate id {utt.id!r}", stripped[:200]))
                continue
            seen.add(utt.id)
            utterances.append(utt)
    return ManifestReadResult(utterances, failures, path)


def manifest_text(utterances: list[Utterance]) -> str:
    """The JSONL text: stable key order, UTF-8 kept readable, so the same corpus gives the same bytes."""
    return "".join(json.dumps(u.to_json(), ensure_ascii=False, allow_nan=False) + "\n" for u in utterances)


def write_manifest(path: str | Path, utterances: list[Utterance]) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a manifest."""
    return write_text_atomic(path, manifest_text(utterances))
