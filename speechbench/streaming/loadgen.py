"""Real-time load simulator: N concurrent streams replaying corpus speech, paced by the wall clock.

One pacing thread (the caller's) drives every stream: a heap of (due time, stream) pops each stream's
next client chunk (``chunk_ms`` of audio) the moment its last sample would exist in real time and hands
it to the engine with that moment as ``arrival_time``, so latency is measured from when the audio existed,
not from when the generator got round to sending it. If the generator itself falls behind, its lag is
recorded (``lag_ms``) rather than hidden.

Each stream is a sequence of corpus utterances (each with its own lead-in/out silence) separated by gaps
of noise-floor silence, starting at a different place in a seeded order; stream starts are staggered over
``ramp_s`` with a random phase, so chunks do not arrive in lock step. Reference timing (speech onset and
end of every utterance, from the clean audio's energy) is known to the generator only, for scoring.

Event processing (on the engine's scheduler thread) keeps O(1) work and O(utterances) memory: the first
non-empty partial and every final of each segment. Scoring afterwards maps segments to utterances by the
sample position of their characters.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechbench.streaming.engine import AdmissionError, Event, StreamError, StreamingEngine
from speechbench.streaming.metrics import Histogram

log = logging.getLogger(__name__)
SR = 16000


@dataclass
class UttAudio:
    id: str
    text: str  # the reference as written (wer_counts normalizes both sides)
    audio: np.ndarray  # float32, 16 kHz
    onset: int  # sample where speech starts (energy-based, on the clean recording)
    offset: int  # sample where speech ends
    dialect: str = "unknown"
    source: str = "synthetic"  # "synthetic" | "real" | "continuous" (real speech with its pauses shortened)


@dataclass
class StreamKind:
    """What one kind of stream replays: some utterances of the pool, with gaps of silence between them."""

    name: str  # reported per kind: "synthetic", "real", "continuous"
    utts: np.ndarray  # indices into the pool
    gap_s: tuple[float, float] | None = None  # None: LoadConfig.gap_s


def speech_bounds(audio: np.ndarray, sr: int = SR, floor_dbfs: float = -45.0, rel_db: float = 40.0
                  ) -> tuple[int, int]:
    """First and last sample of speech: 10 ms frames louder than max(floor, peak frame - rel_db)."""
    hop = sr // 100
    n = len(audio) // hop
    if n == 0:
        return 0, len(audio)
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = np.nonzero(db > max(floor_dbfs, db.max() - rel_db))[0]
    if active.size == 0:
        return 0, len(audio)
    return int(active[0] * hop), int((active[-1] + 1) * hop)


@dataclass
class Span:
    """One utterance inside a stream's timeline (stream sample positions)."""

    utt: int  # index into the pool
    start: int
    end: int  # end of the utterance's audio (its trailing padding included)
    next_start: int  # where the next utterance starts (end + gap)


class StreamScript:
    """A stream's audio, produced on demand: utterances from the pool with silent gaps between them."""

    def __init__(self, pool: list[UttAudio], order: np.ndarray, rng: np.random.Generator,
                 gap_s: tuple[float, float], floor: np.ndarray) -> None:
        self.pool = pool
        self.order = order
        self.rng = rng
        self.gap_s = gap_s
        self.floor = floor  # noise-floor samples reused for the gaps
        self.spans: list[Span] = []
        self.pos = 0  # samples produced so far
        self._k = 0
        self._segments: list[np.ndarray] = []
        self._seg_off = 0
        self._next()

    def _next(self) -> None:
        u = int(self.order[self._k % len(self.order)])
        self._k += 1
        audio = self.pool[u].audio
        gap = int(self.rng.uniform(*self.gap_s) * SR)
        start = self.spans[-1].next_start if self.spans else 0
        self.spans.append(Span(u, start, start + len(audio), start + len(audio) + gap))
        off = int(self.rng.integers(0, max(1, len(self.floor) - gap)))
        self._segments += [audio, self.floor[off: off + gap]]

    def read(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float32)
        k = 0
        while k < n:
            if not self._segments:
                self._next()
            seg = self._segments[0]
            take = min(n - k, len(seg) - self._seg_off)
            out[k: k + take] = seg[self._seg_off: self._seg_off + take]
            k += take
            self._seg_off += take
            if self._seg_off >= len(seg):
                self._segments.pop(0)
                self._seg_off = 0
        self.pos += n
        return out


