"""Backtest tasks: ``strategy`` (SMA crossover, momentum, mean reversion, model signal),
``optimize`` (grid search fanned out across the cluster), ``portfolio`` (top-k with
rebalancing) and ``risk`` (the strategy's full risk statistics).

``optimize`` takes the rows of pairs an earlier sweep of the same inputs computed from the
owner's sweep cache (when the task has one) and sweeps the others only. It checkpoints
each finished piece's rows, and a new attempt sweeps only the pieces its checkpoint lacks;
the other kinds are one simulation each and restart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..context import TaskExecutionContext
from ..lineage import builtin_digest, library_versions
from ..quant import backtest as bt
from ..quant import risk
from ..quant.costs import CostModel
from ..quant.features import alpha158, wide
from ..quant.portfolio import run_portfolio, top_k_weights
from ..quant.sweep_cache import SweepCache
from ..resources import Resources
from .params import BacktestParams

#: the kind of an ``optimize`` checkpoint (and its format): another is not resumed
OPTIMIZE_CHECKPOINT = "optimize/2"
#: the parameters an ``optimize`` row does not depend on beside its own pair: the grid's,
#: and those that only choose the bars (the bars' content stands for them)
NOT_IN_ROWS = frozenset({"fast_values", "slow_values", "search", "samples", "chunks",
                         "source", "stock_code", "start", "end", "seed"})


def backtest(params: BacktestParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    if params.kind == "portfolio":
        return portfolio(params, ctx)
    ctx.report_progress(0.05, "loading bars", stage="data")
    resources = Resources.of(ctx)
    bars = resources.load_bars(params.source, [params.stock_code], params.start, params.end,
                               params.seed)
    market = bt.Market.from_bars(bars)
    costs = CostModel(params.commission_rate, params.commission_min)
    ctx.check_cancelled()
    if params.kind == "optimize":
        content = bars_content(bars)  # hashed once, for both digests
        return optimize(params, market, costs, ctx, work_digest(params, content),
                        rows_key(params, content))
    ctx.report_progress(0.3, f"simulating {params.strategy}", stage="simulate")
    # signals read adjusted prices; the engine trades raw ones and applies the ex-dates
    result = bt.run(market, signal(params, market.adjusted_close, bars, resources),
                    params.cash, costs)
    out: dict[str, Any] = {"kind": params.kind, "stock_code": params.stock_code,
                           "strategy": params.strategy, **result.to_dict()}
    traded = float((result.trades["qty"] * result.trades["price"]).sum())
    ctx.report_progress(0.8, "risk statistics", stage="risk")
    adjusted = market.adjusted_close  # buy and hold with dividends reinvested
    buy_hold = adjusted / adjusted[0] * params.cash
    out["risk"] = risk.summary(result.equity, benchmark=buy_hold, traded=traded)
    out["benchmark_total_return"] = float(buy_hold[-1] / buy_hold[0] - 1)
    step = max(1, len(result.equity) // 600)  # the points of equity_curve
    out["benchmark_curve"] = [round(float(x), 2) for x in buy_hold[::step]]
    ctx.report_progress(1.0, "done", stage="done")
    return out


def signal(params: BacktestParams, close: np.ndarray, bars: pd.DataFrame,
           resources: Resources | None = None) -> np.ndarray:
    if params.strategy == "sma":
        return bt.sma_crossover(close, params.fast, params.slow)
    if params.strategy == "momentum":
        return bt.momentum(close, params.lookback)
    if params.strategy == "mean_reversion":
        return bt.mean_reversion(close, params.window, params.entry_z)
    if resources is None:
        raise ValueError("strategy 'model' needs the task's resources to find its model")
    scores = model_scores(params, bars, resources)[params.stock_code]
    dates = pd.DatetimeIndex(bars.sort_values("date")["date"])
    return (scores.reindex(dates) > params.threshold).astype(float).to_numpy()


def model_scores(params: BacktestParams, bars: pd.DataFrame,
                 resources: Resources) -> pd.DataFrame:
    """A registry model's predicted returns, date × code, from features known at each close."""
    assert params.model_id is not None
    model, meta = resources.model_registry(params.registry).load(params.model_id)
    feats = alpha158(bars, tuple(meta["windows"]))[meta["features"]].dropna()
    predicted = pd.Series(model.predict(feats), index=feats.index)
    return predicted.unstack("code")


