"""The schedules table: one row per schedule, its spec as JSON."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .schema import schedules


class ScheduleTable:
    def __init__(self, engine: Engine, writer: Engine) -> None:
        self._engine, self._writer = engine, writer

    def insert(self, row: dict[str, Any]) -> None:
        with self._writer.begin() as conn:
            conn.execute(schedules.insert().values(**row))

    def update(self, schedule_id: str, **fields: Any) -> bool:
        with self._writer.begin() as conn:
            return bool(conn.execute(schedules.update().where(schedules.c.id == schedule_id)
                                     .values(**fields)).rowcount)

    def delete(self, schedule_id: str) -> bool:
        with self._writer.begin() as conn:
            return bool(conn.execute(schedules.delete()
                                     .where(schedules.c.id == schedule_id)).rowcount)

    def all(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in
                    conn.execute(sa.select(schedules).order_by(schedules.c.created_at))]
