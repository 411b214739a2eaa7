"""What the comparison should be read with: the machines, the run sizes and each run's noise record.

Every results file carries ``env`` (device, CPU, git commit, time) and the timing schemas carry ``noise``:
per measured section, a calibration probe before and after (its drift), CPU steal and foreign CPU use,
and a ``suspect`` flag with reasons. The gate does not change a verdict because of noise; it reports the
noise, and marks each figure measured in a section that either run flagged as suspect.
"""

from __future__ import annotations

from typing import Any

from speechbench.compare.figures import NOT_COMPARABLE, Figure


def suspect_sections(data: dict[str, Any]) -> dict[str, list[str]]:
    """Noise sections flagged suspect -> their reasons."""
    noise = data.get("noise")
    if not isinstance(noise, dict):
        return {}
    return {name: [str(r) for r in (sec.get("reasons") or [])] for name, sec in noise.items()
            if isinstance(sec, dict) and sec.get("suspect")}


def _max_share(data: dict[str, Any], key: str) -> float | None:
    vals = [sec.get(key) for sec in (data.get("noise") or {}).values() if isinstance(sec, dict)]
    vals = [v for v in vals if isinstance(v, int | float)]
    return max(vals) if vals else None


def noise_lines(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for role, data in (("BASE", base), ("NEW", new)):
        noise = data.get("noise")
        if not isinstance(noise, dict) or not noise:
            out.append(f"{role} noise: no noise record.")
            continue
        sus = suspect_sections(data)
        steal, foreign = _max_share(data, "steal_share"), _max_share(data, "foreign_cpu_share")
        shares = ", ".join(f"{w} up to {100 * v:.1f}%" for w, v in (("CPU steal", steal), ("foreign CPU", foreign))
                           if v is not None)
        if sus:
            detail = "; ".join(f"{k} ({', '.join(v) or 'suspect'})" for k, v in sus.items())
            out.append(f"{role} noise: **suspect** in {len(sus)} of {len(noise)} sections: {detail}. {shares}.")
        else:
            out.append(f"{role} noise: clean in all {len(noise)} sections. {shares}.")
    return out


def flag_noise(figures: list[Figure], base: dict[str, Any], new: dict[str, Any]) -> None:
    """Note on every figure whose sections either run flagged as suspect."""
    sb, sn = suspect_sections(base), suspect_sections(new)
    for fig in figures:
        hits = [f"{role} {s}" for role, sus in (("BASE", sb), ("NEW", sn)) for s in fig.sections if s in sus]
        if hits:
            fig.add_note("noise suspect: " + ", ".join(hits))


def _env(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("env") if isinstance(data.get("env"), dict) else {}


def _quick(data: dict[str, Any]) -> Any:
    for src in (data.get("summary"), data.get("config")):
        if isinstance(src, dict) and "quick" in src:
            return src["quick"]
    return None


def env_lines(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for role, data in (("BASE", base), ("NEW", new)):
        e = _env(data)
        sha = str(e.get("git_sha") or "?")[:10] + (" (dirty)" if e.get("git_dirty") else "")
        out.append(f"{role}: {data.get('schema', '?')}, status {data.get('status', '?')}, commit {sha}, "
                   f"{e.get('time_utc', '?')}, device {e.get('device', '?')} ({e.get('device_name', '?')}, "
                   f"{e.get('cpu_count', '?')} CPUs), quick={_quick(data)}.")
        if data.get("status") not in (None, "complete"):
            out.append(f"{role} is not a complete run (status {data.get('status')!r}): figures may be missing.")
    return out


def timing_mismatch(base: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why the two runs' timings cannot be compared (another device, machine or run size), or None."""
    eb, en = _env(base), _env(new)
    diffs = [f"{k} {eb.get(k)!r} vs {en.get(k)!r}" for k in ("device", "device_name", "cpu_count")
             if k in eb and k in en and eb.get(k) != en.get(k)]
    if _quick(base) != _quick(new):
        diffs.append(f"quick {_quick(base)!r} vs {_quick(new)!r}")
    return "; ".join(diffs) or None


def mark_not_comparable(figures: list[Figure], reason: str) -> None:
    for fig in figures:
        if fig.verdict != NOT_COMPARABLE:
            fig.verdict = NOT_COMPARABLE
            fig.add_note(f"runs differ: {reason}")