def portfolio(params: BacktestParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """Hold the ``top_k`` stocks by score (momentum, or a model's predicted return), equal
    weighted, re-chosen every ``rebalance_days``."""
    ctx.report_progress(0.05, "loading bars", stage="data")
    resources = Resources.of(ctx)
    bars = resources.load_bars(params.source, params.codes, params.start, params.end,
                               params.seed)
    markets = {code: bt.Market.from_bars(frame) for code, frame in bars.groupby("code")}
    close = wide(bars, "close")  # adjusted by the factor
    if params.strategy == "model":
        scores = model_scores(params, bars, resources)
    else:
        scores = close / close.shift(params.lookback) - 1
    suspended = bars.pivot(index="date", columns="code", values="suspended")
    weights = top_k_weights(scores.reindex(suspended.index), params.top_k,
                            params.rebalance_days, suspended)
    ctx.check_cancelled()
    ctx.report_progress(0.4, f"simulating {len(markets)} stocks", stage="simulate")
    costs = CostModel(params.commission_rate, params.commission_min)
    res = run_portfolio(markets, weights, params.cash, costs)
    equity = res["equity"]
    equal_weight = (close.ffill().bfill() / close.ffill().bfill().iloc[0]).mean(axis=1)
    ctx.report_progress(1.0, "done", stage="done")
    step = max(1, len(equity) // 600)
    return {"kind": "portfolio", "codes": params.codes, "top_k": params.top_k,
            "rebalance_days": params.rebalance_days,
            "total_return": float(equity[-1] / equity[0] - 1),
            "fees": float(sum(t["fee"] for t in res["trades"])), "trades": len(res["trades"]),
            "dividends": res["dividends"], "dividend_tax": res["dividend_tax"],
            "equity_curve": [round(float(x), 2) for x in equity[::step]],
            "equity_dates": [d.strftime("%Y-%m-%d") for d in res["dates"][::step]],
            "trade_log": res["trades"][:500], "final_positions": res["final_positions"],
            "risk": risk.summary(equity, benchmark=equal_weight.reindex(res["dates"]).ffill()
                                 .to_numpy() * params.cash, traded=res["traded"]),
            "benchmark": "equal-weight buy and hold of the universe"}


def bars_content(bars: pd.DataFrame) -> bytes:
    """The bars' columns and content as bytes, for the digests below."""
    return "\x1f".join(map(str, bars.columns)).encode() \
        + pd.util.hash_pandas_object(bars, index=False).to_numpy().tobytes()


def work_digest(params: BacktestParams, content: bytes) -> str:
    """What a checkpoint is valid for: these parameters and bars (``content``: a source
    rewritten between attempts, or an ``end`` that defaults to a later day, restarts the
    work)."""
    return hashlib.sha256(params.model_dump_json().encode() + content).hexdigest()


def rows_key(params: BacktestParams, content: bytes) -> str:
    """What each row of an ``optimize`` sweep depends on beside its own pair, hashed: the
    bars' ``content``, the code of the handlers and quant library, the numeric libraries'
    versions and every parameter but :data:`NOT_IN_ROWS` (one added later counts until
    it is listed there). Sweeps under one key share rows through the sweep cache."""
    shared = params.model_dump(mode="json", exclude=set(NOT_IN_ROWS))
    text = json.dumps([builtin_digest(), library_versions(), shared], sort_keys=True)
    return hashlib.sha256(text.encode() + content).hexdigest()


def optimize(params: BacktestParams, market: bt.Market, costs: CostModel,
             ctx: TaskExecutionContext, digest: str, key: str) -> dict[str, Any]:
    """Grid search of SMA pairs, split into ``chunks`` run in parallel as Ray tasks.

    With ``ctx.cache_dir`` set, the rows of pairs an earlier sweep computed under ``key``
    (:func:`rows_key`) come from the sweep cache, only the other pairs are split into
    pieces and swept, and their rows are added to the cache. Each piece's rows go into
    the checkpoint as the piece finishes, beside the rows the cache gave (``digest``
    says what they were computed from); a resumed attempt takes both from it and sweeps
    only the pieces it lacks. The table is the one an unstopped attempt without a cache
    makes.
    """
    pairs = _pairs(params)
    cache = _sweep_cache(ctx, key)
    finished = _finished_work(ctx, digest)
    if finished is None:
        cached = cache.rows(pairs) if cache is not None else pd.DataFrame()
        done: dict[int, pd.DataFrame] = {}
    else:
        cached, done = finished
    reused = _pair_set(cached)
    missing = [pair for pair in pairs if pair not in reused]
    pieces = [missing[i::params.chunks] for i in range(params.chunks)
              if missing[i::params.chunks]]
    todo = [i for i in range(len(pieces)) if i not in done]
    if cache is not None:
        ctx.report_progress(0.1, f"{len(reused)} of {len(pairs)} pairs from the cache",
                            stage="sweep")
    if done:
        ctx.report_progress(0.1 + 0.85 * len(done) / len(pieces),
                            f"resuming: {len(done)}/{len(pieces)} pieces done", stage="sweep")

    def keep(k: int, table: pd.DataFrame) -> None:
        done[todo[k]] = table
        ctx.save_checkpoint(_checkpoint(digest, cached, done))

    if todo:
        run_pieces(market, [pieces[i] for i in todo], params.cash, costs, ctx, keep,
                   offset=len(done))
    swept = [done[i] for i in range(len(pieces))]
    if cache is not None and swept:
        cache.add(pd.concat(swept, ignore_index=True))
    table = pd.concat(([cached] if len(cached) else []) + swept, ignore_index=True)
    # ties of Sharpe (every pair that never trades has 0) in pair order: the table does
    # not depend on which rows came from the cache
    table = table.sort_values(["sharpe", "fast", "slow"], ascending=[False, True, True])
    best = table.iloc[0]
    ctx.report_progress(1.0, f"{len(table)} backtests", stage="done")
    return {"kind": "optimize", "stock_code": params.stock_code, "search": params.search,
            "combinations": len(table),
            "best": {"fast": int(best["fast"]), "slow": int(best["slow"]),
                     "sharpe": float(best["sharpe"]),
                     "total_return": float(best["total_return"])},
            "top": table.head(20).to_dict("records"),
            # every pair's Sharpe, for a heat-map (a grid holds at most 200 x 200 pairs)
            "sweep": {"fast": table["fast"].astype(int).tolist(),
                      "slow": table["slow"].astype(int).tolist(),
                      "sharpe": [round(float(x), 4) for x in table["sharpe"]]}}


def _pairs(params: BacktestParams) -> list[tuple[int, int]]:
    """The (fast, slow) pairs a sweep backtests, in grid order."""
    pairs = bt.grid(params.fast_values, params.slow_values)
    if not pairs:
        raise ValueError("fast_values and slow_values give no pair with fast < slow")
    if params.search == "random" and params.samples < len(pairs):
        picks = np.random.default_rng(params.seed).choice(len(pairs), params.samples,
                                                          replace=False)
        pairs = [pairs[i] for i in sorted(picks)]
    return pairs


def _sweep_cache(ctx: TaskExecutionContext, key: str) -> SweepCache | None:
    """The owner's sweep rows under ``key``, when the task takes cached results."""
    return None if ctx.cache_dir is None else SweepCache(ctx.cache_dir / "sweeps", key)


def _pair_set(table: pd.DataFrame) -> set[tuple[int, int]]:
    if not len(table):
        return set()
    return set(zip(table["fast"].tolist(), table["slow"].tolist(), strict=True))


def _checkpoint(digest: str, cached: pd.DataFrame,
                done: dict[int, pd.DataFrame]) -> dict[str, Any]:
    """An ``optimize`` checkpoint: the rows the cache gave, and each finished piece's."""
    columns = list(next(iter(done.values())).columns)
    return {"kind": OPTIMIZE_CHECKPOINT, "digest": digest, "columns": columns,
            "cached": cached.reindex(columns=columns).to_numpy(object).tolist(),
            "pieces": [[i, done[i].to_numpy(object).tolist()] for i in sorted(done)]}


def _finished_work(ctx: TaskExecutionContext,
                   digest: str) -> tuple[pd.DataFrame, dict[int, pd.DataFrame]] | None:
    """The rows ``ctx.checkpoint`` holds when it is a checkpoint of this work: those the
    cache gave, and the finished pieces' by index."""
    state = ctx.checkpoint
    if not (isinstance(state, dict) and state.get("kind") == OPTIMIZE_CHECKPOINT
            and state.get("digest") == digest):
        return None
    # rows of Python ints and floats: each column comes back with the dtype it had
    columns = state["columns"]
    return (pd.DataFrame(state["cached"], columns=columns),
            {int(i): pd.DataFrame(rows, columns=columns) for i, rows in state["pieces"]})


def run_pieces(market: bt.Market, pieces: list[list[tuple[int, int]]], cash: float,
               costs: CostModel, ctx: TaskExecutionContext | None = None,
               on_piece: Callable[[int, pd.DataFrame], None] | None = None,
               offset: int = 0) -> list[pd.DataFrame]:
    """Sweep each piece as its own Ray task when Ray is up (locally otherwise).

    ``on_piece(k, table)`` is called as ``pieces[k]`` finishes; progress counts
    ``offset`` pieces as done before these.
    """
    from ..runtime.fanout import Fanout

    sweep = Fanout(bt.sweep_sma, market, parallel=len(pieces) > 1)
    return sweep.map([(piece, cash, costs) for piece in pieces], ctx,
                     None if ctx is None else partial(_sweep_progress, ctx, offset), on_piece)


def _sweep_progress(ctx: TaskExecutionContext, before: int, done: int, total: int) -> None:
    """A sweep's finished pieces, after ``before`` pieces an earlier attempt finished, as
    the 10-95 % stretch of the task's progress."""
    done, total = before + done, before + total
    ctx.report_progress(0.1 + 0.85 * done / total, f"{done}/{total} pieces", stage="sweep")
