"""Alpha158, exactly as Qlib defines it (``qlib/contrib/data/loader.py``, Alpha158DL), per
stock and on adjusted series.

Each stock is computed alone, on its own trading days from its first to its last bar
(sessions missing from the bars, and suspended days, are NaN, as in Qlib's data), so its
features never depend on which other stocks are in the frame. Inputs are adjusted
(:mod:`raytasks.quant.corporate`): prices times ``adj_factor``, volume divided by it, and
``$vwap = amount / adjusted volume``; every feature at t uses bars up to t only.

Qlib's operator semantics are kept: rolling windows with ``min_periods=1`` (partial windows
at the start); ``Std`` with ddof=1; ``IdxMax``/``IdxMin`` 1-based (``argmax + 1``, a NaN in
the window counting as its first maximum, as numpy does); ``Rank`` the average percentile
of the last value; ``Slope``/``Rsquare``/``Resi`` by least squares on the window's
positions, skipping NaNs; ``Rsquare`` and ``Corr`` NaN where a rolling deviation is within
2e-5 of 0; comparisons False on NaN; the ``1e-12`` guards in denominators. Infinities are
returned as NaN. Names: KMID...KSFT2, OPEN0, HIGH0, LOW0, VWAP0, and 29 rolling families
(ROC, MA, STD, BETA, RSQR, RESI, MAX, MIN, QTLU, QTLD, RANK, RSV, IMAX, IMIN, IMXD, CORR,
CORD, CNTP, CNTN, CNTD, SUMP, SUMN, SUMD, VMA, VSTD, WVMA, VSUMP, VSUMN, VSUMD) per window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from .calendar import trading_days

WINDOWS = (5, 10, 20, 30, 60)
G = 1e-12  # Qlib's guard in denominators


@njit(cache=True)
def _regression(y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Qlib's rolling Slope, Rsquare and Resi: y on positions 1..window of each window
    (the last value at ``window``), NaNs skipped; centred sums for accuracy."""
    n = len(y)
    slope, rsq, resi = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for t in range(n):
        lo = max(0, t - window + 1)
        k, sx, sy = 0, 0.0, 0.0
        for j in range(lo, t + 1):
            if not np.isnan(y[j]):
                k += 1
                sx += window - (t - j)
                sy += y[j]
        if k < 2:
            continue
        mx, my = sx / k, sy / k
        sxx, sxy, syy = 0.0, 0.0, 0.0
        for j in range(lo, t + 1):
            if not np.isnan(y[j]):
                dx, dy = window - (t - j) - mx, y[j] - my
                sxx += dx * dx
                sxy += dx * dy
                syy += dy * dy
        b = sxy / sxx
        slope[t] = b
        rsq[t] = sxy * sxy / (sxx * syy) if syy > 0 else np.nan
        resi[t] = y[t] - (my + b * (window - mx))
    return slope, rsq, resi


@njit(cache=True)
def _idx_extreme(x: np.ndarray, window: int, sign: float) -> np.ndarray:
    """``argmax + 1`` (sign 1) or ``argmin + 1`` (sign -1) of each window as numpy gives it
    (the first NaN if the window has one; the first extreme otherwise); NaN for a window
    with no value."""
    n = len(x)
    out = np.full(n, np.nan)
    for t in range(n):
        lo = max(0, t - window + 1)
        pos, first_nan, count = -1, -1, 0
        for j in range(lo, t + 1):
            if np.isnan(x[j]):
                if first_nan < 0:
                    first_nan = j - lo
            else:
                count += 1
                if pos < 0 or sign * x[j] > sign * x[lo + pos]:
                    pos = j - lo
        if count > 0:
            out[t] = (first_nan if first_nan >= 0 else pos) + 1
    return out


def _near_zero(std: pd.Series) -> np.ndarray:
    return np.asarray(np.isclose(std.to_numpy(), 0, atol=2e-05))


