"""Whisper served as a streaming model: re-decode each stream's buffer, commit by LocalAgreement-2, and
batch the re-decodes of every ready stream into one encoder pass and one decoder search.

Whisper is not causal: it transcribes a window of up to 30 s at once. The usual way to stream it
(ufal/whisper_streaming) is to keep each stream's audio since its last segment end in a buffer, decode the
whole buffer again every ``chunk_ms`` (1 s by default, the engine's model chunk), and show the prefix that
two consecutive hypotheses agree on as committed text (``local_agreement``). WhisperLive and
whisper_streaming run one decode per client; here the engine's scheduler gathers every stream whose next
second is complete and this model decodes all of their buffers in one batched call
(``decode_batch``: the buffers' log-mel padded to the longest buffer of the batch, one encoder forward,
one greedy or beam generate): the continuous batching the CTC engine does per 40 ms chunk, at Whisper's
cadence.

Encoder window: Whisper was trained on 30 s windows, and faster-whisper pads every input to one. The
encoder's cost grows with the window (tiny.en int8, 2 threads, measured: 405 ms at 30 s, 75 ms at 10 s,
44 ms at 4 s), and a 1 s re-decode of a 3 s buffer padded to 30 s spends most of it on padding, so by
default (``window="fit"``) the batch is padded to its longest buffer plus ``pad_s`` of silence, rounded up
to whole seconds, as whisper.cpp's ``audio_ctx`` does. ``window="full"`` pads to 30 s like the offline
pass. The WER cost of the shorter window is measured, not assumed: Part 3 reports the streaming WER next
to the offline (30 s window) WER of the same recognizer on the same utterances.

Segmentation: the engine's VAD endpointer ends a segment after its silence rule; the final text is the
last hypothesis of the whole segment, committed whole. The buffer is trimmed at those segment ends rather
than at committed sentence ends (whisper_streaming's rule, which needs word timestamps from a per-stream
decode): a segment that reaches ``max_segment_s`` is finalized by the engine before the buffer outgrows one
Whisper window. Rows whose segment has no speech yet (VAD) are not decoded at all: Whisper tends to
hallucinate text on silence, and it saves the compute.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from speechbench.asr.whisper import WhisperRecognizer
from speechbench.streaming.models.base import StepOutput, StreamingModel
from speechbench.streaming.models.local_agreement import LocalAgreement, word_key

WINDOW_S = 30.0


def length_buckets(lengths: list[int], ratio: float, pad: int = 0) -> list[list[int]]:
    """Indices grouped by length so that in each group the longest input (plus ``pad``) is at most
    ``ratio`` times the shortest (plus ``pad``): a batch is padded to its longest buffer, and on a CPU the
    encoder's cost is its padded length, so mixing a 2 s buffer with a 9 s one wastes most of the 2 s
    row's work. ``ratio`` inf: one group."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] + pad <= ratio * (lengths[groups[-1][0]] + pad):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def cut_repetition(text: str, min_span: int = 3, min_short_repeats: int = 4) -> str:
    """Cut a decoding loop: from the first place where a span of ``min_span``+ words is immediately
    repeated (or a span of 1-2 words repeated ``min_short_repeats`` times), keep the first copy and drop
    the rest. A re-decode of a short buffer sometimes falls into one ("Light-inch truck met all oak tree
    during the night. Light-inch truck met all oak tree during the night. Light", measured on the default
    corpus); faster-whisper's transcribe() guards against it by a compression-ratio check and a re-decode
    at a higher temperature, which a batched step cannot afford per row."""
    words = text.split()
    keys = [word_key(w) for w in words]
    n = len(words)
    for i in range(n):
        for k in range(1, (n - i) // 2 + 1):
            if keys[i: i + k] != keys[i + k: i + 2 * k]:
                continue
            if k >= min_span:
                return " ".join(words[: i + k])
            reps = 2
            while keys[i + reps * k: i + (reps + 1) * k] == keys[i: i + k]:
                reps += 1
            if reps >= min_short_repeats:
                return " ".join(words[: i + k])
    return text


class WhisperLocalAgreement(StreamingModel):
    batching = "batched"
    default_chunk_ms = 1000  # the re-decode interval (whisper_streaming's --min-chunk-size default)
    default_max_wait_ms = 250.0
    min_join_ms = 500  # a stream with half a chunk of new audio joins a step formed for others
    # On a CPU the encoder is compute-bound and a batch costs its padded length: a step's rows are decoded
    # in length buckets (``length_buckets``), and steps hold at most 4 rows (measured, 2 cores, default
    # corpus: uncapped steps of 14 rows failed at 16 streams, p95 2.3 s; with buckets, steps of 4 computed
    # 12% less per audio second than one decode per stream at 20-24 streams).
    default_max_batch = 4
    max_segment_s = WINDOW_S - 2.0  # one window, with room for the last (padded) chunk

    def __init__(self, recognizer: WhisperRecognizer, agreement: int = 2, window: str = "fit",
                 pad_s: float = 1.0, name: str | None = None, bucket_ratio: float = 1.3) -> None:
        if window not in ("fit", "full"):
            raise ValueError(f"window must be 'fit' or 'full', got {window!r}")
        self.rec = recognizer
        self.agreement = agreement
        self.window = window
        self.pad_s = pad_s
        self.bucket_ratio = bucket_ratio  # rows of a step decode together when their lengths are this close
        self.name = name or recognizer.name
        self.params = recognizer.params
        self.precision = recognizer.precision
        self.backend = recognizer.backend

    def allocate(self, capacity: int, chunk_ms: int) -> None:
        if chunk_ms < 200:
            raise ValueError(f"model_chunk_ms {chunk_ms}: Whisper re-decodes its whole buffer every chunk; "
                             "below 200 ms the re-decodes cost more than they tell (use 500-2000)")
        self.chunk_ms = chunk_ms
        self.cap_samples = int(WINDOW_S * self.sample_rate)
        self.buf = np.zeros((capacity, self.cap_samples), dtype=np.float32)
        self.nbuf = np.zeros(capacity, dtype=np.int64)
        self.la = [LocalAgreement(self.agreement) for _ in range(capacity)]
        self.texts = [""] * capacity
        self.finals = 0  # segments finished, and how many of their finals changed committed words
        self.revised_finals = 0

    def reset(self, slots: list[int], new_stream: bool) -> None:
        for s in slots:
            self.nbuf[s] = 0
            self.la[s].reset()
            self.texts[s] = ""

    def text(self, slot: int) -> str:
        return self.texts[slot]

    def step(self, slots: np.ndarray, audio: np.ndarray, final: np.ndarray,
             speech: np.ndarray | None = None, lengths: np.ndarray | None = None) -> StepOutput:
        t0 = time.perf_counter()
        n = audio.shape[1]
        for r, s in enumerate(slots.tolist()):
            k = self.nbuf[s]
            # the engine finalizes before the buffer's cap bites (max_segment_s)
            take = min(n if lengths is None else int(lengths[r]), self.cap_samples - k)
            self.buf[s, k: k + take] = audio[r, :take]
            self.nbuf[s] = k + take
        rows = [r for r in range(len(slots)) if speech is None or speech[r]]
        t1 = time.perf_counter()
        bufs = [self.buf[slots[r], : self.nbuf[slots[r]]] for r in rows]
        hyps: list[str] = [""] * len(rows)
        pad = int(self.pad_s * self.sample_rate)
        for group in length_buckets([len(b) for b in bufs], self.bucket_ratio, pad):
            for i, hyp in zip(group, self.decode_batch([bufs[i] for i in group]), strict=True):
                hyps[i] = hyp
        t2 = time.perf_counter()
        changed = np.zeros(len(slots), dtype=bool)
        for r, hyp in zip(rows, hyps, strict=True):
            s = int(slots[r])
            la = self.la[s]
            if final[r]:
                text = la.finish(hyp)
                self.finals += 1
                self.revised_finals += la.revised
            else:
                committed, tentative = la.update(hyp)
                text = f"{committed} {tentative}".strip()
            changed[r] = text != self.texts[s]
            self.texts[s] = text
        t3 = time.perf_counter()
        return StepOutput([self.texts[int(s)] for s in slots], changed, None,
                          {"features": 1e3 * (t1 - t0), "model": 1e3 * (t2 - t1), "decode": 1e3 * (t3 - t2)})

    def decode_batch(self, audios: list[np.ndarray]) -> list[str]:
        """One encoder forward and one generate over several buffers (up to 30 s each)."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.rec.model
        fe = m.feature_extractor
        feats = [fe(a)[:, :-1] for a in audios]  # drop the padding frame, as transcribe() does
        full = fe.nb_max_frames  # 3000 frames = 30 s
        if self.window == "full":
            frames = full
        else:
            per_s = fe.sampling_rate // fe.hop_length  # 100 frames a second
            longest = max(f.shape[1] for f in feats) + int(self.pad_s * per_s)
            frames = min(full, -(-longest // per_s) * per_s)
        x = np.zeros((len(feats), feats[0].shape[0], frames), dtype=np.float32)
        for i, f in enumerate(feats):
            k = min(frames, f.shape[1])
            x[i, :, :k] = f[:, :k]  # the rest stays 0.0, the padding value of faster-whisper's pad_or_trim
        tok = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language="en")
        prompt = m.get_prompt(tok, previous_tokens=[], without_timestamps=True)
        enc = m.encode(x)
        # A few seconds of speech hold a few dozen tokens; a decode of a word or two sometimes falls into a
        # repetition loop ("She felt... She felt...") that would run to Whisper's 448-token limit (1.6 s
        # instead of 0.16 s, measured): cap the length by the longest buffer, 8 tokens a second plus 8.
        seconds = max(len(a) for a in audios) / fe.sampling_rate
        max_length = min(m.max_length, len(prompt) + 8 + int(8 * seconds))
        res = m.model.generate(enc, [list(prompt) for _ in feats], beam_size=self.rec.beam_size,
                               max_length=max_length, suppress_blank=True,
                               suppress_tokens=list(get_suppressed_tokens(tok, [-1])), return_scores=False)
        return [cut_repetition(tok.decode(r.sequences_ids[0]).strip()) for r in res]

    def committed(self, slot: int) -> str:
        return " ".join(self.la[slot].committed)

    def warmup(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        rng = np.random.default_rng(0)
        for b in batch_sizes[:2]:
            self.decode_batch([(1e-3 * rng.standard_normal(self.sample_rate)).astype(np.float32)] * b)

    def options(self) -> dict[str, Any]:
        return {"policy": f"LocalAgreement-{self.agreement}", "redecode_every_ms": self.chunk_ms,
                "length_bucket_ratio": self.bucket_ratio,
                "encoder_window": self.window, "window_pad_s": self.pad_s, "recognizer": self.rec.options()}
