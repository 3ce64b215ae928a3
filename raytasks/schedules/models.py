"""Schedules as clients send them and as the store keeps them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..models import TaskCreateRequest
from .rules import ScheduleRule, iana_zone

CatchUp = Literal["skip", "once", "all"]
#: a local time of day, 00:00 to 23:59 (ASCII digits only)
HH_MM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]", re.ASCII)


class ScheduleCreateRequest(BaseModel):
    """A recurring task: ``template`` is created at every run of ``rule``.

    ``catch_up`` says what happens to runs missed while the manager was down: ``skip``
    them, run ``once`` for the latest, or run ``all`` (at most 100). Each run's task
    carries the idempotency key ``schedule:<id>:<run time>``, so a restart, or two
    managers, never create a run twice.

    ``ready_by`` (local ``HH:MM`` in ``timezone``) gives each run's task a deadline: the
    first such time after the run, on the next session for a trading rule (a Friday
    16:00 run of a nightly batch is due Monday 09:00), else on the same or the next day.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    template: TaskCreateRequest
    rule: ScheduleRule
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    end_at: datetime | None = None
    catch_up: CatchUp = "skip"
    ready_by: str | None = Field(default=None, max_length=5,
                                 description="local time HH:MM each run's task is due by")
    owner: str | None = Field(default=None, max_length=200)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return iana_zone(value)

    @field_validator("ready_by")
    @classmethod
    def _time_of_day(cls, value: str | None) -> str | None:
        if value is not None and not HH_MM.fullmatch(value):
            raise ValueError("must be a local time HH:MM, from 00:00 to 23:59")
        return value


class Schedule(BaseModel):
    """A stored schedule."""

    id: str
    name: str
    owner: str | None
    template: TaskCreateRequest
    rule: ScheduleRule
    timezone: str
    end_at: datetime | None
    catch_up: CatchUp
    ready_by: str | None = None
    paused: bool = False
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    last_task_id: str | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
