"""Part 3: a continuous-batching streaming ASR engine under real-time load, swept over the number of streams.

Replays real corpus speech (the cached default corpus; any JSONL manifest with --manifest) through N
concurrent live streams paced by the wall clock, each a sequence of utterances with silences between them,
into one engine that batches across streams (causal conv + LSTM CTC model, models/ctc-streaming.pt).
Measures per-chunk latency from when the audio existed, first-partial latency from speech onset,
finalization latency from the end of speech, RTF, batch utilization, shedding, memory, and the WER of the
final transcripts next to the same model's offline WER on the same audio; compares with the same model
run per stream without cross-stream batching; checks twice the sustainable load.

Writes results/streaming_performance.json and renders docs/streaming_report.md from it.

Subcommands: `serve` runs the engine as a network service (WebSocket streaming, HTTP transcription,
Prometheus metrics; `serve --help`), `transcribe FILE...` prints what its POST /v1/transcribe returns.

Examples:
  uv run production_streaming_asr.py                     # default run: ~15 min on a 2-core CPU
  uv run production_streaming_asr.py serve --port 8765   # the service (Whisper tiny.en, loopback)
  uv run production_streaming_asr.py --quick             # CI smoke size, < 1 min
  uv run production_streaming_asr.py --report-only       # re-render the report from the JSON
  uv run production_streaming_asr.py --streams 50 --duration-s 60 --soak-minutes 10   # + a soak
  uv run production_streaming_asr.py --device cuda --streams 1 100 500 1000 \\
      --max-streams 1024 --max-batch 1024 --output results/streaming_performance_gpu.json \\
      --report docs/streaming_report_gpu.md
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from speechbench.common.cli import Script, add_common_args, apply_args, prepare_run, run_script
from speechbench.common.readme import update_headline
from speechbench.streaming.benchmark import StreamingBenchConfig, StreamingBenchmark, engine_config_for
from speechbench.streaming.engine_args import add_engine_args
from speechbench.streaming.report import headline_markdown, render

log = logging.getLogger("production_streaming_asr")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="production_streaming_asr.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(p, "results/streaming_performance.json", "docs/streaming_report.md")
    d = StreamingBenchConfig()
    q = StreamingBenchConfig.quick_preset()
    g = p.add_argument_group("model and audio")
    g.add_argument("--checkpoint", default=d.checkpoint,
                   help="causal CTC checkpoint (train_asr.py --model streaming), or 'random' for seeded random "
                   "weights (smoke runs: transcripts are noise) (default: %(default)s)")
    g.add_argument("--ctc-eager", dest="ctc_graph", action="store_false",
                   help="run the CTC model's step op by op (eager PyTorch) instead of as one traced TorchScript "
                   "graph; the graph is bit-identical and holds the GIL once a step, not once per op")
    g.add_argument("--manifest", default=None,
                   help="JSONL manifest of the speech to replay (default: the cached default corpus, built on "
                   "first use; --quick: the quick corpus). Clean-condition lines are used when there are any")
    g.add_argument("--accents", nargs="+", default=None,
                   help=f"dialects to replay, or 'all' (default: {' '.join(d.accents)}, what the model was "
                   "trained on)")
    g.add_argument("--utterances", type=int, default=None,
                   help=f"utterances in the pool the streams replay, spread over the accents (default: "
                   f"{d.utterances}, --quick: {q.utterances})")
    g.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help="pretrained recognizers served by the same engine beside the CTC model, for the "
                   "accuracy-vs-capacity table: whisper-tiny.en, whisper-base (Whisper under LocalAgreement-2, "
                   "re-decodes batched across streams; options as name@compute_type=float32,beam_size=5), "
                   "moonshine-tiny, moonshine-base (re-decoded batched across streams, LocalAgreement-2; "
                   "options as moonshine-tiny@max_utterance_s=12,final=full), moonshine-tiny-native (its own "
                   "streaming API, per stream), ctc:<checkpoint.pt>; 'none' for none "
                   f"(default: {' '.join(d.compare_models)})")
    g.add_argument("--compare-streams", type=int, nargs="+", default=None,
                   help=f"stream counts swept for each of --models; a model's sweep stops at its first level "
                   f"not sustained (default: per model, "
                   f"{'; '.join(k + ' ' + ' '.join(map(str, v)) for k, v in d.model_streams.items())}; others "
                   f"{' '.join(map(str, d.compare_streams))}; --quick: {' '.join(map(str, q.compare_streams))})")
    g.add_argument("--frontier-chunks", type=int, nargs="*", default=None,
                   help=f"update intervals (ms) beside the model's own for the first batched Moonshine model's "
                   f"cadence frontier; none for no frontier (default: {' '.join(map(str, d.frontier_chunks))})")
    g.add_argument("--frontier-streams", type=int, nargs="+", default=None,
                   help=f"levels of each frontier interval, run in order until one is not sustained (default: "
                   f"{' '.join(map(str, d.frontier_streams))})")
    g.add_argument("--compare-duration-s", type=float, default=None,
                   help=f"seconds of audio per stream per level for --models (default: {d.compare_duration_s:g}"
                   f", --quick: {q.compare_duration_s:g})")
    g.add_argument("--redecode-bound-ms", type=float, default=d.redecode_bound_ms,
                   help="a model that buffers a longer chunk than --model-chunk-ms (Whisper: 1 s) sustains a "
                   "level when p95 chunk latency < its chunk + this (default: %(default)g)")
    g = p.add_argument_group("load")
    g.add_argument("--streams", type=int, nargs="+", default=None,
                   help=f"concurrent stream counts to sweep (default: {' '.join(map(str, d.streams))}; "
                   f"--quick: {' '.join(map(str, q.streams))})")
    g.add_argument("--duration-s", type=float, default=None,
                   help=f"seconds of audio each stream sends per load level (default: {d.duration_s:g}, "
                   f"--quick: {q.duration_s:g})")
    g.add_argument("--single-stream-utterances", type=int, default=None,
                   help=f"the sweep's 1-stream level runs long enough for this many utterances, so the "
                   f"single-stream first-partial / finalization / RTF percentiles rest on them (default: "
                   f"{d.single_stream_utterances}; 0 = as long as the other levels; --quick: 0)")
    g.add_argument("--chunk-ms", type=int, default=d.chunk_ms,
                   help="client chunk size in ms, how much audio a client sends at a time (20-40 typical; "
                   "default: %(default)s)")
    g.add_argument("--alt-chunk-ms", type=int, nargs="*", default=None,
                   help="after the capacity search, run the confirmed capacity again with these client chunk sizes "
                   f"(the model chunk unchanged; none to skip; default: {' '.join(map(str, d.alt_chunk_ms))})")
    g.add_argument("--ramp-s", type=float, default=d.ramp_s,
                   help="stream starts are staggered over this many seconds (default: %(default)s)")
    g.add_argument("--baseline-streams", type=int, nargs="+", default=None,
                   help=f"stream counts for the per-stream baseline (no cross-stream batching); it stops at "
                   f"the first level it cannot sustain (default: {' '.join(map(str, d.baseline_streams))})")
    g.add_argument("--baseline-duration-s", type=float, default=None,
                   help=f"seconds per baseline level (default: {d.baseline_duration_s:g})")
    g.add_argument("--capacity-repeats", type=int, default=None,
                   help="after each coarse sweep, a level counts as sustained only when it holds in 2 of at most "
                   f"this many runs (1: trust single runs; default: {d.capacity_repeats})")
    g.add_argument("--capacity-bisect-steps", type=int, default=None,
                   help="bisection steps between the highest level that holds and the first that does not "
                   f"(default: {d.capacity_bisect_steps}, the pretrained recognizers {d.compare_bisect_steps}; "
                   f"--quick: {q.capacity_bisect_steps})")
    g.add_argument("--overload-duration-s", type=float, default=None,
                   help=f"seconds of the 2x-sustainable-load run (default: {d.overload_duration_s:g})")
    g.add_argument("--soak-minutes", type=float, default=0.0,
                   help="also run the largest sustained load this long, sampling host memory, to show it "
                   "does not grow (default: 0 = no soak; the issue asks for 10)")
    g.add_argument("--latency-bound-ms", type=float, default=d.latency_bound_ms,
                   help="p95 chunk latency a level must stay under to count as sustained (default: %(default)g)")
    g.add_argument("--transport", choices=["both", "inproc", "ws"], default=d.transport,
                   help="both: the in-process sections, then the same engine behind `serve` in its own process "
                   "driven by real WebSocket clients on loopback; inproc: no server; ws: only the WebSocket "
                   "sweep (default: %(default)s)")
    g.add_argument("--network-streams", type=int, nargs="+", default=None,
                   help="WebSocket client counts to sweep (default: 1/2, 0.7 and all of the in-process "
                   "capacity; --quick: 4)")
    g.add_argument("--network-duration-s", type=float, default=None,
                   help=f"seconds of audio per WebSocket client per level (default: {d.network_duration_s:g}, "
                   f"--quick: {q.network_duration_s:g})")
    add_engine_args(p.add_argument_group("engine"), d, model_chunk_ms=d.model_chunk_ms)
    return p


def config_from_args(a: argparse.Namespace, device: torch.device) -> StreamingBenchConfig:
    cfg = StreamingBenchConfig.quick_preset() if a.quick else StreamingBenchConfig()
    apply_args(cfg, a, skip=("device", "compare_models"))
    cfg.device = str(device)
    if a.models is not None:
        cfg.compare_models = [] if a.models == ["none"] else a.models
    if a.compare_streams is not None:  # one list for every model, instead of the per-model defaults
        cfg.model_streams = {}
    if cfg.checkpoint != "random" and not Path(cfg.checkpoint).exists():
        raise SystemExit(f"--checkpoint not found: {cfg.checkpoint} (train it: uv run train_asr.py --model "
                         "streaming; or --checkpoint random for a smoke run)")
    if cfg.manifest and not Path(cfg.manifest).exists():
        raise SystemExit(f"--manifest not found: {cfg.manifest}")
    if cfg.model_chunk_ms <= 0 or cfg.model_chunk_ms % 20:
        raise SystemExit("--model-chunk-ms must be a positive multiple of 20 (and of the model's output frame)")
    if not 1 <= cfg.chunk_ms <= 500:
        raise SystemExit("--chunk-ms must be between 1 and 500")
    if any(n < 1 for n in cfg.streams + cfg.baseline_streams) or cfg.max_batch < 1 or cfg.max_streams < 1:
        raise SystemExit("--streams, --baseline-streams, --max-batch and --max-streams must be >= 1")
    if cfg.duration_s <= 0 or cfg.utterances < 1:
        raise SystemExit("--duration-s and --utterances must be positive")
    try:  # the engine's own rules (e.g. the queue must hold a model chunk plus a client chunk), checked up front
        engine_config_for(cfg, device).validate()
    except ValueError as e:
        raise SystemExit(f"invalid engine settings: {e}") from None
    return cfg


def maybe_update_readme(res: dict, output: Path) -> None:
    update_headline(res, output, "streaming_performance.json", "streaming-headline", headline_markdown)


def summarize(res: dict, output: Path, report: Path) -> None:
    s = res["summary"]
    print(f"wrote {output} and {report} ({res.get('total_seconds')} s)")
    for k in ("max_streams_p95_under_100ms", "baseline_max_streams_p95_under_100ms", "wer_streaming",
              "wer_offline", "peak_memory_mb"):
        if s.get(k) is not None:
            print(f"  {k}: {s[k]:.4g}")
    for name, t in (s.get("targets") or {}).items():
        print(f"  target {name}: {t['value']!r} ({t['threshold']}) -> "
              f"{'met' if t['met'] else 'not met' if t['met'] is False else 'not measured'}")


def measure(a: argparse.Namespace) -> dict:
    device = prepare_run(a)
    cfg = config_from_args(a, device)
    bench = StreamingBenchmark(cfg, a.output, progress=sys.stderr.isatty())
    bench.results["config"]["output"] = str(a.output)
    return bench.run()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("serve", "transcribe"):  # subcommands: the network server, the offline CLI
        from speechbench.serve.server import serve_main, transcribe_main

        return (serve_main if argv[0] == "serve" else transcribe_main)(argv[1:])
    a = build_parser().parse_args(argv)
    return run_script(a, Script(
        log_file=Path("logs/streaming_benchmark.log"), measure=lambda: measure(a), render=render,
        update_readme=lambda res: maybe_update_readme(res, a.output),
        summarize=lambda res: summarize(res, a.output, a.report)))


if __name__ == "__main__":
    raise SystemExit(main())
