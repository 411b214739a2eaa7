"""Peak memory of one variant, measured in a fresh process.

On CPU there is no allocator peak to reset, and a process's RSS only grows, so measuring the baseline
and then the optimized engine in one process would charge the second with the first's leftovers. Each
variant therefore runs here alone: the RSS once torch and the model are loaded, the peak RSS sampled
while the work runs (``ru_maxrss`` cannot be used: Linux carries the parent's high-water mark across
fork and exec), and the CUDA allocator peak on GPU.

    python -m speechbench.tts.memprobe --variant optimized --precision int8 --slots 16 --text "..." --repeat 10
"""

from __future__ import annotations

import argparse
import gc
import json
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["baseline", "optimized"], required=True)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--max-frames", type=int, default=500)
    p.add_argument("--text", action="append", required=True, help="a text to synthesize (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from speechbench.common.measure import PeakMemory, host_rss_mb
    from speechbench.tts.baseline import NaiveTTSInference
    from speechbench.tts.engine import Request, TTSEngine, TTSEngineConfig
    from speechbench.tts.length import LengthPolicy
    from speechbench.tts.model import build_tts_model
    from speechbench.tts.scheduler import run_continuous

    torch.set_grad_enabled(False)
    device = torch.device(a.device)
    model = build_tts_model(a.seed, a.checkpoint)
    policy = LengthPolicy(max_frames=a.max_frames)
    if a.variant == "baseline":
        runner = NaiveTTSInference(model, policy, device=device)
    else:
        runner = TTSEngine(model, TTSEngineConfig(precision=a.precision, num_slots=a.slots), policy, device=device)
        del model  # a server keeps only the engine; the original fp32 decoder is freed
        gc.collect()
    loaded_mb = host_rss_mb()
    with PeakMemory(device, interval_s=0.002) as mem:
        if a.variant == "baseline":
            for t in a.text:
                runner.synthesize(t)
        else:
            run_continuous(runner, [Request(t, i) for i, t in enumerate(a.text)])
    out = {
        "variant": a.variant,
        "precision": a.precision,
        "slots": a.slots,
        "texts": len(a.text),
        "rss_after_load_mb": loaded_mb,
        "rss_peak_mb": mem.report.host_rss_peak_mb,
        "cuda_peak_allocated_mb": mem.report.cuda_peak_allocated_mb,
    }
    out["working_set_mb"] = out["rss_peak_mb"] - loaded_mb
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
