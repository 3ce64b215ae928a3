"""Supervised learning on bar features: datasets, time-ordered splits, forecast quality.
scikit-learn only; no Ray here. Trained models are kept by :mod:`.model_registry`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .features import alpha158, forward_return


@dataclass
class Dataset:
    """Features ``x`` and label ``y`` (forward return over ``horizon``), indexed by
    (date, code) and sorted by date; ``latest`` holds the last date's features (no label)."""

    x: pd.DataFrame
    y: pd.Series
    latest: pd.DataFrame
    horizon: int


def build_dataset(bars: pd.DataFrame, horizon: int,
                  windows: tuple[int, ...] = (5, 10, 20, 30, 60)) -> Dataset:
    feats = alpha158(bars, windows)
    label = forward_return(bars, horizon)
    frame = feats.join(label).sort_index(level=["date", "code"])
    frame = frame.dropna(subset=list(feats.columns))
    last_date = frame.index.get_level_values("date").max()
    latest = frame.xs(last_date, level="date", drop_level=False)[feats.columns]
    labelled = frame.dropna(subset=[label.name])
    return Dataset(labelled[feats.columns], labelled[label.name], latest, horizon)


def time_split(index: pd.MultiIndex, test_fraction: float, gap: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Boolean train and test masks: test is the last ``test_fraction`` of the dates, and
    the ``gap`` dates before it are dropped so no training label overlaps the test period."""
    dates = np.array(sorted(set(index.get_level_values("date"))))
    n_test = max(1, int(len(dates) * test_fraction))
    test_start = dates[len(dates) - n_test]
    train_end = dates[max(0, len(dates) - n_test - gap - 1)]
    d = index.get_level_values("date")
    return np.asarray(d <= train_end), np.asarray(d >= test_start)


def walk_forward(index: pd.MultiIndex, n_splits: int, gap: int) -> list[tuple[np.ndarray,
                                                                              np.ndarray]]:
    """Expanding-window folds in time order, each with a ``gap`` before its test block."""
    dates = np.array(sorted(set(index.get_level_values("date"))))
    block = len(dates) // (n_splits + 1)
    d = index.get_level_values("date")
    folds = []
    for k in range(1, n_splits + 1):
        test_dates = dates[k * block:(k + 1) * block]
        train_end = dates[max(0, k * block - gap - 1)]
        folds.append((np.asarray(d <= train_end),
                      np.asarray((d >= test_dates[0]) & (d <= test_dates[-1]))))
    return folds


def regression_quality(y: np.ndarray, pred: np.ndarray, dates: pd.Index) -> dict[str, float]:
    """RMSE/MAE against the naive zero-return forecast, directional accuracy, IC, rank-IC."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    out = {
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "rmse_naive": float(np.sqrt(np.mean(y**2))),
        "mae": float(np.mean(np.abs(y - pred))),
        "mae_naive": float(np.mean(np.abs(y))),
        "directional_accuracy": float(np.mean(np.sign(pred) == np.sign(y))),
        "directional_accuracy_naive": float(np.mean(y > 0)),
        "n": len(y),
    }
    frame = pd.DataFrame({"y": y, "p": pred, "date": np.asarray(dates)})
    per_date = frame.groupby("date").filter(lambda g: len(g) >= 3)
    if len(per_date):  # cross-sectional IC when there are several stocks a day
        ics = per_date.groupby("date").apply(lambda g: g["y"].corr(g["p"]))
        rics = per_date.groupby("date").apply(
            lambda g: spearmanr(g["y"], g["p"]).statistic)
        out["ic"], out["rank_ic"] = float(ics.mean()), float(rics.mean())
    else:  # one stock: correlation over time
        out["ic"] = float(np.corrcoef(y, pred)[0, 1]) if np.std(pred) > 0 else 0.0
        out["rank_ic"] = float(spearmanr(y, pred).statistic) if np.std(pred) > 0 else 0.0
    return out
