"""Quant benchmarks: the backtest engine and the GARCH fit, each beside a reference
measured in the same run (a plain-Python loop; plain scipy and ``arch``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray


@ray.remote
def _bare_noop() -> float:
    return time.time()


def run_backtest(fasts: int = 20, slows: int = 40, start: str = "2014-01-01",
                 end: str = "2024-12-31") -> dict[str, Any]:
    """SMA sweep on one stock with its corporate actions (ex-dates, dividend tax, lots):
    backtests/s on 1 worker, on 2 Ray workers, and the kernel's loop run as plain Python."""
    from ..handlers.backtests import run_pieces
    from ..quant import backtest as bt
    from ..quant.costs import CostModel
    from ..quant.signals import sma_crossover
    from ..quant.synthetic import generate_bars

    _ray_up()
    market = bt.Market.from_bars(generate_bars(["000001.SZ"], start, end))
    pairs = bt.grid(list(range(2, 2 + 2 * fasts, 2)), list(range(10, 10 + 10 * slows, 10)))
    costs = CostModel()
    bt.sweep_sma(market, pairs[:4])  # compile the kernel
    run_pieces(market, [pairs[:8], pairs[8:16]], 1e6, costs)  # start two Ray workers

    start_t = time.perf_counter()
    bt.sweep_sma(market, pairs)
    one = len(pairs) / (time.perf_counter() - start_t)
    start_t = time.perf_counter()
    run_pieces(market, [pairs[0::2], pairs[1::2]], 1e6, costs)
    two = len(pairs) / (time.perf_counter() - start_t)

    # the reference: the same kernel loop as plain Python (its order helpers stay compiled)
    naive_pairs = pairs[:6]
    start_t = time.perf_counter()
    for fast, slow in naive_pairs:
        target = sma_crossover(market.adjusted_close, fast, slow)
        bt._kernel.py_func(*bt.kernel_args(market, target, 1e6, costs))
    naive = len(naive_pairs) / (time.perf_counter() - start_t)
    return {"bars": len(market.close), "combinations": len(pairs),
            "ex_dates": int(((market.ratio != 1.0) | (market.cash_div != 0.0)).sum()),
            "one_worker_per_s": one, "two_workers_per_s": two, "speedup": two / one,
            "naive_per_s": naive, "ratio_vs_naive": one / naive}


def format_backtest(f: dict[str, Any]) -> str:
    return "\n".join([
        f"raytasks backtest benchmark (SMA sweep, {f['combinations']} combinations, "
        f"{f['bars']} daily bars, A-share rules, corporate actions on: {f['ex_dates']} "
        "ex-dates)",
        f"  1 worker            : {f['one_worker_per_s']:9.0f} backtests/s",
        f"  2 workers (Ray)     : {f['two_workers_per_s']:9.0f} backtests/s "
        f"(speed-up {f['speedup']:.2f}x)",
        f"  plain Python loop   : {f['naive_per_s']:9.1f} backtests/s "
        f"(raytasks {f['ratio_vs_naive']:.0f}x faster)",
    ])


def _ray_up() -> None:
    if not ray.is_initialized():
        ray.init(address="local", namespace="raytasks-bench", include_dashboard=False,
                 log_to_driver=False, configure_logging=False)


def _fit_one(r: np.ndarray) -> float:
    from ..quant.volatility import fit_garch

    return fit_garch(r).persistence


@ray.remote
def _fit_remote(*series: np.ndarray) -> list[float]:
    return [_fit_one(r) for r in series]


def _timed(fn: Any, items: list[Any]) -> tuple[float, list[Any]]:
    """Mean seconds per item, and the results."""
    start_t = time.perf_counter()
    out = [fn(x) for x in items]
    return (time.perf_counter() - start_t) / len(items), out


