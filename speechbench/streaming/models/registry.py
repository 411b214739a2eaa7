"""Streaming models by name, for ``production_streaming_asr.py --models``.

Each name gives a ``StreamingModel`` for the engine plus the same recognizer's offline (whole-utterance)
transcription, the reference its streaming WER is compared with:

* ``ctc-streaming`` (or ``ctc:<checkpoint.pt>``): the project's causal CTC model; offline = the same model
  over the whole utterance, greedy. ``@graph=false``: its step eager instead of one traced graph.
  Trained on synthetic speech only (fails on human speech).
* ``whisper-tiny.en``, ``whisper-base`` (optionally ``@compute_type=float32,beam_size=5``): Whisper under
  LocalAgreement-2, re-decodes batched across streams; offline = the same recognizer, same decoding options,
  through faster-whisper's own ``transcribe`` (30 s window).
* ``moonshine-tiny``, ``moonshine-base`` (optionally ``@max_utterance_s=20,agreement=2,threads=2``): Moonshine
  re-decoding each stream's utterance, batched across streams in equal-length groups, LocalAgreement-2;
  offline = the same ONNX model and greedy decoding over each whole utterance (split at pauses past 30 s).
* ``moonshine-tiny-native``: Moonshine tiny-en through moonshine-voice's native streaming API, one native
  stream per slot (no batched call); offline = its ``transcribe_without_streaming``.

A model that cannot load here raises ``RecognizerUnavailable`` with the reason; the benchmark records it and
goes on with the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from speechbench.asr.base import RecognizerUnavailable
from speechbench.streaming.models.base import StreamingModel

if TYPE_CHECKING:
    from speechbench.streaming.engine import StreamingEngineConfig

OfflineFn = Callable[[list[np.ndarray]], list[str]]

KNOWN = ("ctc-streaming", "moonshine-tiny", "moonshine-base", "whisper-tiny.en", "whisper-base",
         "moonshine-tiny-native")


@dataclass
class LoadedModel:
    model: StreamingModel
    offline: OfflineFn  # whole utterances -> texts, the same recognizer
    offline_method: str
    info: dict[str, Any]
    close: Callable[[], None] = lambda: None


def parse(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[@k=v,...]`` -> (name, options); values parsed as JSON where they parse."""
    import json

    name, _, rest = spec.partition("@")
    opts: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        k, eq, v = part.partition("=")
        if not eq:
            raise ValueError(f"model option {part!r} in {spec!r} is not key=value")
        try:
            opts[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            opts[k.strip()] = v.strip()
    return name.strip(), opts


def load_ctc(checkpoint: str, device: torch.device | str = "cpu", seed: int = 0, name: str | None = None,
             graph: bool = True) -> LoadedModel:
    from speechbench.asr.ctc.decode import greedy_decode
    from speechbench.asr.ctc.features import LogMel, waveforms_to_batch
    from speechbench.asr.ctc.tokenizer import Tokenizer
    from speechbench.streaming.models.ctc import CTCStreamingModel

    if checkpoint == "random":  # seeded random weights: smoke runs only, transcripts are noise
        from speechbench.asr.ctc.features import FeatureConfig
        from speechbench.asr.ctc.model import build_ctc_model
        from speechbench.asr.ctc.tokenizer import CHARS

        torch.manual_seed(seed)
        net, feat_cfg, payload = build_ctc_model("streaming").eval(), FeatureConfig(), {
            "chars": CHARS, "meta": {"name": "random"}}
    else:
        from speechbench.asr.ctc.checkpoint import load_checkpoint

        net, feat_cfg, payload = load_checkpoint(checkpoint, device)
    net.to(device).eval()
    if not net.cfg.causal:
        raise RecognizerUnavailable(f"{checkpoint} is not a causal (streaming) model")
    tok = Tokenizer(payload["chars"])
    model = CTCStreamingModel(net, feat_cfg, tok, device, name=name or "ctc-streaming", graph=graph)
    extractor = LogMel(feat_cfg).to(device)

    @torch.no_grad()
    def offline(waves: list[np.ndarray]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(waves), 16):
            wave, lens = waveforms_to_batch(waves[i: i + 16])
            feats, flen = extractor(wave.to(device), lens.to(device))
            lp, olen = net(feats, flen)
            out += [tok.decode(ids) for ids in greedy_decode(lp, olen)]
        return out

    info = {"checkpoint": checkpoint, "params": net.num_params, "config": net.cfg.to_json(),
            "meta": payload.get("meta", {}), "features": feat_cfg.to_json()}
    return LoadedModel(model, offline, "same model over the whole utterance, greedy", info)


def load_whisper(which: str, options: dict[str, Any], threads: int | None) -> LoadedModel:
    from speechbench.asr.registry import load_recognizer
    from speechbench.streaming.models.whisper_la import WhisperLocalAgreement

    opts = {"compute_type": "int8", "beam_size": 1, "cpu_threads": threads or 0, **options}
    la_opts = {k: opts.pop(k) for k in ("agreement", "window", "pad_s", "bucket_ratio") if k in opts}
    rec = load_recognizer(which, **opts)
    model = WhisperLocalAgreement(rec, name=which if not options else None, **la_opts)
    model.name = which
    return LoadedModel(model, rec.transcribe, f"faster-whisper transcribe(), 30 s window, beam {rec.beam_size}",
                       rec.info(), rec.close)


def load_moonshine_native(options: dict[str, Any]) -> LoadedModel:
    from speechbench.streaming.models.moonshine import MoonshineStreaming

    model = MoonshineStreaming(name="moonshine-tiny-native", **options)
    return LoadedModel(model, model.transcribe_offline, "moonshine transcribe_without_streaming()",
                       model.info(), model.close)


OFFLINE_MAX_S = 30.0  # Moonshine's offline pass decodes an utterance whole up to this, then splits at pauses


def load_moonshine(which: str, options: dict[str, Any], threads: int | None) -> LoadedModel:
    from speechbench.streaming.models.moonshine_batched import MoonshineRedecode

    model = MoonshineRedecode(which, **{"threads": threads, **options})

    def offline(waves: list[np.ndarray]) -> list[str]:
        return model.batch.transcribe_whole(waves, OFFLINE_MAX_S)

    info = {"name": model.name, "params": model.params, "precision": model.precision, "backend": model.backend,
            "path": str(model.batch.path), "options": model.options()}
    return LoadedModel(model, offline, f"the same encoder and decoder, greedy, each utterance whole (split at "
                                       f"pauses past {OFFLINE_MAX_S:g} s)", info)


def load_streaming_model(spec: str, device: torch.device | str = "cpu", threads: int | None = None,
                         checkpoint: str = "models/ctc-streaming.pt", seed: int = 0) -> LoadedModel:
    name, options = parse(spec)
    graph = options.get("graph", True)  # ctc-streaming@graph=false: the eager step
    if not isinstance(graph, bool):
        raise ValueError(f"model option graph={graph!r} in {spec!r}: use graph=true or graph=false")
    if name == "ctc-streaming":
        return load_ctc(options.get("checkpoint", checkpoint), device, seed, graph=graph)
    if name.startswith("ctc:"):
        return load_ctc(name[4:], device, seed, name=name, graph=graph)
    if name in ("whisper-tiny.en", "whisper-base"):
        return load_whisper(name, options, threads)
    if name in ("moonshine-tiny", "moonshine-base"):
        return load_moonshine(name, options, threads)
    if name == "moonshine-tiny-native":
        return load_moonshine_native(options)
    raise ValueError(f"unknown streaming model {name!r}; known: {', '.join(KNOWN)}, ctc:<checkpoint.pt>")


def fit_engine_config(model: StreamingModel, ec: StreamingEngineConfig, explicit: Iterable[str] = ()
                      ) -> StreamingEngineConfig:
    """Engine settings adjusted to a model without per-frame CTC symbols (Whisper, Moonshine): the VAD
    endpointer, the model's own chunk, its preferred batching wait, and queue/overload bounds that allow
    for a chunk that long (queued audio waits for a whole model chunk by design; overload is waiting
    beyond that). CTC models keep ``ec`` as given; so do the fields named in ``explicit`` (set on purpose,
    e.g. max_batch=1, max_wait_ms=0 for a per-stream baseline)."""
    from dataclasses import replace

    if model.frame_ms is not None:
        return ec
    keep = set(explicit)
    # the model chunk the engine will run: one set on purpose (a cadence sweep), else the model's own
    chunk = ec.model_chunk_ms if "model_chunk_ms" in keep and ec.model_chunk_ms else model.default_chunk_ms
    over: dict[str, Any] = {"endpoint": "vad", "model_chunk_ms": None,
                            "max_queue_ms": max(ec.max_queue_ms, 2 * chunk + ec.max_chunk_ms),
                            "overload_ms": ec.overload_ms + chunk}
    if model.default_max_wait_ms is not None:
        over["max_wait_ms"] = model.default_max_wait_ms
    if model.default_max_batch is not None:
        over["max_batch"] = min(ec.max_batch, model.default_max_batch)
    if model.drains_queue:
        # A model that takes all queued audio each step is busy all the time under load by design (its steps
        # grow instead of its queues), so a busy scheduler is no sign of overload: admission goes by the age
        # of the oldest queued audio, which a drained queue keeps near one step (two intervals allowed).
        over["max_duty"] = max(ec.max_duty, 1.01)
        over["overload_ms"] = ec.overload_ms + 2 * chunk
    return replace(ec, **{k: v for k, v in over.items() if k not in keep})
