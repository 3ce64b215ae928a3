"""Archiving pruned tasks: their whole rows as a Parquet file, before they leave the store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def archive(rows: list[dict[str, Any]], folder: Path, now: float) -> Path:
    """Write ``rows`` to ``<folder>/tasks-<utc date>-<random>.parquet``; returns the path.

    Written to a temporary name and renamed, so a reader never sees half a file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    day = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d")
    path = folder / f"tasks-{day}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = path.with_suffix(".tmp")
    table = pa.Table.from_pylist([{k: (v if not isinstance(v, bytes) else v.hex())
                                   for k, v in r.items()} for r in rows])
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path
