"""Rows of parameter sweeps kept for reuse: a sweep widened by a few values computes only
the rows it lacks.

A :class:`SweepCache` is one JSON file, ``<directory>/<key>.json``. The caller's ``key``
hashes everything the rows depend on except each row's own parameters (the ``by``
columns, such as an SMA pair's ``fast`` and ``slow``); the file holds one row per
distinct value of those, with the columns' dtypes, so a row read back equals the row
computed. Writers merge under an exclusive lock on ``<key>.lock`` and replace the file
whole (a temporary file, then :func:`os.replace`): a reader, which takes no lock, sees
the old file or the new one, never part of one, and concurrent writers keep each
other's rows. A file that cannot be read, or does not hold rows, is a miss.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["SweepCache"]

log = logging.getLogger(__name__)

#: the file's layout: a file of another is a miss (and is replaced by the next write)
FORMAT = 1


class SweepCache:
    """The rows computed so far under ``key``, in ``directory`` (created on first write).

    Args:
        directory: where the file lives (one owner's: the cache shares rows between
            everything that can read it).
        key: a hex digest of the inputs every row shares; it names the file.
        by: the columns that tell one row from another under the key.
    """

    def __init__(self, directory: Path, key: str, by: tuple[str, ...] = ("fast", "slow")) -> None:
        if not key.isalnum():  # a file name, never a path
            raise ValueError(f"a sweep cache key is letters and digits, not {key!r}")
        self.path = directory / f"{key}.json"
        self.by = by

    def rows(self, keys: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
        """The stored rows of ``keys`` (values of the ``by`` columns), in their order; keys
        not stored are left out (an empty frame when none is, or the file is unreadable)."""
        stored = self._read()
        if stored is None:
            return pd.DataFrame()
        position = {k: i for i, k in enumerate(self._keys(stored))}
        found = [position[tuple(k)] for k in keys if tuple(k) in position]
        return stored.iloc[found].reset_index(drop=True)

    def add(self, table: pd.DataFrame) -> int:
        """Merge ``table``'s rows into the file and return how many were new (a row whose
        ``by`` values are stored keeps its stored form). A file of other columns or
        dtypes, or an unreadable one, is replaced; a file that cannot be written is left
        as it was (logged: the rows are only not reused)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                stored = self._read()
                if stored is None or not _same_columns(stored, table):
                    merged, added = table, len(table)
                else:
                    known = set(self._keys(stored))
                    new = table[[k not in known for k in self._keys(table)]]
                    merged, added = pd.concat([stored, new], ignore_index=True), len(new)
                if added:
                    self._write(merged)
                return added
        except OSError as e:
            log.warning("sweep rows not cached in %s: %s", self.path, e)
            return 0

    def _keys(self, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
        # Python ints and floats, as the callers' keys are
        return list(zip(*(frame[c].tolist() for c in self.by), strict=True))

    def _read(self) -> pd.DataFrame | None:
        try:
            data = json.loads(self.path.read_bytes())
            if data["format"] != FORMAT or not set(self.by) <= set(data["columns"]):
                raise ValueError(f"not a sweep cache of format {FORMAT} by {self.by}")
            return pd.DataFrame(data["rows"], columns=data["columns"]).astype(data["dtypes"])
        except FileNotFoundError:
            return None
        except Exception as e:  # whatever a broken file raises, it is a miss
            log.warning("sweep cache %s unreadable, taken as empty: %s", self.path, e)
            return None

    def _write(self, frame: pd.DataFrame) -> None:
        data = {"format": FORMAT, "columns": list(frame.columns),
                "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
                # Python ints and floats: JSON writes a float's shortest exact form
                "rows": frame.to_numpy(object).tolist()}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(data, file, separators=(",", ":"))
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Held while a writer reads, merges and replaces the file (closing the lock file
        releases it, also when the process dies)."""
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _same_columns(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes)
