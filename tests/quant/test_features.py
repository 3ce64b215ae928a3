"""Alpha158-style features against direct per-stock pandas formulas; no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raytasks.quant.features import alpha158, forward_return
from raytasks.quant.synthetic import generate_bars


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars(["000001.SZ", "600000.SH", "300750.SZ"], "2023-01-01", "2024-06-30",
                         suspension_rate=0.0)


@pytest.fixture(scope="module")
def feats(bars: pd.DataFrame) -> pd.DataFrame:
    return alpha158(bars, windows=(5, 20))


D = 20


def test_features_match_direct_formulas(bars: pd.DataFrame, feats: pd.DataFrame) -> None:
    for code, b in bars.groupby("code"):
        b = b.set_index("date")
        got = feats.xs(code, level="code")
        c, o, h, lo, v = b["close"], b["open"], b["high"], b["low"], b["volume"]
        direct = {
            "KMID": (c - o) / o,
            "KSFT": (2 * c - h - lo) / o,
            "ROC20": c.shift(D) / c,
            "MA20": c.rolling(D).mean() / c,
            "STD20": c.rolling(D).std(ddof=0) / c,
            "MAX20": h.rolling(D).max() / c,
            "QTLU20": c.rolling(D).quantile(0.8) / c,
            "RSV20": (c - lo.rolling(D).min()) / (h.rolling(D).max() - lo.rolling(D).min()),
            "CORR20": c.rolling(D).corr(np.log(v + 1)),
            "VMA20": v.rolling(D).mean() / v,
            "BETA20": c.rolling(D).apply(lambda y: np.polyfit(np.arange(D), y, 1)[0],
                                         raw=True) / c,
            "RSQR20": c.rolling(D).apply(
                lambda y: np.corrcoef(np.arange(D), y)[0, 1] ** 2, raw=True),
            "RESI20": (c - c.rolling(D).apply(
                lambda y: np.polyval(np.polyfit(np.arange(D), y, 1), D - 1), raw=True)) / c,
            "RANK20": c.rolling(D).apply(lambda y: pd.Series(y).rank(pct=True).iloc[-1],
                                         raw=True),
            "SUMP20": (c.diff().clip(lower=0).rolling(D).sum()
                       / c.diff().abs().rolling(D).sum()),
        }
        for name, series in direct.items():
            np.testing.assert_allclose(got[name].to_numpy(), series.to_numpy(), rtol=1e-6,
                                       atol=1e-9, err_msg=f"{code} {name}")


def test_features_never_look_ahead(bars: pd.DataFrame, feats: pd.DataFrame) -> None:
    cut = pd.Timestamp("2024-01-02")
    changed = bars.copy()
    later = changed["date"] > cut
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.3
    changed.loc[later, "volume"] *= 5
    again = alpha158(changed, windows=(5, 20))
    before = feats.index.get_level_values("date") <= cut
    pd.testing.assert_frame_equal(again[before], feats[before])


def test_labels_are_future_returns(bars: pd.DataFrame) -> None:
    label = forward_return(bars, 5).xs("000001.SZ", level="code")
    c = bars[bars.code == "000001.SZ"].set_index("date")["close"]
    np.testing.assert_allclose(label.to_numpy(), (c.shift(-5) / c - 1).to_numpy())
