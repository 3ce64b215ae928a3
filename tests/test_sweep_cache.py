"""The optimize sweep takes rows from its owner's sweep cache: a sweep widened by a few
values computes only the new pairs, and its result is the one a sweep with no cache makes.

The handler runs directly with a real :class:`TaskExecutionContext` on synthetic bars, its
``Fanout`` sweeping the pieces in this process, one after another (as when Ray is not up).
What an attempt computed is read from its checkpoints: each holds the rows of the pieces it
swept, and none of the rows the cache gave. Results are compared as JSON text too, where an
int read back as a float would show.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from raytasks.handlers.backtests import backtest
from raytasks.handlers.params import BacktestParams
from raytasks.quant import backtest as bt
from raytasks.quant.sweep_cache import SweepCache
from raytasks.runtime import fanout
from raytasks.settings import Settings
from tests.quant.test_resume import Attempt, attempt

#: 3 x 4 pairs over a year and a half of bars (360): each sweep takes a fraction of a
#: second. A 400-bar average never forms, so the pairs of slow 400 never trade and tie at a
#: Sharpe ratio of 0.
NARROW = {"kind": "optimize", "stock_code": "000001.SZ", "start": "2022-01-01",
          "end": "2023-06-30", "chunks": 2, "fast_values": [2, 5, 8],
          "slow_values": [10, 20, 30, 400]}
#: the same grid widened by a fast and a slow value: 7 more pairs, 19 in all
WIDE = {**NARROW, "fast_values": [2, 5, 8, 11], "slow_values": [10, 20, 30, 40, 400]}
NEW_PAIRS = {(2, 40), (5, 40), (8, 40), (11, 20), (11, 30), (11, 40), (11, 400)}


def swept(run: Attempt) -> set[tuple[int, int]]:
    """The pairs an attempt's sweep computed (its last checkpoint's pieces, less those an
    earlier attempt's checkpoint held)."""
    return _pieces_pairs(run.checkpoints[-1]) if run.checkpoints else set()


def _pieces_pairs(checkpoint: dict[str, Any]) -> set[tuple[int, int]]:
    columns = checkpoint["columns"]
    fast, slow = columns.index("fast"), columns.index("slow")
    return {(row[fast], row[slow]) for _, rows in checkpoint["pieces"] for row in rows}


@pytest.fixture(autouse=True)
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces are swept here, in order, even when an earlier test of the session started
    Ray (a preemption then stops after exactly the pieces checkpointed)."""
    monkeypatch.setattr(fanout.ray, "is_initialized", lambda: False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def sweep(params: dict[str, Any], settings: Settings, cache_dir: Path | None,
          checkpoint: Any = None, preempt_after: int | None = None) -> Attempt:
    """Run the backtest handler once, with ``cache_dir`` as the task's cache (None: off),
    from ``checkpoint``, preempted once it has saved ``preempt_after`` checkpoints."""
    return attempt(backtest, BacktestParams(**params), settings, checkpoint, preempt_after,
                   task_type="backtest", cache_dir=cache_dir)


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal, and equal as JSON (2 and 2.0 are equal in Python, not in JSON)."""
    return a == b and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_widened_sweep_computes_only_the_new_pairs(settings: Settings,
                                                      cache_dir: Path) -> None:
    # Given a sweep of 12 pairs with a cache, and the widened grid swept with none
    first = sweep(NARROW, settings, cache_dir)
    assert "0 of 12 pairs from the cache" in first.messages and len(swept(first)) == 12
    uncached = sweep(WIDE, settings, None)
    # When the widened grid is swept with the cache
    widened = sweep(WIDE, settings, cache_dir)
    # Then 12 of its 19 pairs came from the cache and it swept the 7 new ones only
    assert "12 of 19 pairs from the cache" in widened.messages
    assert swept(widened) == NEW_PAIRS
    # and its result is the one of the sweep without a cache, order and types alike (ties
    # of Sharpe included)
    assert widened.result is not None and widened.result["combinations"] == 19
    assert widened.result["sweep"]["sharpe"].count(0.0) >= 4
    assert same(widened.result, uncached.result)
    # and a third sweep finds all 19 in the cache, sweeps nothing, and agrees
    again = sweep(WIDE, settings, cache_dir)
    assert "19 of 19 pairs from the cache" in again.messages and not again.checkpoints
    assert same(again.result, uncached.result)


