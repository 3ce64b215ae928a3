"""Alpha158 feature by feature against direct formulas written from Qlib's definitions
(qlib/contrib/data/loader.py and the operators of qlib/data/ops.py); per stock, whatever
else is in the frame; no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import percentileofscore

from raytasks.quant.features import alpha158, forward_return
from raytasks.quant.synthetic import generate_bars

WINDOWS = (5, 10, 20, 30, 60)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    # suspensions and ex-dates (dividends, share issues) inside the span
    return generate_bars(["000001.SZ", "688111.SH"], "2019-03-01", "2020-06-30", seed=9,
                         suspension_rate=0.02)


@pytest.fixture(scope="module")
def feats(bars: pd.DataFrame) -> pd.DataFrame:
    return alpha158(bars, WINDOWS)


def _inputs(b: pd.DataFrame) -> dict[str, pd.Series]:
    """$open..$vwap as Qlib's data holds them: adjusted by the factor, NaN when suspended."""
    b = b.set_index("date")
    live = ~b["suspended"]
    f = b["adj_factor"]
    x = {k: (b[k] * f).where(live) for k in ("open", "high", "low", "close")}
    x["volume"] = (b["volume"] / f).where(live)
    x["vwap"] = (b["amount"] / x["volume"]).where(live)
    return x


def _windows(s: pd.Series, d: int) -> list[np.ndarray]:
    """Each rolling window (partial at the start: min_periods=1), as a raw array."""
    v = s.to_numpy(float)
    return [v[max(0, t - d + 1):t + 1] for t in range(len(v))]


def _apply(s: pd.Series, d: int, fn) -> pd.Series:  # type: ignore[no-untyped-def]
    out = [fn(w) if np.isfinite(w).any() else np.nan for w in _windows(s, d)]
    return pd.Series(out, index=s.index, dtype=float)


def _fit(w: np.ndarray, d: int) -> tuple[float, float, float]:
    """Least squares of the window's values on their positions (the last at d)."""
    x = np.arange(d - len(w) + 1, d + 1, dtype=float)
    ok = ~np.isnan(w)
    if ok.sum() < 2:
        return np.nan, np.nan, np.nan
    slope, intercept = np.polyfit(x[ok], w[ok], 1)
    r2 = np.corrcoef(x[ok], w[ok])[0, 1] ** 2 if np.std(w[ok]) > 0 else np.nan
    return slope, r2, w[-1] - (intercept + slope * d)


def _corr(a: pd.Series, b: pd.Series, d: int) -> pd.Series:
    out = []
    for wa, wb in zip(_windows(a, d), _windows(b, d), strict=True):
        ok = ~np.isnan(wa) & ~np.isnan(wb)
        out.append(np.corrcoef(wa[ok], wb[ok])[0, 1] if ok.sum() > 1 and np.std(wa[ok]) > 0
                   and np.std(wb[ok]) > 0 else np.nan)
    res = pd.Series(out, index=a.index)
    flat = np.isclose(a.rolling(d, min_periods=1).std(), 0, atol=2e-5) | \
        np.isclose(b.rolling(d, min_periods=1).std(), 0, atol=2e-5)
    return res.mask(flat)


