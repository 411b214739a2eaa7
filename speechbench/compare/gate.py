"""The gate: load BASE and NEW, compare them by schema, decide the exit status.

Exit status: 0 = no regression, 1 = at least one regression, 2 = the inputs cannot be compared.
"""

from __future__ import annotations

from pathlib import Path

from speechbench.compare.asr import compare_asr
from speechbench.compare.context import env_lines, flag_noise, mark_not_comparable, timing_mismatch
from speechbench.compare.figures import NOT_COMPARABLE, Comparison, Options
from speechbench.compare.loaders import ASR, TTS, UnusableInput, load_pair
from speechbench.compare.report import markdown, regression_lines, verdict_line
from speechbench.compare.streaming import compare_streaming
from speechbench.compare.tts import compare_tts

EXIT_OK, EXIT_REGRESSION, EXIT_UNUSABLE = 0, 1, 2


def compare_files(base_path: str | Path, new_path: str | Path, opts: Options | None = None) -> Comparison:
    """The comparison of two results files of the same schema; raises ``UnusableInput``."""
    opts = opts or Options()
    kind, base, new = load_pair(base_path, new_path)
    if kind == ASR:
        comp = compare_asr(base, new, opts)
    else:
        comp = (compare_tts if kind == TTS else compare_streaming)(base, new, opts)
        flag_noise(comp.figures, base, new)
        mismatch = timing_mismatch(base, new)
        if mismatch:
            mark_not_comparable(comp.figures, mismatch)
            comp.context.insert(0, f"Timings not comparable: {mismatch}.")
    comp.context[:0] = env_lines(base, new)
    if not comp.figures or all(f.verdict == NOT_COMPARABLE for f in comp.figures):
        reasons = sorted({f.note for f in comp.figures if f.note})
        raise UnusableInput("nothing comparable between BASE and NEW"
                            + (": " + "; ".join(reasons[:5]) if reasons else ""))
    return comp


def run(base_path: str | Path, new_path: str | Path, opts: Options | None = None,
        output: str | Path | None = None) -> tuple[int, str, str]:
    """(exit status, stdout text, stderr text): the CLI without the process around it."""
    try:
        comp = compare_files(base_path, new_path, opts)
    except UnusableInput as e:
        return EXIT_UNUSABLE, "", f"compare_results: unusable input: {e}\n"
    md = markdown(comp, str(base_path), str(new_path))
    out = [verdict_line(comp), *regression_lines(comp)]
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(md)
        out.append(f"report written to {output}")
    else:
        out = ["", md, *out]
    return (EXIT_REGRESSION if comp.regressions else EXIT_OK), "\n".join(out).lstrip("\n") + "\n", ""