def run_volatility(stocks: int = 300, sample: int = 20, start: str = "2016-01-01",
                   end: str = "2024-12-31") -> dict[str, Any]:
    """GARCH(1,1) fit time beside a plain scipy fit and ``arch`` (when installed), on the
    same adjusted returns in the same run; then ``stocks`` fits in one process, fanned out
    as Ray tasks, and the same number of no-op Ray tasks (the fan-out alone)."""
    from ..quant.corporate import adjusted_close
    from ..quant.synthetic import generate_bars
    from ..quant.volatility import fit_garch, fit_garch_reference

    codes = [f"{600000 + 7 * i:06d}.SH" for i in range(stocks)]
    bars = generate_bars(codes, start, end)
    series = [np.diff(np.log(adjusted_close(f[~f["suspended"]])))
              for _, f in bars.groupby("code")]
    fit_garch(series[0])  # compile
    ours_s, ours = _timed(fit_garch, series[:sample])
    ref_s, _ = _timed(fit_garch_reference, series[:2])
    figures: dict[str, Any] = {"returns": len(series[0]), "sample": sample,
                               "raytasks_ms": ours_s * 1e3, "scipy_ms": ref_s * 1e3,
                               "speedup_vs_scipy": ref_s / ours_s}
    import importlib.util

    if importlib.util.find_spec("arch") is not None:  # the dev extra: a comparison only
        from arch import arch_model

        def fit_arch(r: np.ndarray) -> Any:
            return arch_model(r * 100, mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                              rescale=False).fit(disp="off").params

        fit_arch(series[0])
        arch_s, theirs = _timed(fit_arch, series[:sample])
        figures |= {"arch_ms": arch_s * 1e3, "ratio_vs_arch": ours_s / arch_s,
                    "max_param_diff": max(max(abs(g.alpha - p["alpha[1]"]),
                                              abs(g.beta - p["beta[1]"]))
                                          for g, p in zip(ours, theirs, strict=True))}
    _ray_up()
    ray.get([_fit_remote.remote(r) for r in series[:16]])  # warm every worker's numba cache
    start_t = time.perf_counter()
    for r in series:
        _fit_one(r)
    figures["batch_in_process_s"] = time.perf_counter() - start_t
    refs = [ray.put(r) for r in series]
    start_t = time.perf_counter()
    ray.get([_fit_remote.remote(r) for r in refs])
    figures["batch_ray_s"] = time.perf_counter() - start_t
    start_t = time.perf_counter()
    ray.get([_fit_remote.remote(*refs[i::8]) for i in range(8)])
    figures["batch_ray_chunked_s"] = time.perf_counter() - start_t
    start_t = time.perf_counter()
    ray.get([_bare_noop.remote() for _ in refs])
    figures["fanout_only_s"] = time.perf_counter() - start_t
    figures["stocks"] = stocks
    return figures


def format_volatility(f: dict[str, Any]) -> str:
    lines = [
        f"raytasks volatility benchmark (GARCH(1,1), constant mean, Gaussian QMLE, "
        f"{f['returns']} daily returns, mean of {f['sample']} stocks)",
        f"  raytasks (numba)    : {f['raytasks_ms']:9.1f} ms per fit",
        f"  plain scipy         : {f['scipy_ms']:9.1f} ms per fit "
        f"(raytasks {f['speedup_vs_scipy']:.0f}x faster)",
    ]
    if "arch_ms" in f:
        lines.append(f"  arch                : {f['arch_ms']:9.1f} ms per fit "
                     f"(ratio raytasks/arch {f['ratio_vs_arch']:.2f}, target <= 2; "
                     f"max |alpha, beta diff| {f['max_param_diff']:.1e})")
    else:
        lines.append("  arch                : not installed (pip install raytasks[dev])")
    lines += [
        f"  {f['stocks']} stocks in one process   : {f['batch_in_process_s']:6.2f} s",
        f"  {f['stocks']} stocks, a Ray task each : {f['batch_ray_s']:6.2f} s "
        f"(as many no-op Ray tasks alone: {f['fanout_only_s']:.2f} s)",
        f"  {f['stocks']} stocks in 8 Ray tasks   : {f['batch_ray_chunked_s']:6.2f} s",
    ]
    return "\n".join(lines)
