"""Benchmarks (``raytasks bench ...``): each prints raytasks beside a reference measured in
the same run, as a ratio, because these machines are noisy.

- :mod:`.core`: every user-facing path beside bare Ray (and Celery with ``--celery``);
- :mod:`.store`: a store of a million tasks on SQLite or PostgreSQL;
- :mod:`.footprint`: the memory of an idle raytasks beside an idle bare Ray;
- :mod:`.cold`: a burst's waits to start and finish, empty pools beside warm ones;
- :mod:`.quant`: the backtest engine and the GARCH fit;
- :mod:`.processes`: the process tree, memory and CPU the benchmarks read from /proc.
"""
