"""Quant numerics for A-share research: plain numpy/pandas/scipy, no Ray in here.

- :mod:`.calendar`: the Shanghai/Shenzhen trading calendar (holidays included)
- :mod:`.market`: boards, price limits and the daily-bar schema
- :mod:`.synthetic`: a seeded generator of realistic daily bars
- :mod:`.volatility`: EWMA, GARCH(1,1) by maximum likelihood, HAR-RV, QLIKE
- :mod:`.costs`: commission, stamp duty and transfer fee by date
- :mod:`.backtest`: the A-share backtest engine and strategy signals
- :mod:`.risk`: return and risk statistics
"""
