"""The engine's command-line flags, shared by the benchmark CLI and ``serve``: one definition of each
scheduling, admission and endpointing flag. ``defaults`` is any object with the engine's field names
(``StreamingEngineConfig`` or ``StreamingBenchConfig``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_engine_args(g: argparse._ArgumentGroup, defaults: Any, endpoints: tuple[str, ...] = ("blank", "vad"),
                    model_chunk_ms: int | None = None, admission: str = "stream number max-streams+1 is refused",
                    ) -> None:
    chunk_default = "%(default)s" if model_chunk_ms is not None else "the model's: 40 ms CTC, 1 s Whisper"
    g.add_argument("--model-chunk-ms", type=int, default=model_chunk_ms,
                   help="audio per stream per model step, a multiple of the model's output frame (20 ms for the "
                   "x2-subsampled streaming model, 40 ms for x4); client chunks are buffered up to it, and that "
                   f"wait counts in the latency (default: {chunk_default})")
    g.add_argument("--max-batch", type=int, default=defaults.max_batch,
                   help="most streams in one batched model step (default: %(default)s)")
    g.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                   help="longest a ready chunk waits for a fuller batch; a step starts sooner when every live "
                   "stream is ready or max-batch are (default: %(default)g; Whisper: 250)")
    g.add_argument("--max-streams", type=int, default=defaults.max_streams,
                   help=f"admission capacity: preallocated state slots; {admission} (default: %(default)s)")
    g.add_argument("--max-queue-ms", type=float, default=defaults.max_queue_ms,
                   help="per-stream bound on queued audio; chunks beyond it are shed and counted (default: "
                   "%(default)g)")
    g.add_argument("--overload-ms", type=float, default=defaults.overload_ms,
                   help="new streams are refused while the oldest queued audio is older than this (default: "
                   "%(default)g)")
    g.add_argument("--max-duty", type=float, default=defaults.max_duty,
                   help="new streams are also refused while the scheduler was busy more than this share of "
                   "the last second (default: %(default)g)")
    g.add_argument("--endpoint", choices=list(endpoints), default=defaults.endpoint,
                   help="endpointer: 'blank' = trailing CTC blanks after speech (free, CTC models only); 'vad' = "
                   "silero-vad, batched across streams" + ("; 'none' = finals only on end" if "none" in endpoints
                                                          else "") + " (default: %(default)s)")
    g.add_argument("--endpoint-silence-ms", type=float, default=defaults.endpoint_silence_ms,
                   help="silence after speech that ends an utterance (default: %(default)g)")
    g.add_argument("--gil-switch-ms", type=float, default=defaults.gil_switch_ms,
                   help="Python's GIL switch interval while the engine runs: the scheduler thread wins the GIL "
                   "back after each torch op within this bound from the threads feeding it (an event loop, a "
                   "pacing loop); 0 keeps Python's 5 ms, under which steps queue behind them (default: %(default)g)")
    g.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                   help="do not freeze the heap that exists when the engine starts (gc.freeze): then a full "
                   "garbage collection walks torch's and the web stack's ~200k objects mid-load, an 80-110 ms "
                   "pause of every thread")
