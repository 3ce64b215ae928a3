"""An Alpha158-style feature set, vectorised across stocks (wide date × code frames).

Every feature at date t uses bars up to and including t only. Families:

- candle shape: KMID, KLEN, KMID2, KUP, KUP2, KLOW, KLOW2, KSFT, KSFT2
- price ratios: OPEN0, HIGH0, LOW0, VWAP0
- per window d in ``WINDOWS``: ROC, MA, STD, BETA (slope), RSQR, RESI, MAX, MIN,
  QTLU, QTLD, RANK, RSV, IMAX, IMIN, CORR (close vs log volume), CNTP, CNTN,
  SUMP, SUMN, VMA, VSTD

Prices are scaled by the current close so features compare across stocks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WINDOWS = (5, 10, 20, 30, 60)
EPS = 1e-12


def wide(bars: pd.DataFrame, column: str) -> pd.DataFrame:
    """A date × code frame of one bar column (suspended days left as NaN)."""
    live = bars[~bars["suspended"]] if "suspended" in bars else bars
    return live.pivot(index="date", columns="code", values=column).sort_index()


def _slope_rsqr_resi(y: pd.DataFrame, d: int) -> tuple[pd.DataFrame, pd.DataFrame,
                                                      pd.DataFrame]:
    """Rolling least-squares of y on 0..d-1: slope, R², and the last point's residual."""
    t = pd.DataFrame(np.arange(len(y), dtype=float)[:, None].repeat(y.shape[1], 1),
                     index=y.index, columns=y.columns)
    sum_y = y.rolling(d).sum()
    sum_ty = (t * y).rolling(d).sum()
    t0 = t - (d - 1)
    sum_xy = sum_ty - t0 * sum_y  # x = t - t0 runs 0..d-1 within the window
    mean_x = (d - 1) / 2.0
    var_x = (d * d - 1) / 12.0
    mean_y = sum_y / d
    cov = sum_xy / d - mean_x * mean_y
    slope = cov / var_x
    var_y = y.rolling(d).var(ddof=0)
    rsqr = (cov**2) / (var_x * var_y + EPS)
    fitted_last = mean_y + slope * (d - 1 - mean_x)
    return slope, rsqr, y - fitted_last


def alpha158(bars: pd.DataFrame, windows: tuple[int, ...] = WINDOWS) -> pd.DataFrame:
    """Features for every (code, date) of ``bars``, as a long frame indexed by (date, code)."""
    o, h, lo, c = (wide(bars, k) for k in ("open", "high", "low", "close"))
    v = wide(bars, "volume")
    amount = wide(bars, "amount")
    f: dict[str, pd.DataFrame] = {
        "KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / (h - lo + EPS),
        "KUP": (h - np.maximum(o, c)) / o, "KUP2": (h - np.maximum(o, c)) / (h - lo + EPS),
        "KLOW": (np.minimum(o, c) - lo) / o, "KLOW2": (np.minimum(o, c) - lo) / (h - lo + EPS),
        "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / (h - lo + EPS),
        "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c,
        "VWAP0": (amount / (v + EPS)) / c,
    }
    change = c - c.shift(1)
    log_v = np.log(v + 1)
    for d in windows:
        slope, rsqr, resi = _slope_rsqr_resi(c, d)
        hi_d, lo_d = h.rolling(d).max(), lo.rolling(d).min()
        f[f"ROC{d}"] = c.shift(d) / c
        f[f"MA{d}"] = c.rolling(d).mean() / c
        f[f"STD{d}"] = c.rolling(d).std(ddof=0) / c
        f[f"BETA{d}"] = slope / c
        f[f"RSQR{d}"] = rsqr
        f[f"RESI{d}"] = resi / c
        f[f"MAX{d}"] = hi_d / c
        f[f"MIN{d}"] = lo_d / c
        f[f"QTLU{d}"] = c.rolling(d).quantile(0.8) / c
        f[f"QTLD{d}"] = c.rolling(d).quantile(0.2) / c
        f[f"RANK{d}"] = c.rolling(d).rank(pct=True)
        f[f"RSV{d}"] = (c - lo_d) / (hi_d - lo_d + EPS)
        f[f"IMAX{d}"] = h.rolling(d).apply(np.argmax, raw=True) / d
        f[f"IMIN{d}"] = lo.rolling(d).apply(np.argmin, raw=True) / d
        f[f"CORR{d}"] = c.rolling(d).corr(log_v)
        f[f"CNTP{d}"] = (change > 0).astype(float).where(change.notna()).rolling(d).mean()
        f[f"CNTN{d}"] = (change < 0).astype(float).where(change.notna()).rolling(d).mean()
        moves = change.abs().rolling(d).sum() + EPS
        f[f"SUMP{d}"] = change.clip(lower=0).rolling(d).sum() / moves
        f[f"SUMN{d}"] = (-change).clip(lower=0).rolling(d).sum() / moves
        f[f"VMA{d}"] = v.rolling(d).mean() / (v + EPS)
        f[f"VSTD{d}"] = v.rolling(d).std(ddof=0) / (v + EPS)
    stacked = {name: frame.stack(future_stack=True) for name, frame in f.items()}
    out = pd.DataFrame(stacked)
    out.index = out.index.set_names(["date", "code"])
    return out.replace([np.inf, -np.inf], np.nan)


def forward_return(bars: pd.DataFrame, horizon: int) -> pd.Series:
    """The label: close-to-close return from t to t+horizon (known only at t+horizon)."""
    c = wide(bars, "close")
    label = (c.shift(-horizon) / c - 1).stack(future_stack=True)
    label.index = label.index.set_names(["date", "code"])
    return label.rename(f"ret_{horizon}d")
