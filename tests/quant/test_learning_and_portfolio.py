"""Splits without look-ahead, forecast quality, the model registry, portfolio backtests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from raytasks.quant.backtest import Market, run
from raytasks.quant.learning import build_dataset, regression_quality, time_split, walk_forward
from raytasks.quant.model_registry import ModelRegistry
from raytasks.quant.portfolio import run_portfolio, top_k_weights
from raytasks.quant.synthetic import generate_bars
from tests.quant import reference


@pytest.fixture(scope="module")
def data() -> object:
    bars = generate_bars(["000001.SZ", "600000.SH", "300750.SZ"], "2021-01-01", "2023-12-31")
    return build_dataset(bars, horizon=5, windows=(5, 20))


def test_time_split_leaves_a_gap_of_the_horizon(data: object) -> None:
    x = data.x  # type: ignore[attr-defined]
    train, test = time_split(x.index, 0.2, gap=5)
    dates = np.array(sorted(set(x.index.get_level_values("date"))))
    last_train = x.index.get_level_values("date")[train].max()
    first_test = x.index.get_level_values("date")[test].min()
    # the last training label ends 5 sessions after its date: still before the test starts
    assert np.searchsorted(dates, first_test) - np.searchsorted(dates, last_train) > 5
    for fold_train, fold_test in walk_forward(x.index, 3, gap=5):
        a = x.index.get_level_values("date")[fold_train].max()
        b = x.index.get_level_values("date")[fold_test].min()
        assert np.searchsorted(dates, b) - np.searchsorted(dates, a) > 5


def test_dataset_latest_row_has_no_label_and_labels_are_forward(data: object) -> None:
    d = data  # type: ignore[assignment]
    assert d.latest.index.get_level_values("date").max() > d.x.index.get_level_values(  # type: ignore[attr-defined]
        "date").max()


def test_quality_metrics_against_direct_formulas() -> None:
    rng = np.random.default_rng(0)
    dates = pd.Index(np.repeat(pd.bdate_range("2024-01-01", periods=50), 4))
    y = rng.normal(0, 0.02, 200)
    p = 0.5 * y + rng.normal(0, 0.02, 200)
    q = regression_quality(y, p, dates)
    assert q["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert q["rmse_naive"] == pytest.approx(np.sqrt(np.mean(y**2)))
    assert q["directional_accuracy"] == pytest.approx(np.mean(np.sign(y) == np.sign(p)))
    frame = pd.DataFrame({"y": y, "p": p, "d": dates})
    ic = np.mean([np.corrcoef(g.y, g.p)[0, 1] for _, g in frame.groupby("d")])
    ric = np.mean([spearmanr(g.y, g.p).statistic for _, g in frame.groupby("d")])
    assert q["ic"] == pytest.approx(ic) and q["rank_ic"] == pytest.approx(ric)


def test_registry_versions_models(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    a = reg.save("ridge", Ridge().fit([[0], [1]], [0, 1]), {"horizon": 5})
    b = reg.save("ridge", Ridge().fit([[0], [1]], [0, 2]), {"horizon": 5})
    assert (a, b) == ("ridge:v1", "ridge:v2")
    model, meta = reg.load(b)
    assert model.predict([[1]])[0] == pytest.approx(Ridge().fit([[0], [1]], [0, 2])
                                                    .predict([[1]])[0])
    assert meta["model_id"] == "ridge:v2" and len(reg.list()) == 2
    with pytest.raises(ValueError, match="no model 'ridge:v9'"):
        reg.load("ridge:v9")


class Ledger:
    """A ledger in memory, as raytasks' store keeps one: digests recorded at save."""

    def __init__(self) -> None:
        self.digests: dict[tuple[str, str], str] = {}

    def record(self, registry: str, model_id: str, sha256: str) -> None:
        self.digests[(registry, model_id)] = sha256

    def digest(self, registry: str, model_id: str) -> str | None:
        return self.digests.get((registry, model_id))


