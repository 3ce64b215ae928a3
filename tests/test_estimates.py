"""Run-time estimates learned from finished attempts, each with its measured error."""

from __future__ import annotations

import random

import pytest

from raytasks.manager.estimates import RunTimes


def test_an_estimate_scales_with_the_work_and_says_how_wrong_it_has_been() -> None:
    times = RunTimes(default_s=5.0)
    # Given no history, the estimate is the default, with no error measured
    first = times.estimate("training", "train", 1000)
    assert (first.seconds, first.error, first.samples) == (5.0, None, 0)
    # When attempts of 2 ms per unit finish, within 10 % noise
    rng = random.Random(1)
    for _ in range(40):
        units = rng.randrange(500, 5000)
        times.learn("training", "train", units, units * 0.002 * rng.uniform(0.9, 1.1))
    # Then a task of 3,000 units is predicted at about 6 s, and the measured error is the
    # noise's (well under 10 %), learned before each attempt taught the estimate
    est = times.estimate("training", "train", 3000)
    assert est.seconds == pytest.approx(6.0, rel=0.06)
    assert est.error is not None and est.error < 0.1 and est.samples == 40
    # and a kind not seen yet borrows its type's rate
    assert times.estimate("training", "tune", 3000).seconds == pytest.approx(6.0, rel=0.06)
    assert times.estimate("backtest", None, 10).seconds == 5.0  # another type: the default
    error, measured = times.errors()[("training", "train")]
    assert measured == 39 and error == est.error
