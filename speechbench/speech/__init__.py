"""Speech data: audio I/O, JSONL manifests, offline speech synthesis, acoustic conditions, texts, corpora.

Everything here runs offline: espeak-ng and Piper synthesize the audio, so the ASR benchmarks need no
download. Real corpora plug in through the same JSONL manifest format (NeMo / Common Voice convention).
"""

SAMPLE_RATE = 16000
"""Every recognizer in the suite consumes 16 kHz mono float32; the corpus is stored at that rate."""
