"""sclite ``trn`` files, so NIST SCTK can score the very strings this run scored.

One line per utterance, ``words (utterance-id)``. The id is ``<speaker>_<utterance>`` with underscores in
the speaker replaced by hyphens, which is sclite's ``spu_id`` form (speaker before the first underscore), so
sclite's per-speaker reports work:

    sclite -r ref.trn trn -h <model>.hyp.trn trn -i spu_id -o sum stdout

Strings are the normalized (scored) forms; both sides are written for each model, in the same utterance
order, so a model scored on fewer utterances gets a matching reference file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from speechbench.common.results import write_text_atomic


def trn_id(speaker: str, utt_id: str) -> str:
    spk = re.sub(r"[\s_()]+", "-", speaker or "unknown")
    utt = re.sub(r"[\s()]+", "-", utt_id)
    return f"{spk}_{utt}"


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_")


def write_trn(out_dir: Path, by_model: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """Write ``<model>.hyp.trn`` and ``<model>.ref.trn`` per model; returns their paths by model."""
    out_dir = Path(out_dir)
    files: dict[str, dict[str, str]] = {}
    for model, recs in by_model.items():
        recs = sorted(recs, key=lambda r: r["id"])
        stem = safe_name(model)
        ref = "".join(f"{r['ref']} ({trn_id(r['speaker'], r['id'])})\n" for r in recs)
        hyp = "".join(f"{r['hyp']} ({trn_id(r['speaker'], r['id'])})\n" for r in recs)
        rp, hp = out_dir / f"{stem}.ref.trn", out_dir / f"{stem}.hyp.trn"
        write_text_atomic(rp, ref)
        write_text_atomic(hp, hyp)
        files[model] = {"ref": str(rp), "hyp": str(hp)}
    return files
