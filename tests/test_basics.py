"""Errors, settings, lifecycle table and the public surface."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import raytasks
from raytasks import errors
from raytasks.lifecycle import TRANSITIONS, check_transition, retry_delay_s
from raytasks.models import TaskStatus
from raytasks.settings import Settings


def test_public_names_exist_and_are_sorted() -> None:
    assert raytasks.__all__ == sorted(raytasks.__all__)
    for name in raytasks.__all__:
        assert hasattr(raytasks, name), name


@pytest.mark.parametrize("exc", [
    errors.TaskNotFoundError("abc"),
    errors.UnknownTaskTypeError("nope", ["prediction", "data"]),
    errors.InvalidParametersError([{"field": "parameters.days", "reason": "too big"}]),
    errors.PayloadTooLargeError("parameters", 10, 5),
    errors.InvalidTransitionError("abc", "COMPLETED", "CANCELLED"),
    errors.QueueFullError("default", 3, 3),
    errors.StaleLeaseError("abc", 4),
    errors.TaskCancelledError("abc"),
    errors.TaskFailedError("abc", "FAILED", "timeout", "too slow"),
    errors.WaitTimeoutError(["abc"], 1.5),
])
def test_errors_pickle_round_trip_and_read_as_sentences(exc: errors.RaytasksError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc) and back.data == exc.data
    assert isinstance(back, errors.RaytasksError)
    assert len(str(exc)) > 15


def test_every_error_has_a_concern_base() -> None:
    bases = (errors.TaskError, errors.SchedulingError, errors.ExecutionError,
             errors.StoreError, errors.NotificationError, errors.SettingsError,
             errors.NotConnectedError)
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, errors.RaytasksError) \
                and obj is not errors.RaytasksError:
            assert issubclass(obj, bases), name


def test_transition_table() -> None:
    check_transition("t", TaskStatus.PENDING, TaskStatus.RUNNING)
    check_transition("t", TaskStatus.RUNNING, TaskStatus.PENDING)
    with pytest.raises(errors.InvalidTransitionError, match="is COMPLETED"):
        check_transition("t", TaskStatus.COMPLETED, TaskStatus.CANCELLED)
    assert TRANSITIONS[TaskStatus.COMPLETED] == frozenset()


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    import random

    rng = random.Random(1)
    for attempt in range(1, 12):
        full = min(30.0, 0.5 * 2 ** (attempt - 1))
        d = retry_delay_s(attempt, 0.5, 30.0, 0.25, rng)
        assert 0.75 * full <= d <= full


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "raytasks.toml"
    toml.write_text('[raytasks]\nlease_ttl_s = 7\nmax_queue_size = 5\n'
                    '[raytasks.task_types.backtest]\nworkers = 3\n')
    monkeypatch.setenv("RAYTASKS_CONFIG", str(toml))
    monkeypatch.setenv("RAYTASKS_MAX_QUEUE_SIZE", "9")
    s = Settings(data_dir=tmp_path, heartbeat_interval_s=0.5)
    assert s.lease_ttl_s == 7 and s.max_queue_size == 9 and s.heartbeat_interval_s == 0.5
    assert s.for_type("backtest").workers == 3 and s.for_type("backtest").max_workers == 3
    # a type without a fixed size scales from none (an idle raytasks holds no executors)
    data = s.for_type("data")
    assert data.workers is None and (data.min_workers, data.max_workers) == (0, 2)
    assert s.store_url == f"sqlite:///{tmp_path / 'tasks.db'}"
    assert Settings(data_dir=tmp_path, max_queue_size=2).max_queue_size == 2
    with pytest.raises(ValueError, match="lease_ttl_s"):
        Settings(lease_ttl_s=-1)


def test_package_is_typed() -> None:
    assert (Path(raytasks.__file__).parent / "py.typed").exists()