def _one_stock(o: pd.Series, h: pd.Series, lo: pd.Series, c: pd.Series, v: pd.Series,
               vwap: pd.Series, windows: tuple[int, ...]) -> dict[str, pd.Series]:
    hl = h - lo + G
    f: dict[str, pd.Series] = {
        "KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / hl,
        "KUP": (h - np.maximum(o, c)) / o, "KUP2": (h - np.maximum(o, c)) / hl,
        "KLOW": (np.minimum(o, c) - lo) / o, "KLOW2": (np.minimum(o, c) - lo) / hl,
        "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / hl,
        "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": vwap / c,
    }
    c1, v1 = c.shift(1), v.shift(1)
    up = pd.Series(np.greater(c, c1).astype(float), index=c.index)
    down = pd.Series(np.less(c, c1).astype(float), index=c.index)
    gain, loss, move = np.maximum(c - c1, 0), np.maximum(c1 - c, 0), (c - c1).abs()
    vgain, vloss, vmove = np.maximum(v - v1, 0), np.maximum(v1 - v, 0), (v - v1).abs()
    log_v = np.log(v + 1)
    ratio, log_vr = c / c1, np.log(v / v1 + 1)
    wv = (c / c1 - 1).abs() * v
    for d in windows:
        def r(s: pd.Series, d: int = d) -> pd.core.window.rolling.Rolling:
            return s.rolling(d, min_periods=1)

        std_c = r(c).std()
        slope, rsq, resi = _regression(c.to_numpy(float), d)
        rsq[_near_zero(std_c)] = np.nan
        hi_d, lo_d = r(h).max(), r(lo).min()
        imax = _idx_extreme(h.to_numpy(float), d, 1.0)
        imin = _idx_extreme(lo.to_numpy(float), d, -1.0)
        f[f"ROC{d}"] = c.shift(d) / c
        f[f"MA{d}"] = r(c).mean() / c
        f[f"STD{d}"] = std_c / c
        f[f"BETA{d}"] = slope / c
        f[f"RSQR{d}"] = pd.Series(rsq, index=c.index)
        f[f"RESI{d}"] = resi / c
        f[f"MAX{d}"] = hi_d / c
        f[f"MIN{d}"] = lo_d / c
        f[f"QTLU{d}"] = r(c).quantile(0.8) / c
        f[f"QTLD{d}"] = r(c).quantile(0.2) / c
        f[f"RANK{d}"] = r(c).rank(pct=True)
        f[f"RSV{d}"] = (c - lo_d) / (hi_d - lo_d + G)
        f[f"IMAX{d}"] = pd.Series(imax / d, index=c.index)
        f[f"IMIN{d}"] = pd.Series(imin / d, index=c.index)
        f[f"IMXD{d}"] = pd.Series((imax - imin) / d, index=c.index)
        f[f"CORR{d}"] = r(c).corr(log_v).mask(_near_zero(std_c) | _near_zero(r(log_v).std()))
        f[f"CORD{d}"] = r(ratio).corr(log_vr).mask(_near_zero(r(ratio).std())
                                                   | _near_zero(r(log_vr).std()))
        f[f"CNTP{d}"] = r(up).mean()
        f[f"CNTN{d}"] = r(down).mean()
        f[f"CNTD{d}"] = r(up).mean() - r(down).mean()
        f[f"SUMP{d}"] = r(gain).sum() / (r(move).sum() + G)
        f[f"SUMN{d}"] = r(loss).sum() / (r(move).sum() + G)
        f[f"SUMD{d}"] = (r(gain).sum() - r(loss).sum()) / (r(move).sum() + G)
        f[f"VMA{d}"] = r(v).mean() / (v + G)
        f[f"VSTD{d}"] = r(v).std() / (v + G)
        f[f"WVMA{d}"] = r(wv).std() / (r(wv).mean() + G)
        f[f"VSUMP{d}"] = r(vgain).sum() / (r(vmove).sum() + G)
        f[f"VSUMN{d}"] = r(vloss).sum() / (r(vmove).sum() + G)
        f[f"VSUMD{d}"] = (r(vgain).sum() - r(vloss).sum()) / (r(vmove).sum() + G)
    return f


def stock_series(bars: pd.DataFrame) -> pd.DataFrame:
    """One stock's adjusted open/high/low/close/volume/vwap on its own trading days (from its
    first to its last bar; missing sessions and suspended days NaN)."""
    b = bars.sort_values("date").set_index("date")
    try:
        days = trading_days(b.index[0], b.index[-1]).union(b.index)
    except ValueError:  # dates beyond the calendar: the bars' own days
        days = b.index
    live = ~b["suspended"].astype(bool) & (b["volume"] > 0) if "suspended" in b else \
        b["volume"] > 0
    f = b["adj_factor"].fillna(1.0) if "adj_factor" in b else 1.0
    out = pd.DataFrame({k: (b[k] * f).where(live) for k in ("open", "high", "low", "close")})
    out["volume"] = (b["volume"] / f).where(live)
    out["vwap"] = (b["amount"] / out["volume"]).where(live)
    return out.reindex(days)


def alpha158(bars: pd.DataFrame, windows: tuple[int, ...] = WINDOWS) -> pd.DataFrame:
    """Features of every bar of ``bars``, as a long frame indexed by (date, code)."""
    frames = []
    for code, group in bars.groupby("code", sort=True):
        s = stock_series(group)
        feats = pd.DataFrame(_one_stock(s["open"], s["high"], s["low"], s["close"],
                                        s["volume"], s["vwap"], windows))
        feats = feats.loc[pd.DatetimeIndex(group["date"]).sort_values()]
        feats.index = pd.MultiIndex.from_arrays([feats.index, [code] * len(feats)],
                                                names=["date", "code"])
        frames.append(feats)
    out = pd.concat(frames).sort_index(level=["date", "code"])
    return out.replace([np.inf, -np.inf], np.nan)


def wide(bars: pd.DataFrame, column: str, adjust: bool = True) -> pd.DataFrame:
    """A date × code frame of one bar column, adjusted by the factor where it is a price
    (suspended days left as NaN)."""
    live = bars[~bars["suspended"]] if "suspended" in bars else bars
    values = live[column]
    if adjust and column in ("open", "high", "low", "close") and "adj_factor" in live:
        values = values * live["adj_factor"].fillna(1.0)
    return live.assign(_v=values).pivot(index="date", columns="code", values="_v").sort_index()


def forward_return(bars: pd.DataFrame, horizon: int) -> pd.Series:
    """The label: adjusted close-to-close return from t to t+horizon sessions of the stock's
    own calendar (known only at t+horizon; NaN when either day is suspended)."""
    parts = []
    for code, group in bars.groupby("code", sort=True):
        c = stock_series(group)["close"]
        label = (c.shift(-horizon) / c - 1).loc[pd.DatetimeIndex(group["date"]).sort_values()]
        label.index = pd.MultiIndex.from_arrays([label.index, [code] * len(label)],
                                                names=["date", "code"])
        parts.append(label)
    return pd.concat(parts).sort_index().rename(f"ret_{horizon}d")
