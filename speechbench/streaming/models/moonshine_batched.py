"""Moonshine (tiny or base) as a streaming model: every ready stream's utterance re-decoded in one batched
call per step, text committed by LocalAgreement-2, utterances capped at a pause.

Moonshine is not causal (its encoder attends over the whole input), so a stream is served the way
Moonshine's own streaming API and whisper_streaming serve such models: keep the audio of the utterance in
progress, re-transcribe all of it every update interval (the engine's model chunk: ``chunk_ms``), show the
words two consecutive hypotheses agree on as committed and the rest as tentative (``local_agreement``).
Moonshine's library does this one stream at a time; here the scheduler gathers every stream whose next
interval is complete and the step decodes all of their buffers through ``MoonshineOnnx``: one encoder call
and one batched greedy decode (KV cache, each row stopping at its own end token) per group of buffers of
equal length. Only equal lengths batch exactly (see ``asr/moonshine_onnx.py``: padding changes tokens), and
they are common: a buffer grows by whole intervals, so two streams that have spoken for the same number
of intervals decode together.

Why LocalAgreement-2 for committing: it is the published policy for re-decoding streaming (Macháček et al.
2023), it needs no timestamps (Moonshine has none), and a word is shown as final only once two decodes
with different right context agree on it. The final of an utterance is the decode of all of it (most
context), which may revise committed words; the step records the committed text just before that decode
(``committed``), so the benchmark can score what a reader of partials was promised, and counts revisions.

Bounded cost under continuous speech: the cost of an update grows with the buffer (the encoder is
compute-bound: ~8 ms per second of audio on one core), so a talker who never pauses would make every
update slower. Two rules bound it: before the utterance has speech, only the last ``lead_s`` of audio is
kept (silence is not re-encoded); and once a buffer passes ``max_utterance_s`` the model ends the
utterance itself at the quietest 100 ms of its last ``cut_search_s`` (``speech/pauses.py``), finalizes the
part before the cut and carries the rest into the next utterance, so no audio is lost and words are not
cut whenever the speaker paused at all.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from speechbench.asr.moonshine_batch import MoonshineBatch
from speechbench.speech.pauses import best_pause
from speechbench.streaming.models.base import StepOutput, StreamingModel
from speechbench.streaming.models.local_agreement import TokenAgreement


class MoonshineRedecode(StreamingModel):
    batching = "batched"
    default_chunk_ms = 640  # the update interval (the measured frontier: docs/streaming_report.md)
    # A step formed for some streams waits this long for others to complete their interval: more rows,
    # and more rows of equal length, per call.
    default_max_wait_ms = 80.0
    max_segment_s = None  # the model cuts long utterances itself (max_utterance_s), at a pause
    drains_queue = True  # an update re-decodes the utterance whatever is new: take all queued audio
    uses_trailing_silence = True  # a partial whose new audio is all silence is not re-decoded

    def __init__(self, model: str = "moonshine-tiny", threads: int | None = None, agreement: int = 2,
                 max_utterance_s: float = 12.0, cut_search_s: float = 4.0, lead_s: float = 0.3,
                 max_tokens_per_s: float = 13.0, final: str = "full", decoder: str = "auto",
                 partial_new_tokens: int = 4, update_ms: int | None = None, name: str | None = None) -> None:
        from speechbench.asr.moonshine import count_ort_params

        if not 0 < cut_search_s < max_utterance_s:
            raise ValueError("cut_search_s must be positive and shorter than max_utterance_s")
        if final not in ("prefix", "full"):
            raise ValueError(f"final must be 'prefix' or 'full', got {final!r}")
        self.batch = MoonshineBatch(model, threads, max_tokens_per_s, decoder)
        self.model = model
        self.name = name or model
        path = self.batch.path
        self.params = count_ort_params([path / "encoder_model.ort", path / "decoder_model_merged.ort"])
        self.precision = "int8 weights"
        self.backend = (f"onnxruntime encoder + {self.batch.decoder_kind} decoder ({model}), batched re-decode")
        self.agreement = agreement
        self.max_utterance_s = max_utterance_s
        self.cut_search_s = cut_search_s
        self.lead_s = lead_s
        # Forcing the committed tokens as the decoder's prefix needs the torch decoder; the ONNX one re-decodes.
        self.forced = self.batch.decoder_kind == "torch"
        # The update interval when the engine does not set one: base through ONNX Runtime decodes one token
        # per call per equal-length group (~40 ms a token at one row, measured), 6x tiny's cost: at 640 ms it
        # could not keep up with one stream of real speech, so it updates every 1.28 s.
        self.default_chunk_ms = update_ms or (self.default_chunk_ms if self.forced else 1280)
        self.final = final if self.forced else "full"
        # A partial update decodes at most this many tokens past the ones it kept from the last hypothesis:
        # its new audio (one interval) holds a few words; more is a decoding loop, which would make every row
        # of the step wait for it. Finals decode to the end.
        self.partial_new_tokens = partial_new_tokens

    # -- slot state -----------------------------------------------------------------------------------------

    def allocate(self, capacity: int, chunk_ms: int) -> None:
        if chunk_ms < 80:
            raise ValueError(f"model_chunk_ms {chunk_ms}: Moonshine re-decodes its whole utterance every chunk; "
                             "below 80 ms the re-decodes cost more than they tell (use 160-1000)")
        self.chunk_ms = chunk_ms
        # A stream with half an interval of new audio joins a step formed for others (see StreamingModel):
        # streams fall into phase, so most steps decode most streams in one batched call.
        self.min_join_ms = chunk_ms // 2
        sr = self.sample_rate
        self.cap = int(self.max_utterance_s * sr)
        self.search = int(self.cut_search_s * sr)
        chunk = self.chunk_samples
        self.lead = int(self.lead_s * sr)
        self.room = self.cap + 4 * chunk + sr  # a buffer's usual most (_buffer grows one that needs more)
        self.buf: list[np.ndarray | None] = [None] * capacity  # allocated on a slot's first audio
        self.nbuf = np.zeros(capacity, dtype=np.int64)
        self.carried = np.zeros(capacity, dtype=np.int64)  # samples carried over from a cut utterance
        self.commit_at = np.zeros(capacity, dtype=np.int64)  # buffer length when the commit last grew
        self.carry: list[np.ndarray | None] = [None] * capacity
        self.la = [TokenAgreement(self.batch.starts_word, self.agreement) for _ in range(capacity)]
        self.texts = [""] * capacity
        self.finals = 0
        self.revised_finals = 0
        self.cuts = 0
        self.skipped = 0  # partial updates skipped: their new audio held no speech

    def reset(self, slots: list[int], new_stream: bool) -> None:
        for s in slots:
            tail = None if new_stream else self.carry[s]
            self.carry[s] = None
            if tail is not None:  # an utterance the model cut: its rest starts the next one
                self._buffer(s)[: len(tail)] = tail
                self.nbuf[s] = self.carried[s] = len(tail)
            else:
                self.nbuf[s] = self.carried[s] = 0
            self.la[s].reset()
            self.commit_at[s] = 0
            self.texts[s] = ""

    def _buffer(self, s: int, need: int = 0) -> np.ndarray:
        """Slot ``s``'s buffer, holding at least ``need`` samples (grown, never cut: no audio is dropped)."""
        b = self.buf[s]
        if b is None or len(b) < need:
            grown = np.zeros(max(self.room, need + self.sample_rate), dtype=np.float32)
            if b is not None:
                grown[: len(b)] = b
            b = self.buf[s] = grown
        return b

    def text(self, slot: int) -> str:
        return self.texts[slot]

    # -- one step -------------------------------------------------------------------------------------------

    def step(self, slots: np.ndarray, audio: np.ndarray, final: np.ndarray,
             speech: np.ndarray | None = None, lengths: np.ndarray | None = None,
             trailing_ms: np.ndarray | None = None) -> StepOutput:
        t0 = time.perf_counter()
        n_rows = len(slots)
        todo: list[tuple[int, int, int]] = []  # (row, slot, samples to decode)
        cut_rows: set[int] = set()
        for r, s in enumerate(slots.tolist()):
            n = audio.shape[1] if lengths is None else int(lengths[r])
            k = int(self.nbuf[s])
            b = self._buffer(s, k + n)
            b[k: k + n] = audio[r, :n]
            k += n
            said = speech is None or bool(speech[r]) or self.carried[s] > 0
            if not said and not final[r]:
                if k > self.lead:  # nothing said yet: keep only the lead-in (silence is not re-encoded)
                    b[: self.lead] = b[k - self.lead: k]
                    k = self.lead
                self.nbuf[s] = k
                continue
            self.nbuf[s] = k
            if not said:
                continue  # a final with no speech in the segment: nothing to decode (no hallucination)
            if (trailing_ms is not None and not final[r] and self.texts[s] and k <= self.cap
                    and trailing_ms[r] * self.sample_rate >= 1000 * n):
                # The new audio is all silence (most often the pause before an endpoint): the words cannot
                # have grown, and the final that the endpoint brings re-decodes anyway. Skipping these rows
                # saved ~1 update in 5 under load.
                self.skipped += 1
                continue
            if k > self.cap and not final[r]:
                cut = best_pause(b[:k], self.cap - self.search, self.cap)
                self.carry[s] = b[cut:k].copy()
                cut_rows.add(r)
                todo.append((r, s, cut))
            else:
                todo.append((r, s, k))
        t1 = time.perf_counter()
        st = self.batch.stats
        enc0, dec0 = st["encoder_ms"], st["decoder_ms"]
        ends_now = [final[r] or r in cut_rows for r, _, _ in todo]
        prefixes = max_new = None
        if self.forced:  # each row continues its committed tokens; a final re-decodes whole if final="full"
            prefixes = [[] if end and self.final == "full" else self.la[s].committed
                        for (_, s, _), end in zip(todo, ends_now, strict=True)]
            # A partial's tail covers the audio since the commit last grew (plus the interval the commit lags):
            # more tokens than that audio can hold are a decoding loop ("...of times. It was the best of
            # times. It was the best of times."), which would make every row of the step wait for it.
            max_new = [None if end else self.batch.max_tokens(k - int(self.commit_at[s]) + 2 * self.chunk_samples)
                       for (_, s, k), end in zip(todo, ends_now, strict=True)]
        drafts = None
        if self.forced:  # the last tentative tokens are a good guess of this decode's: verified in one call
            drafts = [self.la[s].tokens if end and self.final == "full" else self.la[s].tail
                      for (_, s, _), end in zip(todo, ends_now, strict=True)]
        extra = [None if end else self.partial_new_tokens for end in ends_now] if self.forced else None
        tokens = self.batch.decode([self._buffer(s)[:k] for _, s, k in todo], prefixes, max_new, drafts, extra) \
            if todo else []
        t2 = time.perf_counter()
        changed = np.zeros(n_rows, dtype=bool)
        ends = np.zeros(n_rows, dtype=bool)
        committed: list[str | None] = [None] * n_rows
        decode = self.batch.tokenizer.decode
        for (r, s, _), toks, end in zip(todo, tokens, ends_now, strict=True):
            la = self.la[s]
            if end:
                committed[r] = decode(la.committed)
                text = decode(la.finish(toks))
                self.finals += 1
                self.revised_finals += la.revised
                ends[r] = r in cut_rows
                self.cuts += r in cut_rows
            else:
                before = len(la.committed)
                la.update(toks)
                if len(la.committed) > before:
                    self.commit_at[s] = self.nbuf[s]
                text = decode(la.tokens)
            changed[r] = text != self.texts[s]
            self.texts[s] = text
        for r, s in enumerate(slots.tolist()):
            if final[r] and committed[r] is None:
                committed[r] = decode(self.la[s].committed)
        t3 = time.perf_counter()
        return StepOutput([self.texts[int(s)] for s in slots], changed, None,
                          {"buffers": 1e3 * (t1 - t0), "encoder": st["encoder_ms"] - enc0,
                           "decoder": st["decoder_ms"] - dec0, "model": 1e3 * (t2 - t1), "commit": 1e3 * (t3 - t2)},
                          ends=ends if cut_rows else None, committed=committed)

    # -- the rest of the interface --------------------------------------------------------------------------

    def warmup(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        rng = np.random.default_rng(0)
        for b in batch_sizes[:2]:
            x = [(1e-3 * rng.standard_normal(self.sample_rate)).astype(np.float32) for _ in range(b)]
            self.batch.decode(x, [[]] * b if self.forced else None)
        for k in self.batch.stats:
            self.batch.stats[k] = 0 if isinstance(self.batch.stats[k], int) else 0.0

    def options(self) -> dict[str, Any]:
        return {"policy": f"LocalAgreement-{self.agreement} on tokens, whole words"
                          + (", committed tokens forced as the decoder's prefix" if self.forced else ""),
                "final": self.final, "redecode_every_ms": self.chunk_ms or self.default_chunk_ms,
                "max_utterance_s": self.max_utterance_s, "cut_search_s": self.cut_search_s, "lead_s": self.lead_s,
                "decoder": self.batch.decoder_kind, "threads": self.batch.threads,
                "partial_new_tokens": self.partial_new_tokens,
                "max_tokens_per_s": self.batch.onnx.max_tokens_per_s}

    def cost_stats(self) -> dict[str, Any]:
        out = {**self.batch.stats, "utterance_cuts": self.cuts, "silent_updates_skipped": self.skipped}
        if self.batch.torch_decoder is not None:
            out["draft_tokens"], out["draft_accepted"] = self.batch.torch_decoder.draft_stats
        return out
