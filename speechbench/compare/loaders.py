"""Read a results file and tell which of the suite's three schemas it is.

The suite writes one JSON per part, each with a ``schema`` key ("family/version"):

* ``asr_evaluation/1``, ``/2`` Part 2 (comprehensive_asr_evaluation.py): per-utterance ``utterances`` records
                            (model, id, errors, ref_words, dialect...) and ``summary.models``;
* ``tts_benchmarks/1``      Part 1 (optimized_tts_inference.py): headline ratios and latencies in ``summary``;
* ``streaming_performance/1`` Part 3 (production_streaming_asr.py): capacity, per-level runs, per-model rows.

A file without ``schema`` is recognised from its content. Anything unusable (missing, not JSON, another
schema than the other file, a required field absent) raises ``UnusableInput`` naming the file and field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASR, TTS, STREAMING = "asr_evaluation", "tts_benchmarks", "streaming_performance"
SCHEMAS = (ASR, TTS, STREAMING)
# Versions whose differences the gate never reads: asr_evaluation/2 renamed the failure records' keys
# (stage, reason -> section, error); the utterance records and summaries it compares are the same.
COMPATIBLE_VERSIONS = [{"asr_evaluation/1", "asr_evaluation/2"}]
TITLES = {ASR: "Part 2 ASR evaluation", TTS: "Part 1 TTS benchmarks", STREAMING: "Part 3 streaming"}

# Fields a file of each schema must have for the comparison to mean anything (dotted paths).
REQUIRED = {
    ASR: ["utterances", "summary.models"],
    TTS: ["summary", "summary.latency_speedup", "summary.throughput_speedup"],
    STREAMING: ["summary", "summary.max_streams_p95_under_100ms"],
}


class UnusableInput(Exception):
    """The inputs cannot be compared (exit status 2)."""


def load_json(path: str | Path, role: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``role`` (BASE / NEW) names the file in the error messages."""
    p = Path(path)
    if not p.is_file():
        raise UnusableInput(f"{role} {p}: no such file")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UnusableInput(f"{role} {p}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise UnusableInput(f"{role} {p}: malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise UnusableInput(f"{role} {p}: expected a JSON object at the top level, found {type(data).__name__}")
    return data


def sniff(data: dict[str, Any]) -> str | None:
    """The schema family from the content alone (for files written without a ``schema`` key)."""
    summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
    if isinstance(data.get("utterances"), list) and isinstance(summary.get("models"), dict):
        return ASR
    if "latency_speedup" in summary or "throughput_speedup" in summary:
        return TTS
    if "max_streams_p95_under_100ms" in summary or isinstance(data.get("sweep"), list):
        return STREAMING
    return None


def detect_schema(data: dict[str, Any], where: str) -> tuple[str, str]:
    """(family, full schema string). ``where`` = "BASE path" for messages."""
    schema = data.get("schema")
    if schema is None:
        fam = sniff(data)
        if fam is None:
            raise UnusableInput(f"{where}: no 'schema' field and the content matches none of "
                                f"{', '.join(SCHEMAS)} (looked for summary.models + utterances, "
                                "summary.latency_speedup, summary.max_streams_p95_under_100ms)")
        return fam, f"{fam} (detected from content)"
    if not isinstance(schema, str):
        raise UnusableInput(f"{where}: field 'schema' is not a string")
    fam = schema.split("/", 1)[0]
    if fam not in SCHEMAS:
        raise UnusableInput(f"{where}: unknown schema {schema!r} (this tool compares {', '.join(SCHEMAS)})")
    return fam, schema


def get_path(data: Any, dotted: str) -> tuple[bool, Any]:
    """(present, value) of a dotted path such as ``summary.models``."""
    cur = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def check_required(data: dict[str, Any], family: str, where: str) -> None:
    for field in REQUIRED[family]:
        present, value = get_path(data, field)
        if not present:
            raise UnusableInput(f"{where}: required field '{field}' is missing")
        if field in ("summary", "summary.models") and not isinstance(value, dict):
            raise UnusableInput(f"{where}: field '{field}' should be an object")
        if field == "utterances" and not isinstance(value, list):
            raise UnusableInput(f"{where}: field 'utterances' should be a list")


def load_pair(base_path: str | Path, new_path: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Both files, checked to be the same schema (family and version) with their required fields."""
    base, new = load_json(base_path, "BASE"), load_json(new_path, "NEW")
    fb, sb = detect_schema(base, f"BASE {base_path}")
    fn, sn = detect_schema(new, f"NEW {new_path}")
    if fb != fn:
        raise UnusableInput(f"different schemas: BASE {base_path} is {sb} ({TITLES[fb]}), "
                            f"NEW {new_path} is {sn} ({TITLES[fn]})")
    if sb != sn and "detected" not in sb + sn and {sb, sn} not in COMPATIBLE_VERSIONS:
        raise UnusableInput(f"different schema versions: BASE {base_path} is {sb}, NEW {new_path} is {sn}")
    check_required(base, fb, f"BASE {base_path}")
    check_required(new, fn, f"NEW {new_path}")
    return fb, base, new
