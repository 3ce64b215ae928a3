"""What a handler prints or logs, captured per attempt in the executor's process.

:class:`AttemptLog` keeps one attempt's lines, bounded (past ``max_bytes`` one
"truncated" line, then nothing) and with the operator's secrets redacted.
:class:`Capture` routes the process's ``print`` output (stdout, stderr: still written
through to Ray's worker logs) and its ``logging`` records to the attempt running now.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr

from .messages import LogLine

LINE_MAX = 4000


def secrets_of(settings: BaseModel) -> list[str]:
    """Every secret value in the settings (tokens, passwords, webhook secrets)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if len(secret) >= 4:
                found.append(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return sorted(set(found), key=len, reverse=True)


class AttemptLog:
    """One attempt's lines, waiting to be sent; bounded by ``max_bytes``."""

    def __init__(self, task_id: str, token: int, attempt: int, max_bytes: int,
                 secrets: Iterable[str] = ()) -> None:
        self.task_id, self.token, self.attempt = task_id, token, attempt
        self.max_bytes = max_bytes
        self.secrets = list(secrets)
        self.used = 0
        self.truncated = False
        self._pending: list[LogLine] = []
        self._lock = threading.Lock()

    def add(self, stream: str, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._add_line(stream, line)

    def _add_line(self, stream: str, line: str) -> None:
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, "***")
        line = line[:LINE_MAX]
        with self._lock:
            if self.truncated:
                return
            size = len(line.encode("utf-8", "replace")) + 1
            if self.used + size > self.max_bytes:
                self.truncated = True
                line, stream = (f"[truncated: this attempt's log passed "
                                f"{self.max_bytes:,} bytes]"), "raytasks"
            self.used += size
            self._pending.append(LogLine(self.task_id, self.token, self.attempt, time.time(),
                                         stream, line))

    def take(self) -> list[LogLine]:
        with self._lock:
            lines, self._pending = self._pending, []
        return lines

    def give_back(self, lines: list[LogLine]) -> None:
        """Lines taken whose sending failed: they go first with the next ones."""
        with self._lock:
            self._pending[:0] = lines


class _Tee:
    """A text stream that writes through and hands complete lines to ``sink``."""

    def __init__(self, original: TextIO, stream: str,
                 sink: Callable[[str, str], None]) -> None:
        self._original, self._stream, self._sink = original, stream, sink
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        self._original.write(text)
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._sink(self._stream, line)
        return len(text)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class _Records(logging.Handler):
    def __init__(self, sink: Callable[[str, str], None]) -> None:
        super().__init__(logging.INFO)
        self._sink = sink
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in ("ray", "raytasks", "urllib3", "asyncio"):
            return  # the framework's own noise; raytasks writes its own lines itself
        try:
            self._sink(record.levelname, self.format(record))
        except Exception:
            self.handleError(record)


class Capture:
    """Routes the process's output to the attempt running now (``current``)."""

    def __init__(self) -> None:
        self.current: AttemptLog | None = None

    def install(self) -> None:
        sys.stdout = _Tee(sys.stdout, "stdout", self._sink)
        sys.stderr = _Tee(sys.stderr, "stderr", self._sink)
        root = logging.getLogger()
        root.addHandler(_Records(self._sink))
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)

    def _sink(self, stream: str, line: str) -> None:
        log = self.current
        if log is not None:
            log.add(stream, line)
