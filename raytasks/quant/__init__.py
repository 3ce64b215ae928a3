"""Quant numerics for A-share research: plain numpy/pandas/scipy/numba, no Ray in here.

- :mod:`.calendar`, :mod:`.clock`: the Shanghai/Shenzhen trading calendar (holidays
  included) and the last completed session
- :mod:`.market`: boards, price limits, lot rules, ex-rights reference prices, the bar schema
- :mod:`.corporate`: ex-date events, adjustment factors and adjusted series
- :mod:`.synthetic`: a seeded generator of realistic daily bars with corporate actions
- :mod:`.adapters`, :mod:`.data`, :mod:`.barstore`, :mod:`.cleaning`: vendors, loading,
  storage and validation of bars
- :mod:`.features`: Qlib's Alpha158; :mod:`.learning`: datasets, splits, forecast quality;
  :mod:`.model_registry`: versioned models on disk
- :mod:`.volatility`: EWMA, GARCH(1,1) by maximum likelihood (compiled), HAR-RV, QLIKE
- :mod:`.costs`: commission, stamp duty, transfer fee and dividend tax by date
- :mod:`.execution`: the order, lot, corporate-action and tax rules, compiled
- :mod:`.backtest`, :mod:`.portfolio`: the single-stock and portfolio engines
- :mod:`.signals`: strategy signals under one tie rule
- :mod:`.risk`: return and risk statistics under one set of conventions
"""
