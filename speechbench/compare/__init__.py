"""A regression gate across result files: ``compare_results.py BASE.json NEW.json``.

One job per module:

* ``loaders``    read a results JSON, recognise its schema (ASR evaluation, TTS, streaming), check fields;
* ``figures``    a compared figure, its verdict rules (relative tolerance, spreads, capacity levels);
* ``asr``        Part 2: WER per model and per dialect, paired Wilcoxon test on per-utterance errors;
* ``tts``        Part 1: headline speedups, latencies and throughputs;
* ``streaming``  Part 3: capacity in sweep levels, chunk latency per level, per-model latencies;
* ``context``    machines, run sizes and noise records, reported beside the verdicts;
* ``report``     the Markdown table and the verdict lines;
* ``gate``       the comparison end to end and its exit status (0 ok, 1 regression, 2 unusable input).

Light on purpose: numpy/scipy via ``speechbench.asr_eval.stats``, no engine, no torch.
"""
