"""The CTC model's chunk step (log-mel features + ``forward_chunk``) as one TorchScript graph.

Why: the engine's scheduler thread shares the interpreter with whatever feeds it, an asyncio event loop
in the server or the load generator's pacing loop. Eager PyTorch releases the GIL inside each op and has
to take it back before the next, about 40 times per step, and each time it may wait up to the switch
interval behind the other thread's Python. A traced graph runs every op in C++ after one release.
Measured on this 2-core machine, one torch thread, a 200-stream step: 15 ms alone either way; beside a
thread running pure Python, 26-28 ms eager and 15 ms traced.

TorchScript is deprecated in torch 2.11 (it still works). Its successors do not fit here: torch.compile
on CPU needs a C++ toolchain at run time and checks its guards in Python each call; torch.export with
AOTInductor needs the same compiler. If the tracer goes away, the step falls back to eager and says why.

The trace is taken for one chunk length (the engine's chunks never change length) and any batch size;
``traced_chunk_step`` checks it against the eager step at three batch sizes and refuses it unless the
outputs are bit-identical (``tests/test_streaming_models.py`` checks whole streams the same way).
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn

from speechbench.asr.ctc.features import LogMel
from speechbench.asr.ctc.model import CTCModel, StreamState


class ChunkStep(nn.Module):
    """(B, overlap + chunk) audio + the four state tensors -> (B, t, vocab) log-probs + new state tensors."""

    def __init__(self, model: CTCModel, extractor: LogMel) -> None:
        super().__init__()
        self.model = model
        self.extractor = extractor

    def forward(self, audio: torch.Tensor, cache1: torch.Tensor, cache2: torch.Tensor, h: torch.Tensor,
                c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        lp, st = self.model.forward_chunk(self.extractor.frames(audio), StreamState(cache1, cache2, h, c))
        return lp, st.cache1, st.cache2, st.h, st.c


# One trace per (model, feature config, audio length): the benchmark builds a new engine per load level. The
# trace shares the model's parameter tensors, so in-place weight updates (load_state_dict) reach it.
_TRACES: weakref.WeakKeyDictionary[CTCModel, dict[tuple[str, int], torch.jit.ScriptModule]] = \
    weakref.WeakKeyDictionary()


def _example(model: CTCModel, batch: int, samples: int, device: torch.device, seed: int
             ) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    st = model.init_state(batch, device=device)
    audio = 0.1 * torch.randn(batch, samples, generator=g)
    states = [torch.randn(t.shape, generator=g) for t in (st.cache1, st.cache2, st.h, st.c)]
    return tuple(x.to(device) for x in (audio, *states))


@torch.no_grad()
def traced_chunk_step(model: CTCModel, extractor: LogMel, samples: int) -> torch.jit.ScriptModule:
    """The traced step for chunks of ``samples`` (window overlap included); RuntimeError if it is not
    bit-identical to the eager step."""
    key = (repr(extractor.cfg), samples)
    cached = _TRACES.get(model, {}).get(key)
    if cached is not None:
        return cached
    device = model.feat_mean.device
    eager = ChunkStep(model, extractor).eval()
    with warnings.catch_warnings():
        # The tracer warns about the shape checks in forward_chunk; they are constant for a fixed chunk.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
        traced = torch.jit.trace(eager, _example(model, 4, samples, device, 0), check_trace=False)
    for batch in (1, 3, 17):
        args = _example(model, batch, samples, device, batch)
        want, got = eager(*args), traced(*args)
        if not all(torch.equal(a, b) for a, b in zip(want, got, strict=True)):
            raise RuntimeError(f"traced CTC step differs from eager at batch {batch}")
    _TRACES.setdefault(model, {})[key] = traced
    return traced