def _direct(x: dict[str, pd.Series]) -> dict[str, pd.Series]:
    o, h, lo, c, v, vwap = (x[k] for k in ("open", "high", "low", "close", "volume", "vwap"))
    out = {
        "KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / (h - lo + 1e-12),
        "KUP": (h - np.maximum(o, c)) / o,
        "KUP2": (h - np.maximum(o, c)) / (h - lo + 1e-12),
        "KLOW": (np.minimum(o, c) - lo) / o, "KLOW2": (np.minimum(o, c) - lo) / (h - lo + 1e-12),
        "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / (h - lo + 1e-12),
        "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": vwap / c,
    }
    prev_c, prev_v = c.shift(1), v.shift(1)
    for d in WINDOWS:
        fit = [_fit(w, d) for w in _windows(c, d)]
        std = c.rolling(d, min_periods=1).std()
        r2 = pd.Series([f[1] for f in fit], index=c.index).mask(np.isclose(std, 0, atol=2e-5))
        hi_d = _apply(h, d, np.nanmax)
        lo_d = _apply(lo, d, np.nanmin)
        imax = _apply(h, d, lambda w: np.argmax(w) + 1)
        imin = _apply(lo, d, lambda w: np.argmin(w) + 1)
        up = (c > prev_c).astype(float)   # a comparison with NaN is False, as in numpy
        down = (c < prev_c).astype(float)
        gain = (c - prev_c).clip(lower=0)
        loss = (prev_c - c).clip(lower=0)
        move = (c - prev_c).abs()
        vgain, vloss, vmove = (v - prev_v).clip(lower=0), (prev_v - v).clip(lower=0), \
            (v - prev_v).abs()
        wv = (c / prev_c - 1).abs() * v
        total = {k: _apply(s, d, np.nansum) for k, s in (("g", gain), ("l", loss), ("m", move),
                                                         ("vg", vgain), ("vl", vloss),
                                                         ("vm", vmove))}
        out |= {
            f"ROC{d}": c.shift(d) / c,
            f"MA{d}": _apply(c, d, np.nanmean) / c,
            f"STD{d}": _apply(c, d, lambda w: np.nanstd(w, ddof=1) if np.isfinite(w).sum() > 1
                              else np.nan) / c,
            f"BETA{d}": pd.Series([f[0] for f in fit], index=c.index) / c,
            f"RSQR{d}": r2,
            f"RESI{d}": pd.Series([f[2] for f in fit], index=c.index) / c,
            f"MAX{d}": hi_d / c, f"MIN{d}": lo_d / c,
            f"QTLU{d}": _apply(c, d, lambda w: np.nanquantile(w, 0.8)) / c,
            f"QTLD{d}": _apply(c, d, lambda w: np.nanquantile(w, 0.2)) / c,
            f"RANK{d}": _apply(c, d, lambda w: np.nan if np.isnan(w[-1]) else
                               percentileofscore(w[~np.isnan(w)], w[-1]) / 100),
            f"RSV{d}": (c - lo_d) / (hi_d - lo_d + 1e-12),
            f"IMAX{d}": imax / d, f"IMIN{d}": imin / d, f"IMXD{d}": (imax - imin) / d,
            f"CORR{d}": _corr(c, np.log(v + 1), d),
            f"CORD{d}": _corr(c / prev_c, np.log(v / prev_v + 1), d),
            f"CNTP{d}": _apply(up, d, np.mean), f"CNTN{d}": _apply(down, d, np.mean),
            f"CNTD{d}": _apply(up, d, np.mean) - _apply(down, d, np.mean),
            f"SUMP{d}": total["g"] / (total["m"] + 1e-12),
            f"SUMN{d}": total["l"] / (total["m"] + 1e-12),
            f"SUMD{d}": (total["g"] - total["l"]) / (total["m"] + 1e-12),
            f"VMA{d}": _apply(v, d, np.nanmean) / (v + 1e-12),
            f"VSTD{d}": _apply(v, d, lambda w: np.nanstd(w, ddof=1)
                               if np.isfinite(w).sum() > 1 else np.nan) / (v + 1e-12),
            f"WVMA{d}": _apply(wv, d, lambda w: np.nanstd(w, ddof=1) if np.isfinite(w).sum() > 1
                               else np.nan) / (_apply(wv, d, np.nanmean) + 1e-12),
            f"VSUMP{d}": total["vg"] / (total["vm"] + 1e-12),
            f"VSUMN{d}": total["vl"] / (total["vm"] + 1e-12),
            f"VSUMD{d}": (total["vg"] - total["vl"]) / (total["vm"] + 1e-12),
        }
    return out


def test_all_158_features_match_qlib_formulas(bars: pd.DataFrame, feats: pd.DataFrame) -> None:
    assert feats.shape[1] == 158
    assert bars["suspended"].sum() > 5 and (bars["cash_div"] > 0).sum() >= 2
    for code, b in bars.groupby("code"):
        got = feats.xs(code, level="code")
        direct = _direct(_inputs(b))
        assert set(direct) == set(got.columns)
        for name, series in direct.items():
            want = series.replace([np.inf, -np.inf], np.nan).to_numpy(float)
            np.testing.assert_allclose(got[name].to_numpy(float), want, rtol=1e-8, atol=1e-10,
                                       err_msg=f"{code} {name}")


def test_a_stock_s_features_do_not_depend_on_the_universe(bars: pd.DataFrame,
                                                          feats: pd.DataFrame) -> None:
    # Given the same stock alone and beside others with their own suspensions
    others = generate_bars(["300750.SZ", "600000.SH"], "2019-01-01", "2020-06-30", seed=2,
                           suspension_rate=0.05)
    alone = alpha158(bars[bars["code"] == "000001.SZ"], WINDOWS)
    crowd = alpha158(pd.concat([bars, others]), WINDOWS)
    pd.testing.assert_frame_equal(crowd.xs("000001.SZ", level="code"),
                                  alone.xs("000001.SZ", level="code"))
    pd.testing.assert_frame_equal(feats.xs("000001.SZ", level="code"),
                                  alone.xs("000001.SZ", level="code"))


def test_features_never_look_ahead(bars: pd.DataFrame, feats: pd.DataFrame) -> None:
    # Given later prices, volumes and adjustment factors changed (a later ex-date included)
    cut = pd.Timestamp("2020-01-02")
    changed = bars.copy()
    later = changed["date"] > cut
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.3
    changed.loc[later, "volume"] *= 5
    changed.loc[later, "adj_factor"] *= 2
    again = alpha158(changed, WINDOWS)
    before = feats.index.get_level_values("date") <= cut
    pd.testing.assert_frame_equal(again[before], feats[before])


def test_labels_are_future_adjusted_returns(bars: pd.DataFrame) -> None:
    label = forward_return(bars, 5).xs("000001.SZ", level="code")
    adj = _inputs(bars[bars.code == "000001.SZ"])["close"]
    np.testing.assert_allclose(label.to_numpy(), (adj.shift(-5) / adj - 1).to_numpy())
