"""The capacity search on a fake engine: confirmation (2 of 3), bisection, and every attempt kept."""

from __future__ import annotations

import numpy as np

from speechbench.streaming.capacity import CapacitySearch, SearchConfig


def fake_engine(capacity: int, flaky: dict[int, list[bool]] | None = None):
    """Sustains up to ``capacity`` streams; ``flaky`` scripts the outcomes of given levels run by run."""
    script = {n: list(v) for n, v in (flaky or {}).items()}
    calls: list[int] = []

    def run(n: int) -> dict:
        calls.append(n)
        ok = script[n].pop(0) if script.get(n) else n <= capacity
        return {"sustained": ok, "chunk_latency_ms_p95": 50.0 if ok else 500.0}

    return run, calls


def sweep_of(levels, capacity, noise=()):
    return [{"streams": n, "sustained": (n <= capacity) != (n in noise)} for n in levels]


def test_bisects_between_the_last_held_and_first_failed_level():
    run, calls = fake_engine(capacity=340)
    res = CapacitySearch(run, SearchConfig(max_bisect_steps=5)).search(sweep_of([1, 100, 200, 300, 400], 340))
    # 300 held in the sweep and one more run confirms it; 400's failure is confirmed by a second run; then
    # 350 fails twice and 325 holds twice, and 325-350 is within the 12.5% resolution.
    assert res["confirmed_streams"] == 325 and res["first_failed_streams"] == 350
    assert calls == [300, 400, 350, 350, 325, 325]
    assert res["levels"]["300"] == [True, True] and res["levels"]["350"] == [False, False]
    assert [a["phase"] for a in res["attempts"]][:5] == ["sweep"] * 5
    assert len(res["attempts"]) == 5 + len(calls)


def test_one_lucky_run_is_not_capacity_and_one_unlucky_run_does_not_sink_it():
    # 400 passes once by luck (then fails twice): not confirmed, and it bounds the search from above.
    run, calls = fake_engine(capacity=300, flaky={400: [False, False]})
    res = CapacitySearch(run, SearchConfig(max_bisect_steps=0)).search(
        sweep_of([100, 200, 300, 400], 300, noise={400}))
    assert res["confirmed_streams"] == 300 and res["first_failed_streams"] == 400 and calls == [400, 400, 300]
    # 200 fails once in the sweep (a neighbour's burst) but holds its repeats: 2 of 3, confirmed.
    run, calls = fake_engine(capacity=250, flaky={200: [True, True]})
    res = CapacitySearch(run, SearchConfig(max_bisect_steps=0)).search(
        sweep_of([100, 200, 300], 250, noise={200}))
    assert res["confirmed_streams"] == 200 and res["first_failed_streams"] == 300
    assert calls == [100, 200, 200, 300]


def test_nothing_sustained_and_top_level_held():
    run, calls = fake_engine(capacity=0)
    res = CapacitySearch(run).search(sweep_of([1, 10], 0))
    assert res["confirmed_streams"] == 0 and res["first_failed_streams"] == 1 and calls == [1]
    run, calls = fake_engine(capacity=10**6)
    res = CapacitySearch(run).search(sweep_of([1, 10, 25], 10**6))
    assert res["confirmed_streams"] == 25 and res["top_level_held"] and calls == [25]


def test_search_recovers_capacity_under_random_noise():
    """With each run flipping its outcome 15% of the time, 2-of-3 confirmation finds a level within the
    resolution of the truth far more often than trusting single runs would."""
    rng = np.random.default_rng(0)
    good = 0
    for _ in range(200):
        cap = int(rng.integers(120, 380))

        def run(n, cap=cap):
            return {"sustained": (n <= cap) != (rng.random() < 0.15)}

        sweep = [{"streams": n, **run(n)} for n in (1, 10, 25, 50, 100, 200, 300, 400)]
        res = CapacitySearch(run, SearchConfig(max_bisect_steps=6)).search(sweep)
        good += abs(res["confirmed_streams"] - cap) <= 0.15 * cap
    assert good >= 140


def test_single_stream_level_runs_long_enough_for_its_utterances():
    """The sweep's 1-stream level gets audio for ``single_stream_utterances`` utterances (mean length plus
    mean gap, after the ramp), so the single-stream percentiles rest on ~30 utterances, not the 4 that fit
    in a normal level; other levels keep ``duration_s``."""
    from types import SimpleNamespace

    from speechbench.streaming.bench_config import StreamingBenchConfig
    from speechbench.streaming.sections.load import LoadSections

    cfg = StreamingBenchConfig()
    pool = [SimpleNamespace(audio=np.zeros(int(16000 * s), np.float32)) for s in (2.0, 3.0, 4.0)]
    bench = SimpleNamespace(cfg=cfg, pool=pool)
    secs = LoadSections.single_stream_seconds(bench)
    per_utt = 3.0 + sum(cfg.gap_s) / 2
    assert secs == cfg.single_stream_utterances * per_utt + cfg.ramp_s and secs > cfg.duration_s
    ran = []
    fake = SimpleNamespace(results={}, save=lambda: None,
                           run_level=lambda n, d, name, **o: ran.append((n, d)) or {
                               "sustained": True, "chunk_latency_ms_p50": 1.0, "chunk_latency_ms_p95": 1.0,
                               "batch_size_mean": 1.0, "batch_utilization": 1.0, "shed_chunks": 0,
                               "refused_streams": 0, "wer": 0.0, "wer_offline": 0.0})
    LoadSections.sweep(fake, "engine", [1, 10], cfg.duration_s, single_stream_s=secs)
    assert ran == [(1, secs), (10, cfg.duration_s)]
    cfg.single_stream_utterances = 0
    assert LoadSections.single_stream_seconds(bench) is None


def test_network_levels_are_shares_of_in_process_capacity_rounded_up():
    """A network level stands for a share of in-process capacity, so sustaining it must mean at least that
    share: 0.7 * 325 = 227.5 gives 228, not 227 (69.8%)."""
    from types import SimpleNamespace

    from speechbench.streaming.bench_config import StreamingBenchConfig
    from speechbench.streaming.network import network_levels

    for cap in (325, 300, 350, 7):
        bench = SimpleNamespace(cfg=StreamingBenchConfig(), capacity_of=lambda name, cap=cap: cap)
        levels = network_levels(bench)
        assert levels[-1] == cap and len(levels) == 3
        assert all(n >= 0.5 * cap for n in levels) and levels[1] / cap >= 0.7 and (levels[1] - 1) / cap < 0.7
    assert network_levels(SimpleNamespace(cfg=StreamingBenchConfig(), capacity_of=lambda n: 325))[1] == 228
