from __future__ import annotations

import json
import math

import numpy as np
import pytest

from speechbench.common.results import read_json, write_json_atomic


def test_atomic_write_is_strict_json(tmp_path):
    p = tmp_path / "sub" / "r.json"
    write_json_atomic(p, {"a": np.float32(1.5), "b": np.arange(3), "nan": math.nan, "inf": math.inf})
    d = json.loads(p.read_text())
    assert d == {"a": 1.5, "b": [0, 1, 2], "nan": None, "inf": None}
    assert not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]


def test_failed_write_keeps_previous_file(tmp_path):
    p = tmp_path / "r.json"
    write_json_atomic(p, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(p, {"bad": object()})
    assert read_json(p) == {"ok": 1}
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_read_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the benchmark first"):
        read_json(tmp_path / "nope.json")
