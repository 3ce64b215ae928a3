"""Loading daily bars: a local CSV/Parquet directory (the default) or the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .market import BAR_COLUMNS, CODE, OPTIONAL_DEFAULTS
from .synthetic import generate_bars


def load_bars(codes: list[str], start: str, end: str, source: str = "synthetic",
              path: str | None = None, seed: int = 7) -> pd.DataFrame:
    """Bars of ``codes`` between ``start`` and ``end`` (inclusive), in the normalised schema.

    ``source="csv"`` reads ``<path>/<code>.csv`` (or ``.parquet``) files with the
    schema's columns; ``source="synthetic"`` generates them from ``seed``. ``path``
    comes from the operator's settings (:mod:`raytasks.resources`), never from a
    task; the code pattern keeps file names inside it.
    """
    for code in codes:
        if not CODE.match(code):
            raise ValueError(f"{code!r} is not an A-share code like 000001.SZ")
    if source == "synthetic":
        return generate_bars(codes, start, end, seed=seed)
    if source != "csv":
        raise ValueError(f"unknown source {source!r}: use 'csv' or 'synthetic'")
    if not path:
        raise ValueError("source 'csv' needs a path to a directory of <code>.csv files")
    frames = []
    for code in codes:
        frames.append(_read_one(Path(path), code))
    bars = pd.concat(frames, ignore_index=True)
    bars = bars[(bars["date"] >= pd.Timestamp(start)) & (bars["date"] <= pd.Timestamp(end))]
    if bars.empty:
        raise ValueError(f"no bars for {codes} between {start} and {end} in the data source")
    return bars.reset_index(drop=True)


def _read_one(directory: Path, code: str) -> pd.DataFrame:
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv", pd.read_csv)):
        file = directory / f"{code}{suffix}"
        if file.exists():
            frame = reader(file)
            break
    else:
        # the directory is the operator's: the message names the file, never where it looked
        raise ValueError(f"no {code}.csv or {code}.parquet in the data source")
    frame["code"] = code
    frame["date"] = pd.to_datetime(frame["date"])
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in frame:
            frame[column] = default
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{code}: columns {missing} are missing")
    return frame[list(BAR_COLUMNS)].astype({"is_st": bool, "suspended": bool}) \
        .sort_values("date")


def save_csv(bars: pd.DataFrame, directory: str | Path) -> list[Path]:
    """Write one ``<code>.csv`` per code (the format :func:`load_bars` reads)."""
    out = []
    Path(directory).mkdir(parents=True, exist_ok=True)
    for code, frame in bars.groupby("code"):
        file = Path(directory) / f"{code}.csv"
        frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d")).to_csv(file, index=False)
        out.append(file)
    return out