def test_rows_come_from_the_cache_not_from_a_new_sweep(settings: Settings,
                                                       cache_dir: Path) -> None:
    # Given a cached sweep whose row of (5, 30) is rewritten with a Sharpe no pair reaches
    sweep(NARROW, settings, cache_dir)
    [path] = (cache_dir / "sweeps").glob("*.json")
    data = json.loads(path.read_text())
    fast, slow, sharpe = (data["columns"].index(c) for c in ("fast", "slow", "sharpe"))
    [row] = [r for r in data["rows"] if (r[fast], r[slow]) == (5, 30)]
    row[sharpe] = 99.0
    path.write_text(json.dumps(data))
    # When the widened grid is swept
    widened = sweep(WIDE, settings, cache_dir)
    # Then the rewritten row is its best: the row was read, not computed again
    assert widened.result is not None
    assert widened.result["best"]["sharpe"] == 99.0
    assert (widened.result["best"]["fast"], widened.result["best"]["slow"]) == (5, 30)


def test_without_a_cache_nothing_is_written_and_results_agree(settings: Settings,
                                                              tmp_path: Path) -> None:
    # Given a task that takes no cached results
    # When it sweeps, twice
    first, second = sweep(NARROW, settings, None), sweep(NARROW, settings, None)
    # Then each swept every pair, said nothing of a cache, and wrote no cache file
    assert len(swept(first)) == len(swept(second)) == 12
    assert not any("from the cache" in m for m in first.messages + second.messages)
    assert not list(tmp_path.rglob("*.json")) and not (tmp_path / "cache").exists()
    # and its result is the one a sweep with a cache makes, computed or read
    cache_dir = tmp_path / "cache"
    assert same(first.result, second.result)
    assert same(first.result, sweep(NARROW, settings, cache_dir).result)
    assert same(first.result, sweep(NARROW, settings, cache_dir).result)


@pytest.mark.parametrize("other", [{"stock_code": "600000.SH"}, {"end": "2023-03-31"},
                                   {"seed": 8}, {"commission_rate": 0.001},
                                   {"cash": 50_000.0}],
                         ids=["code", "dates", "seed", "commission", "cash"])
def test_other_inputs_take_no_rows(settings: Settings, cache_dir: Path,
                                   other: dict[str, Any]) -> None:
    # Given a cached sweep
    sweep(NARROW, settings, cache_dir)
    # When the same grid is swept over other bars, or with other costs or cash
    changed = sweep({**NARROW, **other}, settings, cache_dir)
    # Then it takes no row from the cache, sweeps every pair, and agrees with no cache
    assert "0 of 12 pairs from the cache" in changed.messages
    assert len(swept(changed)) == 12
    assert same(changed.result, sweep({**NARROW, **other}, settings, None).result)
    assert len(list((cache_dir / "sweeps").glob("*.json"))) == 2


def test_only_the_grid_and_the_pieces_leave_the_key(settings: Settings,
                                                    cache_dir: Path) -> None:
    # Given a cached sweep in 2 pieces
    sweep(NARROW, settings, cache_dir)
    # When a grid of its pairs is searched at random in 3 pieces
    drawn = sweep({**WIDE, "search": "random", "samples": 10, "chunks": 3}, settings,
                  cache_dir)
    # Then the pairs it drew from the first grid came from the cache
    assert drawn.result is not None and drawn.result["combinations"] == 10
    drawn_pairs = set(zip(drawn.result["sweep"]["fast"], drawn.result["sweep"]["slow"],
                          strict=True))
    old, new = drawn_pairs - NEW_PAIRS, drawn_pairs & NEW_PAIRS
    assert old and new
    assert f"{len(old)} of 10 pairs from the cache" in drawn.messages
    assert swept(drawn) == new


@pytest.mark.parametrize("broken", [b"{not json", b"[]", b"\xff\xfe\x00",
                                    b'{"format": 1, "columns": ["fast", "slow"], '
                                    b'"dtypes": {"fast": "int64", "slow": "int64"}, '
                                    b'"rows": [[2, "ten"]]}', "half"],
                         ids=["text", "list", "bytes", "bad-row", "truncated"])