@dataclass
class StreamTrack:
    sid: str
    script: StreamScript
    start: float = 0.0  # wall time (perf_counter) of sample 0
    admitted: bool = False
    refused: str | None = None
    done: bool = False
    sent: int = 0
    chunks: int = 0
    error: str | None = None
    shed: int = 0
    first_partials: dict[int, tuple[int, float]] = field(default_factory=dict)  # segment -> (first tok, time)
    # (segment, text, first tok, last tok, time, reason[, committed text before the final decode])
    finals: list[tuple] = field(default_factory=list)
    future: Any = None
    kind: str = "synthetic"


class Collector:
    """Event sink for a load run: O(1) per event on the scheduler thread."""

    def __init__(self) -> None:
        self.tracks: dict[str, StreamTrack] = {}
        self.errors: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, ev: Event) -> None:
        tr = self.tracks.get(ev.stream_id)
        if tr is None:
            return
        if ev.shed:
            tr.shed = ev.shed
        if ev.kind == "partial":
            if ev.text and ev.segment not in tr.first_partials and ev.first_token_sample is not None:
                tr.first_partials[ev.segment] = (ev.first_token_sample, ev.time)
        elif ev.kind == "final":
            tr.finals.append((ev.segment, ev.text, ev.first_token_sample, ev.last_token_sample, ev.time,
                              ev.reason, ev.committed))
        elif ev.kind == "error":
            tr.error = ev.reason
            with self.lock:
                self.errors.append({"stream": ev.stream_id, "error": ev.reason})


@dataclass
class LoadConfig:
    streams: int
    duration_s: float  # audio per stream
    chunk_ms: int = 40
    ramp_s: float = 2.0  # stream starts spread over this
    gap_s: tuple[float, float] = (0.3, 1.0)  # silence between utterances
    seed: int = 0
    finalize_timeout_s: float = 30.0
    kinds: list[StreamKind] | None = None  # stream k replays kinds[k % len(kinds)]; None: the whole pool


def make_floor(seconds: float, dbfs: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (dbfs / 20)).astype(np.float32)


def make_script(pool: list[UttAudio], cfg: LoadConfig, k: int, rng: np.random.Generator, floor: np.ndarray
                ) -> tuple[StreamScript, str]:
    """Stream ``k``'s script (its kind's utterances in a seeded order, rolled by ``k``) and the kind's name."""
    kind = cfg.kinds[k % len(cfg.kinds)] if cfg.kinds else StreamKind("all", np.arange(len(pool)))
    utts = np.asarray(kind.utts)
    order = np.roll(utts[rng.permutation(len(utts))], k)
    return StreamScript(pool, order, np.random.default_rng([cfg.seed, k]), kind.gap_s or cfg.gap_s, floor), kind.name


