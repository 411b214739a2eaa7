"""Recorded (not synthesized) read speech that installs offline: the sample clips moonshine-voice bundles.

The default corpus is synthetic (espeak-ng accents, the Piper voice). To say anything about speech that
was not synthesized, Part 2 can be pointed at a manifest of the recordings this module finds in the
installed ``moonshine_voice`` package, with their published texts as references:

* ``two_cities.wav`` (44 s, 48 kHz): the opening sentence of Dickens' *A Tale of Two Cities* (1859,
  public domain), read in full (the clip ends with "...degree of comparison only");
* ``beckett.wav`` (10 s, 16 kHz): "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
  (Beckett, *Worstward Ho*, a 14-word quotation).

The package does not say who or what speaks them; they sound like human readers (natural prosody, room
tone) but that is not verified. Two clips are a spot check, not an evaluation set: enough to show a
model that learned synthetic voices only fails on them, too few for fine comparisons.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import soundfile as sf

TEXTS = {
    "two_cities": (
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
        "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
        "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
        "direct the other way - in short, the period was so far like the present period, that some of its "
        "noisiest authorities insisted on its being received, for good or for evil, in the superlative degree "
        "of comparison only."),
    "beckett": "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
}


def assets_dir() -> Path:
    """moonshine-voice's ``assets`` folder (FileNotFoundError when the package is not installed)."""
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("moonshine-voice is not installed: its bundled recordings are the source")
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


def write_recorded_manifest(out: str | Path) -> Path:
    """Write a JSONL manifest (absolute paths into site-packages) of the bundled recordings; returns its path.

    Raises FileNotFoundError naming what is missing when moonshine-voice (0.0.73) is not installed."""
    assets = assets_dir()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for clip, text in TEXTS.items():
        path = assets / f"{clip}.wav"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (moonshine-voice 0.0.73 ships it)")
        lines.append(json.dumps({"audio_filepath": str(path), "text": text, "duration": sf.info(path).duration,
                                 "dialect": "recorded", "speaker": clip, "condition": "recorded",
                                 "sentence_id": clip}))
    out.write_text("\n".join(lines) + "\n")
    return out
