"""Schedules as clients send them and as the store keeps them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..models import TaskCreateRequest
from .rules import ScheduleRule, zone

CatchUp = Literal["skip", "once", "all"]


class ScheduleCreateRequest(BaseModel):
    """A recurring task: ``template`` is created at every run of ``rule``.

    ``catch_up`` says what happens to runs missed while the manager was down: ``skip``
    them, run ``once`` for the latest, or run ``all`` (at most 100). Each run's task
    carries the idempotency key ``schedule:<id>:<run time>``, so a restart, or two
    managers, never create a run twice.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    template: TaskCreateRequest
    rule: ScheduleRule
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    end_at: datetime | None = None
    catch_up: CatchUp = "skip"
    owner: str | None = Field(default=None, max_length=200)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
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
    paused: bool = False
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    last_task_id: str | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
