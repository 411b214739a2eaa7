"""Part 2: multi-dialect ASR evaluation with sound statistics.

One job per module:

* ``normalize``  the scoring text normalizer, applied identically to references and hypotheses;
* ``scoring``    word alignment with substitutions / deletions / insertions, WER and CER;
* ``stats``      bootstrap confidence intervals (utterance and speaker-block), paired tests (t, Wilcoxon,
                 sign, MAPSSWE, McNemar), Holm, effect sizes, paired-bootstrap P(better), Friedman;
* ``dataset``    manifests -> the utterances to evaluate (subset, audio checks, failures recorded);
* ``runner``     model specs, shards (self-contained work units) and the worker that runs one;
* ``analysis``   aggregates, significance families, dialect effects, error analysis;
* ``advice``     model choice per dialect under budgets, Pareto front, routing, worst-dialect notes;
* ``export``     sclite trn files;
* ``evaluation`` the orchestration behind ``comprehensive_asr_evaluation.py``;
* ``report``     docs/asr_report.md and its plots, rendered from the results JSON only.
"""