def test_a_broken_cache_file_is_a_miss(settings: Settings, cache_dir: Path,
                                       broken: bytes | str) -> None:
    # Given a cached sweep whose file is then broken
    first = sweep(NARROW, settings, cache_dir)
    [path] = (cache_dir / "sweeps").glob("*.json")
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2] if broken == "half" else bytes(broken))
    # When the sweep runs again
    again = sweep(NARROW, settings, cache_dir)
    # Then it took nothing from the file, swept every pair, and agrees
    assert "0 of 12 pairs from the cache" in again.messages and len(swept(again)) == 12
    assert same(again.result, first.result)
    # and its rows replaced the broken file: the next sweep takes all of them
    assert "12 of 12 pairs from the cache" in sweep(NARROW, settings, cache_dir).messages


def test_a_resumed_sweep_keeps_the_rows_the_cache_gave(settings: Settings,
                                                       cache_dir: Path) -> None:
    # Given a cached sweep, and a widened one preempted after the first of its 2 pieces
    sweep(NARROW, settings, cache_dir)
    first = sweep(WIDE, settings, cache_dir, preempt_after=1)
    assert first.preempted and len(first.checkpoints) == 1
    kept = swept(first)
    # and the cache emptied before the next attempt
    for path in (cache_dir / "sweeps").glob("*.json"):
        path.unlink()
    # When the next attempt starts from the checkpoint
    second = sweep(WIDE, settings, cache_dir, checkpoint=first.checkpoints[-1])
    # Then it swept the other piece only, the cached rows coming from the checkpoint
    assert "12 of 19 pairs from the cache" in second.messages
    assert "resuming: 1/2 pieces done" in second.messages
    assert len(second.checkpoints) == 1 and kept < swept(second) == NEW_PAIRS
    # and its result is the one of a sweep without a cache
    assert same(second.result, sweep(WIDE, settings, None).result)
    # and the rows it computed, over both attempts, are in the cache
    assert "7 of 19 pairs from the cache" in sweep(WIDE, settings, cache_dir).messages


def test_rows_read_back_equal_rows_computed(tmp_path: Path) -> None:
    # Given a sweep's rows (ints and floats, a pair that never trades among them)
    market = bt.Market.from_bars(_bars())
    rows = bt.sweep_sma(market, [(2, 10), (5, 20), (200, 400)])
    assert rows.loc[2, "trades"] == 0
    # When they are cached and read back
    cache = SweepCache(tmp_path, "k1")
    assert cache.add(rows) == 3
    back = cache.rows([(200, 400), (3, 30), (2, 10), (5, 20)])
    # Then the stored pairs come back in the order asked, each row and dtype as computed
    pd.testing.assert_frame_equal(back, rows.iloc[[2, 0, 1]].reset_index(drop=True))
    # and adding them again adds nothing
    assert cache.add(rows) == 0


def test_concurrent_writers_keep_each_others_rows(tmp_path: Path) -> None:
    # Given 8 writers of one key, each with 5 rows of its own
    cache = SweepCache(tmp_path, "k1")
    tables = [pd.DataFrame({"fast": range(w * 5, w * 5 + 5), "slow": 1000,
                            "sharpe": [0.5] * 5}) for w in range(8)]
    start = threading.Barrier(len(tables))

    def write(table: pd.DataFrame) -> None:
        start.wait()
        for i in range(len(table)):  # one row at a time: many read-merge-writes race
            SweepCache(tmp_path, "k1").add(table.iloc[[i]])

    threads = [threading.Thread(target=write, args=(t,)) for t in tables]
    # When they all write at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then the file holds every row, and no temporary file is left
    assert len(cache.rows([(f, 1000) for f in range(40)])) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1.json", "k1.lock"]


def test_a_key_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="letters and digits"):
        SweepCache(tmp_path, "../other")


def _bars() -> pd.DataFrame:
    from raytasks.quant.synthetic import generate_bars

    return generate_bars(["000001.SZ"], "2022-01-01", "2023-06-30", seed=7)
