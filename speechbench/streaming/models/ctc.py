"""The project's own causal CTC model as a ``StreamingModel``: one batched forward per step.

Per slot: the model's conv caches and LSTM state (``StreamState``, gathered and scattered by slot), the
feature front end's window overlap (240 samples of the previous chunk each 25 ms window reaches back
into), the greedy decoder's last frame symbol (so a repeat across a chunk boundary collapses), and the
symbols of the current segment. A step computes log-mel for every row in one call, gathers the states,
runs one ``forward_chunk``, scatters them back and greedy-decodes: exactly the offline greedy pass, chunk
by chunk (tested), because features, convolutions and LSTM are all causal.

Trained on synthetic speech only (espeak-ng accents and one Piper voice): on human recordings these
models score 96-100% WER (models/README.md). They are the small, fast, trainable family.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from speechbench.asr.ctc.features import FeatureConfig, LogMel
from speechbench.asr.ctc.model import CTCModel
from speechbench.asr.ctc.tokenizer import BLANK, Tokenizer
from speechbench.streaming.models import ctc_graph
from speechbench.streaming.models.base import StepOutput, StreamingModel


class CTCStreamingModel(StreamingModel):
    batching = "batched"
    exact = True
    needs_final_step = False  # every step's text is already final: no flush step at the end

    def __init__(self, model: CTCModel, feat_cfg: FeatureConfig, tokenizer: Tokenizer | None = None,
                 device: str | torch.device = "cpu", name: str | None = None, graph: bool = True) -> None:
        if not model.cfg.causal:
            raise ValueError(f"model {model.cfg.name!r} is not causal; a streaming engine needs a causal model")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.feat_cfg = feat_cfg
        self.sample_rate = feat_cfg.sample_rate
        self.extractor = LogMel(feat_cfg).to(self.device)
        self.tokenizer = tokenizer or Tokenizer()
        self.name = name or model.cfg.name
        self.params = model.num_params
        self.precision = "float32"
        self.backend = f"torch {torch.__version__}"
        self.frame_ms = 1000 * feat_cfg.hop_length * model.subsampling / feat_cfg.sample_rate
        self.default_chunk_ms = int(max(40, self.frame_ms))
        self.overlap = feat_cfg.left_context
        # graph: run the step (ctc_graph.ChunkStep: gather, features, forward_chunk, scatter, collapse) as one
        # traced TorchScript graph (the step then holds the GIL once, not once per op); False or a failed
        # trace: the same module, eager.
        self.use_graph = graph
        self.eager_step = ctc_graph.ChunkStep(self.model, self.extractor, self.overlap).eval()
        self.graph: torch.jit.ScriptModule | None = None
        self.graph_error: str | None = None
        # testing/debugging hook: called with (slots, log-probs) of every step
        self.tap: Callable[[np.ndarray, torch.Tensor], None] | None = None

    def allocate(self, capacity: int, chunk_ms: int) -> None:
        samples = chunk_ms * self.sample_rate // 1000
        if samples % self.feat_cfg.hop_length:
            raise ValueError("model chunk must be a whole number of feature hops")
        if (samples // self.feat_cfg.hop_length) % self.model.subsampling:
            raise ValueError(f"model_chunk_ms {chunk_ms} is not a multiple of the model's output frame "
                             f"({self.frame_ms:g} ms): state shapes would change between chunks")
        self.chunk_ms = chunk_ms
        with torch.no_grad():
            self.pool = self.model.init_state(capacity, device=self.device)
        self.ovl = torch.zeros(capacity, self.overlap, device=self.device)
        self.prev = torch.full((capacity,), BLANK, dtype=torch.long, device=self.device)
        self.ids: list[list[int]] = [[] for _ in range(capacity)]
        self.texts = [""] * capacity
        if self.use_graph:
            try:
                self.graph = ctc_graph.traced_chunk_step(self.model, self.extractor, samples, self.overlap)
            except Exception as e:  # not bit-identical, not traceable, or no tracer: stay eager, say why
                self.graph, self.graph_error = None, f"{type(e).__name__}: {e}"

    def reset(self, slots: list[int], new_stream: bool) -> None:
        idx = torch.tensor(slots, dtype=torch.long, device=self.device)
        for t in (self.pool.cache1, self.pool.cache2):
            t.index_fill_(0, idx, 0.0)
        for t in (self.pool.h, self.pool.c):
            t.index_fill_(1, idx, 0.0)
        self.prev.index_fill_(0, idx, BLANK)
        if new_stream:  # a new stream's audio starts from zeros; a new segment's follows real audio
            self.ovl.index_fill_(0, idx, 0.0)
        for s in slots:
            self.ids[s] = []
            self.texts[s] = ""

    def text(self, slot: int) -> str:
        return self.texts[slot]

    @torch.no_grad()
    def step(self, slots: np.ndarray, audio: np.ndarray, final: np.ndarray,
             speech: np.ndarray | None = None, lengths: np.ndarray | None = None) -> StepOutput:
        t0 = time.perf_counter()
        idx = torch.from_numpy(slots).to(self.device)
        new = torch.from_numpy(audio).to(self.device)
        step = self.graph if self.graph is not None and new.shape[1] == self.chunk_samples else self.eager_step
        t1 = time.perf_counter()  # features, the model and the CTC collapse all run inside the step
        p = self.pool
        lp, ids, keep = step(idx, new, self.ovl, p.cache1, p.cache2, p.h, p.c, self.prev)
        if self.tap is not None:
            self.tap(slots, lp)
        t2 = time.perf_counter()
        ids_cpu, keep_cpu = ids.cpu(), keep.cpu()
        # Rows are picked in numpy: a torch index per row is ~5 us of Python-side dispatch that holds the
        # GIL (0.38 vs 0.035 ms for 72 changed rows of 150), time the server's event loop waits for.
        ids_np, keep_np = ids_cpu.numpy(), keep_cpu.numpy()
        changed = keep_np.any(1)
        texts = []
        for r, s in enumerate(slots.tolist()):
            if changed[r]:
                self.ids[s].extend(ids_np[r][keep_np[r]].tolist())
                self.texts[s] = self.tokenizer.decode(self.ids[s])
            texts.append(self.texts[s])
        t3 = time.perf_counter()
        return StepOutput(texts, changed, ids_cpu, {"features": 1e3 * (t1 - t0), "model": 1e3 * (t2 - t1),
                                                    "decode": 1e3 * (t3 - t2)})

    def warmup(self, batch_sizes: tuple[int, ...] = (1, 8, 64)) -> None:
        """Run the step at a few batch sizes on scratch pools (the live slots' state is not touched)."""
        step = self.graph if self.graph is not None else self.eager_step
        n = max(batch_sizes)
        st = self.model.init_state(n, device=self.device)
        ovl = torch.zeros(n, self.overlap, device=self.device)
        prev = torch.full((n,), BLANK, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for b in batch_sizes:
                idx = torch.arange(b, device=self.device)
                step(idx, torch.zeros(b, self.chunk_samples, device=self.device), ovl, st.cache1, st.cache2,
                     st.h, st.c, prev)

    def options(self) -> dict[str, Any]:
        return {"decoder": "greedy", "frame_ms": self.frame_ms, "config": self.model.cfg.to_json(),
                "graph": "torchscript trace" if self.graph is not None else "eager",
                **({"graph_error": self.graph_error} if self.graph_error else {})}
