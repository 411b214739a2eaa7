"""The CTC model's whole chunk step as one TorchScript graph: gather the slots' states and window overlap,
log-mel features, ``forward_chunk``, scatter the states back, greedy symbols and the CTC collapse mask.

Why: the engine's scheduler thread shares the interpreter with whatever feeds it, an asyncio event loop
in the server or the load generator's pacing loop. Eager PyTorch releases the GIL inside each op and has
to take it back before the next, about 40 times per step, and each time it may wait up to the switch
interval behind the other thread's Python. A traced graph runs every op in C++ after one release.
Measured on this 2-core machine, one torch thread, a 200-stream step: 15 ms alone either way; beside a
thread running pure Python, 26-28 ms eager and 15 ms traced. The gather, scatter and CTC collapse around
the model were still ~20 eager ops a step; they are in the graph too, writing the slot pools in place.
Over WebSocket at 245 streams (old and new server alternated, two runs each): mean step 22.1 / 23.3 ->
21.4 / 21.2 ms, server-side mean chunk latency 66 / 69 -> 60 / 62 ms.

TorchScript is deprecated in torch 2.11 (it still works). Its successors do not fit here: torch.compile
on CPU needs a C++ toolchain at run time and checks its guards in Python each call; torch.export with
AOTInductor needs the same compiler. If the tracer goes away, the step falls back to eager and says why.

The trace is taken for one chunk length (the engine's chunks never change length), any batch size and any
pool size; ``traced_chunk_step`` checks it against the eager step at three batch sizes and refuses it unless
the outputs and the updated pools are bit-identical (``tests/test_streaming_models.py`` checks whole
streams the same way).
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn

from speechbench.asr.ctc.features import LogMel
from speechbench.asr.ctc.model import CTCModel, StreamState
from speechbench.asr.ctc.tokenizer import BLANK


class ChunkStep(nn.Module):
    """One step of B slots: (B,) slot indices, (B, chunk) new audio, and the slot pools (window overlap,
    the four model states, each slot's last frame symbol), updated in place for those slots ->
    (B, t, vocab) log-probs, (B, t) best symbols, (B, t) which symbols the CTC collapse keeps."""

    def __init__(self, model: CTCModel, extractor: LogMel, overlap: int) -> None:
        super().__init__()
        self.model = model
        self.extractor = extractor
        self.overlap = overlap

    def forward(self, idx: torch.Tensor, audio: torch.Tensor, ovl: torch.Tensor, cache1: torch.Tensor,
                cache2: torch.Tensor, h: torch.Tensor, c: torch.Tensor, prev: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.cat([ovl.index_select(0, idx), audio], dim=1)
        ovl.index_copy_(0, idx, x[:, -self.overlap:])
        pools = StreamState(cache1, cache2, h, c)
        lp, st = self.model.forward_chunk(self.extractor.frames(x), pools.select(idx))
        pools.scatter_(idx, st)
        ids = lp.argmax(-1)
        # a symbol is kept unless it is blank or repeats the frame before (the last chunk's last frame first)
        before = torch.cat([prev.index_select(0, idx)[:, None], ids[:, :-1]], dim=1)
        keep = (ids != BLANK) & (ids != before)
        prev.index_copy_(0, idx, ids[:, -1])
        return lp, ids, keep


# One trace per (model, feature config, chunk and overlap lengths): the benchmark builds a new engine per load
# level. The trace shares the model's parameter tensors, so in-place weight updates (load_state_dict) reach it.
_TRACES: weakref.WeakKeyDictionary[CTCModel, dict[tuple[str, int, int], torch.jit.ScriptModule]] = \
    weakref.WeakKeyDictionary()


POOL = 24  # slots of the example pools the trace is taken and checked on


def _example(model: CTCModel, batch: int, samples: int, overlap: int, device: torch.device, seed: int
             ) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    st = model.init_state(POOL, device=device)
    idx = torch.randperm(POOL, generator=g)[:batch]
    audio = 0.1 * torch.randn(batch, samples, generator=g)
    pools = [torch.randn(t.shape, generator=g) for t in (st.cache1, st.cache2, st.h, st.c)]
    ovl = 0.1 * torch.randn(POOL, overlap, generator=g)
    prev = torch.randint(0, model.cfg.vocab_size, (POOL,), generator=g)
    return tuple(x.to(device) for x in (idx, audio, ovl, *pools, prev))


@torch.no_grad()
def traced_chunk_step(model: CTCModel, extractor: LogMel, samples: int, overlap: int) -> torch.jit.ScriptModule:
    """The traced step for chunks of ``samples`` new samples after ``overlap`` of window context;
    RuntimeError unless its outputs and its in-place pool updates are bit-identical to the eager step's."""
    key = (repr(extractor.cfg), samples, overlap)
    cached = _TRACES.get(model, {}).get(key)
    if cached is not None:
        return cached
    device = model.feat_mean.device
    eager = ChunkStep(model, extractor, overlap).eval()
    with warnings.catch_warnings():
        # The tracer warns about the shape checks in forward_chunk; they are constant for a fixed chunk.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
        traced = torch.jit.trace(eager, _example(model, 4, samples, overlap, device, 0), check_trace=False)
    for batch in (1, 3, 17):
        args = _example(model, batch, samples, overlap, device, batch)
        mine = [a.clone() for a in args]
        want, got = eager(*args), traced(*mine)
        if not all(torch.equal(a, b) for a, b in zip((*want, *args), (*got, *mine), strict=True)):
            raise RuntimeError(f"traced CTC step differs from eager at batch {batch}")
    _TRACES.setdefault(model, {})[key] = traced
    return traced