def run_load(engine: StreamingEngine, pool: list[UttAudio], cfg: LoadConfig,
             on_progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Drive ``cfg.streams`` paced streams through ``engine``; returns raw per-stream records + lag stats.

    The engine must have been created with ``on_event=collector`` where ``collector`` is the
    ``Collector`` passed back in the result (use ``make_engine_and_collector`` or set
    ``engine.on_event``)."""
    collector = engine.on_event
    if not isinstance(collector, Collector):
        raise ValueError("engine.on_event must be a loadgen.Collector")
    rng = np.random.default_rng(cfg.seed)
    floor = make_floor(3.0, -60.0, cfg.seed)
    chunk = cfg.chunk_ms * SR // 1000
    total = int(cfg.duration_s * SR) // chunk * chunk
    tracks = []
    for k in range(cfg.streams):
        script, kind = make_script(pool, cfg, k, rng, floor)
        tr = StreamTrack(f"s{k}", script, kind=kind)
        collector.tracks[tr.sid] = tr
        tracks.append(tr)
    lag = Histogram()
    behind = 0
    t0 = time.perf_counter() + 0.05
    heap: list[tuple[float, int]] = []
    for k, tr in enumerate(tracks):
        phase = rng.uniform(0, cfg.chunk_ms / 1000)
        tr.start = t0 + cfg.ramp_s * k / max(1, cfg.streams) + phase
        heap.append((tr.start + chunk / SR, k))
    heapq.heapify(heap)
    send_errors = 0
    last_progress = 0.0
    while heap:
        due, k = heap[0]
        now = time.perf_counter()
        if due > now:
            time.sleep(min(due - now, 0.005))
            continue
        heapq.heappop(heap)
        tr = tracks[k]
        if not tr.admitted:
            try:
                engine.add_stream(tr.sid, sample_rate=SR)
                tr.admitted = True
            except AdmissionError as e:
                tr.refused = e.kind
                tr.done = True
                continue
        audio = tr.script.read(chunk)
        lag_ms = 1e3 * (now - due)
        lag.add(lag_ms)
        if lag_ms > cfg.chunk_ms:
            behind += 1
        try:
            engine.process_chunk(tr.sid, audio, arrival_time=due)
        except StreamError as e:
            tr.error = tr.error or str(e)
            tr.done = True
            send_errors += 1
            continue
        tr.sent += chunk
        tr.chunks += 1
        if tr.sent >= total:
            tr.done = True
            tr.future = engine.finalize_stream(tr.sid)
        else:
            heapq.heappush(heap, (due + chunk / SR, k))
        if on_progress is not None and now - last_progress > 0.5:
            last_progress = now
            on_progress(now - t0)
    wall = time.perf_counter() - t0
    deadline = time.perf_counter() + cfg.finalize_timeout_s
    unfinished = 0
    for tr in tracks:
        if tr.future is not None:
            try:
                tr.future.result(timeout=max(0.01, deadline - time.perf_counter()))
            except Exception as e:
                tr.error = tr.error or f"finalize: {type(e).__name__}: {e}"
                unfinished += 1
    drain_s = time.perf_counter() - t0 - wall
    return {"tracks": tracks, "collector": collector, "lag": lag, "behind_chunks": behind, "wall_s": wall,
            "drain_s": drain_s, "send_errors": send_errors, "unfinished": unfinished, "total_samples": total}


def score_tracks(tracks: list[StreamTrack], pool: list[UttAudio], total_samples: int,
                 endpoint_silence_ms: float = 0.0) -> dict[str, Any]:
    """Per-utterance streaming results from the collected events and the reference timing.

    Finalization is timed two ways: from the end of speech (what a user waits, including the endpointer's
    required trailing silence) and from the endpoint itself (end of speech + that silence: the earliest
    moment any endpointer with this rule can decide, so what remains is the engine's own delay).

    A segment (one final) belongs to the utterance whose span [start, next start) holds its last
    character; its first partial to the utterance holding its first character. Only utterances whose
    audio was sent completely, on streams that were admitted, never failed and never had a chunk shed
    (shedding shifts sample positions), are scored.

    ``streams`` holds, per scored stream, its completed utterances in order and the concatenation of the
    finals they own: the unit WER is computed on. An endpointer that merges two utterances across a short
    pause (or splits one at a long one) moves words between neighbouring utterances without changing the
    stream's transcript; per-utterance scoring would count each moved word twice (a deletion here, an
    insertion there), the stream's transcript does not.
    """
    rows: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    first_partial_ms: list[float] = []
    final_ms: list[float] = []
    after_endpoint_ms: list[float] = []
    excluded_streams = 0
    for tr in tracks:
        if not tr.admitted or tr.error or tr.shed:
            excluded_streams += int(tr.admitted)
            continue
        spans = tr.script.spans  # every utterance begun; only those sent completely are scored
        if not spans:
            continue
        starts = np.array([s.start for s in spans])

        def owner(pos: int | None, starts: np.ndarray = starts) -> int | None:
            if pos is None:
                return None
            i = int(np.searchsorted(starts, pos, side="right")) - 1
            return i if i >= 0 else None

        texts: dict[int, list[str]] = {}
        committed: dict[int, list[str]] = {}
        last_final: dict[int, tuple[float, str | None]] = {}
        for f in tr.finals:
            _seg, text, _first, last, t, reason = f[:6]
            i = owner(last)
            if i is None or not text:
                continue
            texts.setdefault(i, []).append(text)
            if len(f) > 6 and f[6] is not None:
                committed.setdefault(i, []).append(f[6])
            last_final[i] = (t, reason)
        firsts: dict[int, float] = {}
        for _seg, (first, t) in sorted(tr.first_partials.items()):
            i = owner(first)
            if i is not None and i not in firsts:
                firsts[i] = t
        complete = [i for i, sp in enumerate(spans) if sp.end <= tr.sent]
        if complete:
            row_s = {"stream": tr.sid, "kind": tr.kind, "utts": [pool[spans[i].utt].id for i in complete],
                     "hyp": " ".join(t for i in complete for t in texts.get(i, []))}
            if committed:
                row_s["committed"] = " ".join(t for i in complete for t in committed.get(i, []))
            streams.append(row_s)
        for i, sp in enumerate(spans):
            if sp.end > tr.sent:
                continue
            u = pool[sp.utt]
            # scored by what the utterance is (a 1-stream level may replay real and synthetic speech)
            row: dict[str, Any] = {"utt": u.id, "stream": tr.sid, "kind": u.source, "hyp": " ".join(texts.get(i, []))}
            if committed:
                row["committed"] = " ".join(committed.get(i, []))
            onset_t = tr.start + (sp.start + u.onset) / SR
            end_t = tr.start + (sp.start + u.offset) / SR
            if i in firsts:
                row["first_partial_ms"] = 1e3 * (firsts[i] - onset_t)
                first_partial_ms.append(row["first_partial_ms"])
            if i in last_final:
                t, reason = last_final[i]
                row["final_reason"] = reason
                if reason in ("endpoint", "max_segment", "utterance_cap"):
                    row["finalization_ms"] = 1e3 * (t - end_t)
                    final_ms.append(row["finalization_ms"])
                    if reason == "endpoint":  # a max_segment final waited for no endpoint silence
                        row["finalization_after_endpoint_ms"] = row["finalization_ms"] - endpoint_silence_ms
                        after_endpoint_ms.append(row["finalization_after_endpoint_ms"])
            rows.append(row)
    return {"utterances": rows, "streams": streams, "first_partial_ms": first_partial_ms, "finalization_ms": final_ms,
            "finalization_after_endpoint_ms": after_endpoint_ms, "excluded_streams": excluded_streams}


def wer_counts(refs: list[str], hyps: list[str]) -> dict[str, Any]:
    """Corpus WER (total errors / total reference words) with S/D/I, via jiwer, both sides through Part 2's
    text normalizer (casing, punctuation, numbers spelled out), so a recognizer that writes "Could you...?"
    or "1900s" is scored on its words, as in Part 2."""
    import jiwer

    from speechbench.asr_eval.normalize import normalize_text

    if not refs:
        return {"wer": None, "words": 0}
    refs = [normalize_text(r) for r in refs]
    out = jiwer.process_words(refs, [normalize_text(h) if h else "" for h in hyps])
    words = out.substitutions + out.deletions + out.hits
    return {"wer": (out.substitutions + out.deletions + out.insertions) / max(1, words), "words": words,
            "substitutions": out.substitutions, "deletions": out.deletions, "insertions": out.insertions,
            "utterances": len(refs)}