def test_with_a_ledger_the_registry_trusts_only_the_digest_recorded_there(
        tmp_path: Path) -> None:
    import hashlib
    import json

    from sklearn.linear_model import Ridge

    ledger = Ledger()
    reg = ModelRegistry(tmp_path, ledger, "models")
    # Given a model saved through the registry: its digest is recorded in the ledger
    model_id = reg.save("m", Ridge().fit([[0.0], [1.0]], [0.0, 1.0]), {"windows": [5]})
    assert ledger.digest("models", model_id) is not None
    assert reg.load(model_id)[1]["windows"] == [5]
    # When the file and its meta.json are both rewritten to agree with each other
    import skops.io as sio

    blob = sio.dumps(Ridge().fit([[0.0], [1.0]], [5.0, 5.0]))
    folder = tmp_path / "m" / "v1"
    (folder / "model.skops").write_bytes(blob)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta,
                                                  "sha256": hashlib.sha256(blob).hexdigest()}))
    # Then the load refuses; and a version the ledger never recorded is refused too
    with pytest.raises(ValueError, match="content hash does not match"):
        reg.load(model_id)
    (tmp_path / "m" / "v2").mkdir()
    (tmp_path / "m" / "v2" / "model.skops").write_bytes(blob)
    (tmp_path / "m" / "v2" / "meta.json").write_text(json.dumps({**meta, "model_id": "m:v2"}))
    with pytest.raises(ValueError, match="never recorded"):
        reg.load("m:v2")


def test_one_stock_portfolio_is_the_single_stock_engine() -> None:
    bars = generate_bars(["300750.SZ"], "2019-06-01", "2021-12-31", seed=5,
                         suspension_rate=0.01, st_share=1.0)
    m = Market.from_bars(bars)
    single = run(m, np.ones(len(m.close)), cash=300_000)
    book = run_portfolio({"300750.SZ": m}, pd.DataFrame({"300750.SZ": 1.0}, index=m.dates),
                         cash=300_000)
    np.testing.assert_allclose(book["equity"], single.equity, rtol=1e-12)


def test_portfolio_matches_an_independent_implementation() -> None:
    # Given three stocks of two boards with ex-dates, traded by rotating top-2 momentum
    codes = ["000001.SZ", "600000.SH", "688111.SH"]
    bars = generate_bars(codes, "2014-01-01", "2019-12-31", seed=4, suspension_rate=0.01)
    markets = {c: Market.from_bars(f) for c, f in bars.groupby("code")}
    close = bars.assign(adj=bars["close"] * bars["adj_factor"]).pivot(
        index="date", columns="code", values="adj")
    weights = top_k_weights(close / close.shift(20) - 1, k=2, every=15)[codes]
    # When the compiled portfolio engine and the plain re-implementation run them
    res = run_portfolio({c: markets[c] for c in codes}, weights, cash=1_000_000)
    equity, trades = reference.simulate_portfolio(bars, weights, 1_000_000)
    # Then equity and every trade agree, dividend tax included
    np.testing.assert_allclose(res["equity"], equity, rtol=1e-9)
    assert [(t["code"], t["side"], t["qty"]) for t in res["trades"]] == \
        [(c, side, q) for _, c, side, q, *_ in trades]
    np.testing.assert_allclose([t["tax"] for t in res["trades"]], [x[-1] for x in trades],
                               atol=1e-9)
    assert res["dividends"] > 0 and any(x[-1] > 0 for x in trades)


def test_top_k_picks_the_best_and_holds_between_rebalances() -> None:
    idx = pd.bdate_range("2024-01-01", periods=6)
    scores = pd.DataFrame({"A": [3, 1, 1, 1, 1, 1], "B": [2, 3, 3, 3, 3, 3],
                           "C": [1, 2, 2, 2, 9, 9]}, index=idx, dtype=float)
    w = top_k_weights(scores, k=2, every=3)
    assert list(w.iloc[0]) == [0.5, 0.5, 0.0] and list(w.iloc[2]) == [0.5, 0.5, 0.0]
    assert list(w.iloc[3]) == [0.0, 0.5, 0.5]  # re-chosen on day 3 only


def test_portfolio_cash_never_goes_negative_and_lots_hold() -> None:
    codes = ["000001.SZ", "600000.SH", "688111.SH"]
    bars = generate_bars(codes, "2022-01-01", "2023-12-31")
    markets = {c: Market.from_bars(f) for c, f in bars.groupby("code")}
    close = bars.pivot(index="date", columns="code", values="close")
    w = top_k_weights(close / close.shift(20) - 1, k=2, every=10)
    res = run_portfolio(markets, w, cash=500_000)
    for i, t in enumerate(res["trades"]):  # each order follows its board's lot rule
        least, step = (200, 1) if t["code"].startswith("688") else (100, 100)
        later = [u for u in res["trades"][i + 1:] if u["code"] == t["code"]]
        # an odd lot (bonus shares) goes only with a full exit: flat until the next buy
        full_exit = t["side"] == "sell" and (
            later[0]["side"] == "buy" if later else t["code"] not in res["final_positions"])
        assert full_exit or (t["qty"] >= least and t["qty"] % step == 0), t
    assert any(t["qty"] % 100 for t in res["trades"] if t["code"] == "688111.SH")
    assert np.all(res["equity"] > 0) and len(res["trades"]) > 10
