"""The flow every script's main() shares (common/cli.py): report-only, render, README, exit status."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from speechbench.common.cli import Script, add_common_args, apply_args, run_script


def parse(tmp_path: Path, *argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_common_args(p, str(tmp_path / "out.json"), str(tmp_path / "report.md"))
    return p.parse_args(list(argv))


def script(tmp_path: Path, res: dict, calls: list[str], **kw) -> Script:
    def render(r: dict, report: Path, plots: bool) -> None:
        calls.append(f"render {r['value']} plots={plots}")
        report.write_text(str(r["value"]))

    return Script(log_file=tmp_path / "run.log", measure=lambda: calls.append("measure") or res, render=render,
                  update_readme=lambda r: calls.append("readme"), summarize=lambda r: calls.append("summary"), **kw)


def test_run_renders_refreshes_and_exits_by_failures(tmp_path, capsys):
    calls: list[str] = []
    assert run_script(parse(tmp_path), script(tmp_path, {"value": 1, "failures": []}, calls)) == 0
    assert calls == ["measure", "render 1 plots=True", "readme", "summary"]
    assert (tmp_path / "run.log").exists()

    failing = {"value": 2, "failures": [{"section": "x", "error": "boom"}]}
    assert run_script(parse(tmp_path, "--no-plots"), script(tmp_path, failing, calls)) == 1
    assert "1 failure(s) recorded" in capsys.readouterr().err
    # a script may decide which failures fail the run (Part 2: per-model failures do not)
    assert run_script(parse(tmp_path), script(tmp_path, failing, [], failed=lambda r: False)) == 0


def test_report_only_measures_nothing(tmp_path):
    (tmp_path / "out.json").write_text(json.dumps({"value": 7}))
    calls: list[str] = []
    assert run_script(parse(tmp_path, "--report-only"), script(tmp_path, {}, calls)) == 0
    assert calls == ["render 7 plots=True", "readme"]
    assert (tmp_path / "report.md").read_text() == "7"
    (tmp_path / "out.json").unlink()
    with pytest.raises(SystemExit, match="out.json"):
        run_script(parse(tmp_path, "--report-only"), script(tmp_path, {}, calls))


def test_apply_args_copies_given_flags_onto_config_fields():
    @dataclasses.dataclass
    class Cfg:
        streams: int = 4
        n_boot: int = 1000
        device: str = "cpu"
        label: str = "x"

    a = argparse.Namespace(streams=8, bootstrap=None, device="cuda", unrelated=1)
    cfg = apply_args(Cfg(), a, renames={"n_boot": "bootstrap"})
    assert cfg == Cfg(streams=8)  # None = not given; device skipped; unknown flags ignored
    assert apply_args(Cfg(), argparse.Namespace(bootstrap=5000), renames={"n_boot": "bootstrap"}).n_boot == 5000
