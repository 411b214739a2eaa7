"""What every script shares, so the three CLIs behave alike: the common flags, device/threads/seed set-up,
logging, the config built from the flags, and one ``main`` flow (``run_script``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


def add_common_args(parser: argparse.ArgumentParser, default_output: str, default_report: str) -> None:
    g = parser.add_argument_group("common options")
    g.add_argument(
        "--quick", action="store_true",
        help="CI smoke size: tiny inputs and few repeats; finishes in under a minute on a 2-core CPU. "
        "Numbers from --quick runs are for checking that things work, not for citing.",
    )
    g.add_argument("--output", type=Path, default=Path(default_output),
                   help=f"where to write the results JSON (default: {default_output})")
    g.add_argument("--report", type=Path, default=Path(default_report),
                   help=f"where to write the Markdown report rendered from the JSON (default: {default_report})")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="compute device; auto picks CUDA when available (default: auto)")
    g.add_argument("--seed", type=int, default=0, help="seed for weights, data and sampling (default: 0)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, usually the core count)")
    g.add_argument("--report-only", action="store_true",
                   help="skip measuring: re-render the Markdown report (and plots) from the existing --output JSON")
    g.add_argument("--no-plots", action="store_true", help="do not write PNG plots next to the report")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_run(args: argparse.Namespace) -> torch.device:
    """Device, torch threads and seeds from the common flags, set up the same way by every script."""
    from speechbench.common.measure import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    return device


def setup_logging(verbose: bool, log_file: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def rerender_report(output: Path, report: Path, render: Callable[..., Any], plots: bool,
                    after: Callable[[dict], Any] | None = None) -> int:
    """``--report-only``: re-render the Markdown (and plots) from an existing results JSON, measure nothing."""
    from speechbench.common.results import read_json

    try:
        res = read_json(output)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    render(res, report, plots=plots)
    if after is not None:
        after(res)
    print(f"re-rendered {report} from {output}")
    return 0


def apply_args(cfg: Any, args: argparse.Namespace, renames: dict[str, str] | None = None,
               skip: tuple[str, ...] = ("device",)) -> Any:
    """Copy every flag that names a field of the dataclass ``cfg`` (``renames``: field -> flag where the two
    differ) onto it, unless the flag's value is None (not given: the config's default, or its --quick
    preset, stands). The config's fields are the list; no CLI keeps its own list of names."""
    renames = renames or {}
    for f in dataclasses.fields(cfg):
        flag = renames.get(f.name, f.name)
        if f.name in skip or not hasattr(args, flag):
            continue
        value = getattr(args, flag)
        if value is not None:
            setattr(cfg, f.name, value)
    return cfg


@dataclass
class Script:
    """What differs between the three scripts' ``main``; the flow around it is ``run_script``'s.

    ``measure`` runs the benchmark and returns its results; ``render`` writes the Markdown (and plots);
    ``update_readme`` refreshes the README's headline block; ``summarize`` prints the headline figures;
    ``failed`` says whether the run should exit non-zero (default: any recorded failure)."""

    log_file: Path
    measure: Callable[[], dict]
    render: Callable[..., Any]
    update_readme: Callable[[dict], Any]
    summarize: Callable[[dict], None]
    failed: Callable[[dict], bool] = field(default=lambda res: bool(res.get("failures")))


def run_script(a: argparse.Namespace, script: Script) -> int:
    """One flow for every script: logging, the ``--report-only`` branch, measure, render the report, refresh
    the README, print the headline figures and the failures; exit status 1 when the run failed."""
    setup_logging(a.verbose, script.log_file if not a.report_only else None)
    if a.report_only:
        return rerender_report(a.output, a.report, script.render, not a.no_plots, script.update_readme)
    res = script.measure()
    script.render(res, a.report, plots=not a.no_plots)
    script.update_readme(res)
    script.summarize(res)
    failures = res.get("failures") or []
    if failures:
        print(f"  {len(failures)} failure(s) recorded: see 'failures' in {a.output}", file=sys.stderr)
    return 1 if script.failed(res) else 0
