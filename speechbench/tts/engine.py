"""The optimized TTS engine: a fixed pool of decode slots over preallocated caches.

Every scheduler (one-at-a-time, padded static batches, continuous batching) drives the same three
operations, so a technique's effect is the scheduler's alone:

* ``prefill(requests)``: encode newcomers' text together (padded, masked), compute their cross-attention
  K/V once, and place them in free slots.
* ``step()``: one decoder step for every active slot: one frame each, written into its own cache position.
* ``retire()``: hand back finished sequences (mel + vocoded audio) and compact the pool so the active
  slots stay 0..n-1; a finished sequence then costs no more work.

Caches are allocated once (``self_k/self_v``: layers x slots x heads x max_frames x head_dim), so a
step never reallocates; with ``static_shapes`` the step also reads the full cache length under a mask,
which gives the fixed shapes CUDA graphs / ``torch.compile(mode="reduce-overhead")`` need.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import torch

from speechbench.common.measure import synchronize
from speechbench.tts.cached_decoder import CachedDecoder
from speechbench.tts.length import LengthPolicy
from speechbench.tts.model import CharTokenizer, SimpleTTSModel, Tokenized, pad_batch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class TTSEngineConfig:
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast) | int8 (dynamic, CPU)
    num_slots: int = 1  # decode slots = the largest batch one step runs
    static_shapes: bool = False  # attend over the whole cache under a mask (fixed shapes for graphs)
    compile: bool = False  # torch.compile the step (reduce-overhead on CUDA); falls back to eager
    # Self-attention in up to two row groups, each read only up to its own longest prefix, when that cuts the
    # cache reads by a fifth or more (see attention_spans). Batched decode at hundreds of frames is bound by
    # reading the K/V cache, and one batched call pads every row to the pool's longest prefix.
    split_attention: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.num_slots < 1:
            raise ValueError("num_slots must be >= 1")


@dataclass
class Request:
    text: str
    request_id: int = 0
    arrival_s: float = 0.0  # offset from the start of a run (scheduler time)
    frames: int | None = None  # explicit output length (clamped to max_frames); None: the length policy


@dataclass
class Completed:
    request_id: int
    text: str
    mel: torch.Tensor  # (T, mel_dim) fp32 CPU
    audio: torch.Tensor  # (8T,)
    frames: int
    stop_step: int | None
    arrival_s: float = 0.0
    admitted_s: float = 0.0
    finished_s: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.arrival_s


@dataclass
class _Slot:
    request: Request
    tokenized: Tokenized
    target_frames: int
    text_len: int
    admitted_s: float
    stop_step: int | None = None
    done: bool = False


def attention_spans(positions: list[int], split: bool = True,
                    min_saving: float = 0.2) -> list[tuple[int, int, int, bool]]:
    """Row groups for one decode step's self-attention: ``(first_row, end_row, keys_read, masked)`` each.

    Row ``i`` attends to keys ``0..positions[i]``. One group reads ``n x (max + 1)`` keys. Continuous batching
    keeps the pool in admission order, so positions fall along the rows (the oldest sequence is furthest
    along), and two contiguous groups, each read to its own maximum, approach the ragged ideal with views
    only. Split at the row that reads least, when that saves at least ``min_saving`` of the reads.
    """
    n = len(positions)
    one = [(0, n, max(positions) + 1, min(positions) != max(positions))]
    if not split or n < 2:
        return one
    best_h, best_reads = 0, n * (max(positions) + 1)
    for h in range(1, n):
        reads = h * (max(positions[:h]) + 1) + (n - h) * (max(positions[h:]) + 1)
        if reads < best_reads:
            best_h, best_reads = h, reads
    if best_h == 0 or best_reads > (1 - min_saving) * n * (max(positions) + 1):
        return one
    a, b = positions[:best_h], positions[best_h:]
    return [(0, best_h, max(a) + 1, min(a) != max(a)), (best_h, n, max(b) + 1, min(b) != max(b))]


class TTSEngine:
    def __init__(
        self,
        model: SimpleTTSModel,
        config: TTSEngineConfig,
        length_policy: LengthPolicy | None = None,
        tokenizer: CharTokenizer | None = None,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.config = config
        self.length_policy = length_policy or LengthPolicy()
        self.tokenizer = tokenizer or CharTokenizer(model.config.vocab_size)
        # Keep only the encoder and vocoder: the decoder's weights live on (converted) in the cached decoder,
        # so a caller that drops the model frees the original fp32 decoder.
        self.model = EncoderVocoder(model.to(self.device).eval())
        self.notes: list[str] = []  # what had to fall back, said in the results
        self._autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        if config.precision == "fp16" and self.device.type == "cpu":
            raise ValueError("fp16 autocast is a GPU technique; on CPU use int8 or bf16")
        decoder = CachedDecoder(model).to(self.device).eval()
        if config.precision == "int8":
            if self.device.type != "cpu":
                raise ValueError("int8 dynamic quantization runs on CPU (fbgemm/x86); on GPU use fp16/bf16")
            # Dynamic int8: weights stored int8 (4x fewer bytes per step, which is what a memory-bound
            # decode step pays for), activations quantized per call; no calibration data needed.
            # torch.ao.quantization is deprecated in favour of torchao but still ships (and works) in
            # torch 2.11; torchao's int8 dynamic path is the migration when the pin moves.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                decoder = torch.ao.quantization.quantize_dynamic(decoder, {torch.nn.Linear}, dtype=torch.qint8,
                                                                   inplace=True)  # no deep copy first
        self.decoder = decoder
        self.cache_dtype = self._autocast_dtype or torch.float32
        self._alloc(config.num_slots, self.length_policy.max_frames, 64)
        self._step_fn = self._step_impl
        if config.compile:
            self._try_compile()

    # -- memory ----------------------------------------------------------------------------------------

    def _alloc(self, slots: int, max_frames: int, max_text: int) -> None:
        d = self.decoder
        shape = (d.num_layers, slots, d.num_heads, max_frames, d.head_dim)
        kw = {"device": self.device, "dtype": self.cache_dtype}
        self.self_k = torch.zeros(shape, **kw)
        self.self_v = torch.zeros(shape, **kw)
        self.cross_k = torch.zeros(d.num_layers, slots, d.num_heads, max_text, d.head_dim, **kw)
        self.cross_v = torch.zeros_like(self.cross_k)
        self.cross_valid = torch.zeros(slots, max_text, dtype=torch.bool, device=self.device)
        self.pos = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.prev_frame = torch.zeros(slots, d.mel_dim, device=self.device)
        self.out_mel = torch.zeros(slots, max_frames, d.mel_dim, device=self.device)
        self.slots: list[_Slot] = []  # active slots, in slot order 0..n-1
        self.max_frames, self.max_text = max_frames, max_text

    def _grow_text_capacity(self, needed: int) -> None:
        """Cross caches grow (rarely) to the longest text seen, instead of allocating the worst case."""
        if needed <= self.max_text:
            return
        new = max(needed, 2 * self.max_text)
        d = self.decoder
        ck = torch.zeros(d.num_layers, self.config.num_slots, d.num_heads, new, d.head_dim,
                         device=self.device, dtype=self.cache_dtype)
        cv = torch.zeros_like(ck)
        valid = torch.zeros(self.config.num_slots, new, dtype=torch.bool, device=self.device)
        ck[..., : self.max_text, :] = self.cross_k
        cv[..., : self.max_text, :] = self.cross_v
        valid[:, : self.max_text] = self.cross_valid
        self.cross_k, self.cross_v, self.cross_valid, self.max_text = ck, cv, valid, new

    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.self_k, self.self_v, self.cross_k, self.cross_v))

    def decode_weight_bytes(self) -> int:
        return self.decoder.decode_weight_bytes()

    def weight_bytes(self) -> int:
        """All weights the engine holds: encoder and vocoder (fp32) plus the decoder in its precision."""
        from speechbench.tts.cached_decoder import _module_weight_bytes

        return (sum(p.numel() * p.element_size() for p in self.model.parameters())
                + sum(_module_weight_bytes(m) for m in self.decoder.modules()))

    # -- the three operations ----------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        return self.config.num_slots - len(self.slots)

    @property
    def active(self) -> int:
        return len(self.slots)

    def _autocast(self):
        if self._autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def expected_frames(self, request: Request) -> int:
        """The output length ``prefill`` will give this request (its explicit length, else the length
        policy's), clamped to the cache: what a server's length predictor would tell its batcher."""
        return self._target_frames(request, len(self.tokenizer(request.text).ids))

    def _target_frames(self, request: Request, n_tokens: int) -> int:
        target = self.length_policy.frames_for(n_tokens) if request.frames is None else request.frames
        return max(1, min(target, self.max_frames))

    @torch.inference_mode()
    def prefill(self, requests: list[Request], now_s: float = 0.0) -> None:
        """Tokenize, encode and place ``requests`` into free slots (raises if they do not fit)."""
        if len(requests) > self.free_slots:
            raise RuntimeError(f"prefill of {len(requests)} requests with only {self.free_slots} free slots")
        if not requests:
            return
        toks = [self.tokenizer(r.text) for r in requests]
        lens = [len(t.ids) for t in toks]
        self._grow_text_capacity(max(lens))
        tokens, pad = pad_batch([t.ids for t in toks], self.device)
        with self._autocast():
            # A single text gets no padding mask: the same call as the reference, so fp32 is bit-exact.
            memory = self.model.encode_text(tokens, pad if len(toks) > 1 else None)
            first = len(self.slots)
            idx = torch.arange(first, first + len(toks), device=self.device)
            s = tokens.size(1)
            for layer_i, layer in enumerate(self.decoder.layers):
                k, v = layer.cross_kv(memory)
                self.cross_k[layer_i, idx, :, :s] = k.to(self.cache_dtype)
                self.cross_v[layer_i, idx, :, :s] = v.to(self.cache_dtype)
        self.cross_valid[idx] = False
        self.cross_valid[idx, :s] = ~pad
        self.pos[idx] = 0
        self.prev_frame[idx] = 0.0  # the seed starts every sequence from an all-zero frame
        for r, t, n in zip(requests, toks, lens, strict=True):
            self.slots.append(_Slot(r, t, self._target_frames(r, n), n, admitted_s=now_s))

    def _step_impl(
        self, n: int, s_used: int, cross_masked: bool, spans: list[tuple[int, int, int, bool]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step for slots 0..n-1; ``spans`` are attention_spans' row groups."""
        rows = torch.arange(n, device=self.device)
        pos = self.pos[:n]
        # A mask costs a `where` per attention call; skip it when every key is visible anyway (one
        # sequence, or all at the same position / same text length), which is the common B=1 case.
        # Masks are built once per step as additive float masks (0 / -inf) and shared by all layers:
        # a boolean mask would be converted inside every attention call.
        cross_mask = None
        dtype = self.cache_dtype
        self_attn = []  # (first row, end row, keys read, mask) per row group
        for r0, r1, t, masked in spans:
            mask = None
            if masked:
                key_pos = torch.arange(t, device=self.device)
                visible = (key_pos[None, :] <= pos[r0:r1, None])[:, None, None, :]
                mask = torch.zeros(visible.shape, dtype=dtype, device=self.device).masked_fill_(~visible, float("-inf"))
            self_attn.append((r0, r1, t, mask))
        if cross_masked:
            valid = self.cross_valid[:n, None, None, :s_used]
            cross_mask = torch.zeros(valid.shape, dtype=dtype, device=self.device).masked_fill_(~valid, float("-inf"))
        d = self.decoder
        x = d.mel_embedding(self.prev_frame[:n]).unsqueeze(1)
        for li, layer in enumerate(d.layers):
            x = layer(
                x, self.self_k[li], self.self_v[li], rows, pos, self_attn,
                self.cross_k[li, :n, :, :s_used], self.cross_v[li, :n, :, :s_used], cross_mask,
            )
        h = d.final_norm(x[:, 0])
        return d.mel_projection(h).float(), d.stop_token(h).float().squeeze(-1)

    @torch.inference_mode()
    def step(self) -> int:
        """Decode one frame for every active slot; returns how many slots stepped."""
        n = len(self.slots)
        if n == 0:
            return 0
        if self.config.static_shapes:  # fixed shapes for graph capture: always the full, masked cache
            s_used, cross_masked = self.max_text, True
            spans = [(0, n, self.max_frames, True)]
        else:
            spans = attention_spans(self.pos[:n].tolist(), self.config.split_attention)
            lens = [s.text_len for s in self.slots]
            s_used = max(lens)
            cross_masked = min(lens) != s_used
        with self._autocast():
            mel, stop_logit = self._step_fn(n, s_used, cross_masked, spans)
        rows = torch.arange(n, device=self.device)
        self.out_mel[rows, self.pos[:n]] = mel
        self.prev_frame[:n] = mel
        self.pos[:n] += 1
        stop_fired = (torch.sigmoid(stop_logit) > self.length_policy.stop_threshold).tolist()
        positions = self.pos[:n].tolist()
        for slot, fired, p in zip(self.slots, stop_fired, positions, strict=True):
            if fired and slot.stop_step is None:
                slot.stop_step = p - 1
            if p >= slot.target_frames or (fired and self.length_policy.honor_stop):
                slot.done = True
        return n

    @torch.inference_mode()
    def retire(self, now_fn=time.perf_counter, t0: float = 0.0, vocode: bool = True) -> list[Completed]:
        """Remove finished sequences, vocode them, and compact the pool (last active slot moves down).
        ``vocode=False``: a streamer has already sent their audio in chunks (``audio`` is left empty)."""
        done_idx = [i for i, s in enumerate(self.slots) if s.done]
        if not done_idx:
            return []
        mels = [self.out_mel[i, : int(self.pos[i])].clone() for i in done_idx]
        with self._autocast():
            audios = ([self.model.vocoder_inference(m.unsqueeze(0))[0] for m in mels] if vocode
                      else [torch.zeros(0) for _ in mels])
        synchronize(self.device)
        finished = now_fn() - t0
        out = []
        for i, mel, audio in zip(done_idx, mels, audios, strict=True):
            s = self.slots[i]
            out.append(Completed(
                request_id=s.request.request_id, text=s.tokenized.text, mel=mel.float().cpu(),
                audio=audio.float().cpu(), frames=mel.size(0), stop_step=s.stop_step,
                arrival_s=s.request.arrival_s, admitted_s=s.admitted_s, finished_s=finished,
                meta={"truncated_from": s.tokenized.truncated_from, "non_ascii": s.tokenized.non_ascii},
            ))
        # Compact in order (each kept sequence moves down past the retired ones): the pool stays in admission
        # order, so positions fall along the rows, which is what lets attention_spans group them. Moving
        # down in increasing order never overwrites a kept slot that has not moved yet.
        keep = [i for i, s in enumerate(self.slots) if not s.done]
        for dst, src in enumerate(keep):
            if dst != src:
                self._move_slot(src, dst)
        self.slots = [self.slots[i] for i in keep]
        return out

    def _move_slot(self, src: int, dst: int) -> None:
        """Copy one sequence's state to another slot (on retirements, not per step): its frames so far."""
        p = int(self.pos[src])
        for t in (self.self_k, self.self_v):
            t[:, dst, :, :p] = t[:, src, :, :p]
        for t in (self.cross_k, self.cross_v):
            t[:, dst] = t[:, src]
        self.out_mel[dst, :p] = self.out_mel[src, :p]
        for t in (self.cross_valid, self.pos, self.prev_frame):
            t[dst] = t[src]

    # -- convenience -----------------------------------------------------------------------------------

    def synthesize(self, text: str) -> Completed:
        """One text alone (uses slot 0)."""
        return self.synthesize_batch([text])[0]

    def synthesize_batch(self, texts: list[str]) -> list[Completed]:
        """A padded static batch: all texts start together and the batch runs until the longest ends."""
        if len(texts) > self.config.num_slots:
            raise ValueError(f"batch of {len(texts)} > num_slots={self.config.num_slots}")
        if self.slots:
            raise RuntimeError("engine is busy: synthesize_batch needs an idle engine")
        t0 = time.perf_counter()
        self.prefill([Request(t, i) for i, t in enumerate(texts)])
        # Static batching: finished sequences keep their slot (and cost) until the whole batch is done.
        while not all(s.done for s in self.slots):
            self._step_static_batch()
        done = self.retire(t0=t0)
        return sorted(done, key=lambda c: c.request_id)

    def _step_static_batch(self) -> None:
        """A step in which already-finished sequences still run (their extra frames are discarded)."""
        finished = [(s.done, int(self.pos[i])) for i, s in enumerate(self.slots)]
        self.step()
        for (was_done, p), slot, i in zip(finished, self.slots, range(len(self.slots)), strict=True):
            if was_done:  # roll back the padding frame so the output keeps its own length
                self.pos[i] = p
                slot.done = True

    # -- compile ---------------------------------------------------------------------------------------

    def _try_compile(self) -> None:
        """torch.compile the step; any failure (no compiler, unsupported op) falls back to eager, said aloud."""
        mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        try:
            compiled = torch.compile(self._step_impl, mode=mode, dynamic=False)
            self._step_fn = compiled
            self.notes.append(f"torch.compile(mode={mode!r}) enabled for the decode step")
        except Exception as e:  # pragma: no cover - depends on the platform
            self._step_fn = self._step_impl
            self.notes.append(f"torch.compile failed ({type(e).__name__}: {e}); running eager")
            log.warning("torch.compile failed, falling back to eager: %s", e)

    def warmup_compiled(self, text: str = "warm up") -> None:
        """Run one request so compilation (and its possible failure) happens before timing."""
        # `is` would not do: every `self._step_impl` access makes a new bound-method object.
        if self._step_fn == self._step_impl:
            return
        try:
            self.synthesize(text)
        except Exception as e:
            self._step_fn = self._step_impl
            self.slots.clear()
            self.notes.append(f"compiled step failed at first run ({type(e).__name__}: {e}); running eager")
            log.warning("compiled decode step failed, falling back to eager: %s", e)


class EncoderVocoder(torch.nn.Module):
    """The parts of SimpleTTSModel the engine runs outside the decode loop (shared, not copied)."""

    def __init__(self, model: SimpleTTSModel):
        super().__init__()
        self.config, self.mel_dim = model.config, model.mel_dim
        self.text_embedding, self.text_encoder, self.vocoder = model.text_embedding, model.text_encoder, model.vocoder

    encode_text = SimpleTTSModel.encode_text
    vocoder_inference = SimpleTTSModel.vocoder_inference
