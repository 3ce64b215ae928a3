"""TaskExecutionContext: what a running handler may ask of raytasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TaskCancelledError, TaskPreemptedError

if TYPE_CHECKING:
    from .lineage import Lineage
    from .quant.model_registry import ModelLedger
    from .settings import Settings


class TaskExecutionContext:
    """Given to every handler as its second argument.

    A handler reports progress with :meth:`report_progress`, looks for a cancel
    request with :meth:`check_cancelled`, and resumes long work from
    :attr:`checkpoint` (what the previous attempt saved with
    :meth:`save_checkpoint`). Handlers that never call these still time out
    and cancel: the executor replaces the process that runs them.

    A preemptible type's attempt may be *preempted* (:attr:`preempted`): the scheduler
    wants its executor for a task with a deadline. The handler should save a checkpoint
    and stop (``check_preempted`` or ``check_cancelled`` raise
    :class:`TaskPreemptedError`) within the type's grace time; the task then runs again,
    resuming from :attr:`checkpoint`, without spending a retry.

    ``owner`` is the task's owner (None for a trusted Ray client's task);
    ``settings`` are the operator's (trusted) settings, where named resources
    are resolved. ``artifact_dir`` is this attempt's own directory: files a
    handler writes there belong to this attempt only, so a superseded attempt
    can never overwrite what the accepted one wrote. ``models`` records and reads the
    digests of model versions, under this attempt's lease (a registry's trust anchor).
    ``lineage`` collects the fingerprints of what the attempt reads (bars, models), beside
    its code's, parameters' and libraries' (:mod:`raytasks.lineage`).
    """

    def __init__(
        self,
        task_id: str,
        task_type: str,
        attempt: int,
        parameters: dict[str, Any],
        *,
        checkpoint: Any = None,
        on_progress: Callable[[float, str, str | None], None] | None = None,
        on_checkpoint: Callable[[Any], object] | None = None,
        cancel_event: threading.Event | None = None,
        preempt_event: threading.Event | None = None,
        owner: str | None = None,
        settings: Settings | None = None,
        artifact_dir: Path | None = None,
        models: ModelLedger | None = None,
        lineage: Lineage | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.attempt = attempt
        self.parameters = parameters
        self.checkpoint = checkpoint
        self.owner = owner
        self.settings = settings
        self._artifact_dir = artifact_dir
        self.models = models
        #: what the result comes from, recorded as the attempt reads its inputs (None: not
        #: recorded, outside an executor)
        self.lineage = lineage
        #: where a task that takes cached results keeps parts of its results for reuse
        #: (its owner's own; None: caching is off for it)
        self.cache_dir = cache_dir
        self.started_at = time.time()
        self._on_progress = on_progress
        self._on_checkpoint = on_checkpoint
        self._cancel_event = cancel_event or threading.Event()
        self._preempt_event = preempt_event or threading.Event()

    @property
    def artifact_dir(self) -> Path:
        """This attempt's directory for files (created on first use)."""
        if self._artifact_dir is None:
            raise RuntimeError("this context has no artifact directory")
        self._artifact_dir.mkdir(parents=True, exist_ok=True)
        return self._artifact_dir

    @property
    def cancelled(self) -> bool:
        return self._cancel_event.is_set()

    @property
    def preempted(self) -> bool:
        """Whether the scheduler asked this attempt to stop for a task with a deadline."""
        return self._preempt_event.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`TaskCancelledError` when a cancel was requested, and
        :class:`TaskPreemptedError` when the attempt was preempted: a handler that looks
        for stops at one place stops for both."""
        if self._preempt_event.is_set():
            raise TaskPreemptedError(self.task_id)
        if self._cancel_event.is_set():
            raise TaskCancelledError(self.task_id)

    def check_preempted(self) -> None:
        """Raise :class:`TaskPreemptedError` when the attempt was preempted (save a
        checkpoint first: the next attempt resumes from it)."""
        if self._preempt_event.is_set():
            raise TaskPreemptedError(self.task_id)

    def report_progress(self, fraction: float, message: str = "", stage: str | None = None) -> None:
        """Report progress as a fraction in 0..1 (clamped); cheap enough for tight loops."""
        fraction = min(1.0, max(0.0, float(fraction)))
        if self._on_progress is not None:
            self._on_progress(fraction, message, stage)

    def save_checkpoint(self, state: Any) -> None:
        """Persist JSON-serialisable ``state``; a retry sees it as :attr:`checkpoint`."""
        self.checkpoint = state
        if self._on_checkpoint is not None:
            self._on_checkpoint(state)
