"""Bars stored as Parquet partitioned by code and year: ``<root>/bars/code=…/year=…/``."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .market import BAR_COLUMNS


class BarStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser() / "bars"

    def _file(self, code: str, year: int) -> Path:
        return self.root / f"code={code}" / f"year={year}" / "part.parquet"

    def write(self, bars: pd.DataFrame, *, replace: bool = False) -> int:
        """Merge ``bars`` in (a bar for the same code and date replaces the stored one).

        With ``replace`` the written years are replaced whole. Returns rows written.
        """
        written = 0
        for (code, year), frame in bars.groupby([bars["code"], bars["date"].dt.year]):
            path = self._file(str(code), int(year))
            if path.exists() and not replace:
                frame = pd.concat([pd.read_parquet(path), frame])
            frame = frame.drop_duplicates(["code", "date"], keep="last").sort_values("date")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            frame[list(BAR_COLUMNS)].to_parquet(tmp, index=False)
            os.replace(tmp, path)
            written += len(frame)
        return written

    def read(self, codes: list[str] | None = None, start: str | None = None,
             end: str | None = None) -> pd.DataFrame:
        frames = []
        for code in codes or self.codes():
            for path in sorted((self.root / f"code={code}").glob("year=*/part.parquet")):
                frames.append(pd.read_parquet(path))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in BAR_COLUMNS.items()})
        bars = pd.concat(frames, ignore_index=True)
        if start:
            bars = bars[bars["date"] >= pd.Timestamp(start)]
        if end:
            bars = bars[bars["date"] <= pd.Timestamp(end)]
        return bars.sort_values(["code", "date"]).reset_index(drop=True)

    def codes(self) -> list[str]:
        return sorted(p.name.split("=", 1)[1] for p in self.root.glob("code=*"))

    def last_date(self, code: str) -> pd.Timestamp | None:
        years = sorted(self.root.glob(f"code={code}/year=*/part.parquet"))
        if not years:
            return None
        return pd.Timestamp(pd.read_parquet(years[-1], columns=["date"])["date"].max())
