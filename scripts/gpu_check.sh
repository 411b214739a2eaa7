#!/usr/bin/env bash
# Every part's GPU path at small sizes, in one call on a lent GPU machine (the device tool), in < 8 minutes.
# Writes results/*_gpu.json (or $OUT/*_gpu.json) and their reports; prints one "rc=" line per part.
#
#   bash scripts/gpu_check.sh                 # on the GPU machine, from the repository root
#   DEVICE=cpu OUT=/tmp/g bash scripts/gpu_check.sh   # the same script on a CPU (checks the script itself)
#
# The GPU machine has its own python3 with CUDA torch, numpy, scipy, matplotlib, psutil, tqdm, nvidia-ml-py,
# onnxruntime and prometheus-client, no internet and none of this project's speech packages. So:
#   - Part 1 (TTS) needs nothing more;
#   - Parts 2 and 3 replay the quick corpus, built here (`uv run build_corpus.py --preset quick`) and sent
#     with the call (carry: data/corpora), and read it with soundfile; the text scoring needs levenshtein
#     and jiwer: carry their wheels in .whl/ (pip download --only-binary=:all: --python-version 3.12 ...,
#     see /work/.library/device/README.md), installed offline below;
#   - only the project's own CTC models run there (Whisper, Moonshine, pocketsphinx are CPU packages here).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-results}
mkdir -p "$OUT"
if [ -d .whl ]; then
  $PY -m pip install --quiet --no-index --find-links .whl soundfile levenshtein jiwer rapidfuzz 2>&1 | tail -2
fi
$PY - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
MANIFEST=$(ls -d data/corpora/quick-*/manifest.jsonl 2>/dev/null | head -1)

timeout 270 $PY optimized_tts_inference.py --device "$DEVICE" --quick --no-plots \
  --output "$OUT/tts_benchmarks_gpu.json" --report "$OUT/tts_report_gpu.md"
echo "tts rc=$?"

if [ -n "$MANIFEST" ]; then
  timeout 120 $PY production_streaming_asr.py --device "$DEVICE" --quick --no-plots --transport inproc \
    --models none --manifest "$MANIFEST" --streams 1 16 64 --max-streams 256 \
    --output "$OUT/streaming_performance_gpu.json" --report "$OUT/streaming_report_gpu.md"
  echo "streaming rc=$?"
  timeout 90 $PY comprehensive_asr_evaluation.py --device "$DEVICE" --quick --no-plots --no-readme \
    --manifest "$MANIFEST" --models ctc-small ctc-streaming \
    --output "$OUT/asr_evaluation_gpu.json" --report "$OUT/asr_report_gpu.md"
  echo "asr rc=$?"
else
  echo "streaming rc=skipped (no data/corpora/quick-*: carry it)"
  echo "asr rc=skipped (no data/corpora/quick-*: carry it)"
fi
