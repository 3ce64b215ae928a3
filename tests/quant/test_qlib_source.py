"""Qlib's day data as a source: real files in Qlib's layout, read back by raytasks and by pyqlib.

The dataset is written by :func:`dump_qlib`, which follows Qlib's ``scripts/dump_bin.py``
(``DumpDataAll``: the calendar is the union of the bars' dates; each stock's rows are
reindexed to the calendar from its first to its last date, NaN where it has none; each field
is ``[index of the first date, values...]`` as float32 little-endian) and the adjustment of
Qlib's collectors (prices times the factor, volume divided by it, NaN on a suspended day, the
factor carried). ``dump_bin.py`` is not in the pyqlib wheel, so this writer is the test's
own, written apart from the reader (and checked once, byte for byte on every file, against
``dump_bin.py`` of Qlib's main branch, commit d5379c5); pyqlib's ``D.features`` reading the
same files back checks both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from raytasks.handlers.data import fetch
from raytasks.handlers.params import DataParams
from raytasks.quant.data import load_bars, save_csv
from raytasks.quant.features import alpha158
from raytasks.quant.market import BAR_COLUMNS, EVENT_COLUMNS, validate_bars
from raytasks.quant.qlib_source import QlibDayData, from_qlib_symbol, to_qlib_symbol
from raytasks.quant.synthetic import generate_bars
from raytasks.resources import Resources, UnknownResourceError
from raytasks.settings import DataSourceSettings, ResourceSettings

CODES = ["000001.SZ", "300750.SZ", "600000.SH", "688981.SH"]
START, END = "2022-01-01", "2023-06-30"


def dump_qlib(bars: pd.DataFrame, root: Path, extra: tuple[str, ...] = ()) -> None:
    """Write ``bars`` (the raytasks schema) as Qlib's day data under ``root``.

    Fields: open, high, low, close (times the factor), volume (divided by it), amount (CNY,
    unchanged), factor, and ``extra`` raytasks columns as they are.
    """
    calendar = sorted(set(bars["date"]))
    (root / "calendars").mkdir(parents=True)
    (root / "calendars" / "day.txt").write_text(
        "".join(f"{d:%Y-%m-%d}\n" for d in calendar), encoding="utf-8")
    (root / "instruments").mkdir()
    lines = []
    for code, group in bars.groupby("code", sort=True):
        digits, exchange = code.split(".")
        symbol = exchange + digits
        lines.append(f"{symbol}\t{group['date'].min():%Y-%m-%d}\t{group['date'].max():%Y-%m-%d}\n")
        b = group.set_index("date")
        span = [d for d in calendar if b.index.min() <= d <= b.index.max()]
        b = b.reindex(span)
        live = ~b["suspended"].fillna(True).astype(bool)
        f = b["adj_factor"]
        fields = {k: (b[k] * f).where(live) for k in ("open", "high", "low", "close")}
        fields["volume"] = (b["volume"] / f).where(live)
        fields["amount"] = b["amount"].where(live)
        fields["factor"] = f
        for name in extra:
            fields[name] = b[name].astype(float)
        out = root / "features" / symbol.lower()
        out.mkdir(parents=True)
        first = calendar.index(span[0])
        for name, values in fields.items():
            np.hstack([first, values.to_numpy(float)]).astype("<f").tofile(
                out / f"{name}.day.bin")
    (root / "instruments" / "all.txt").write_text("".join(sorted(lines)), encoding="utf-8")


@pytest.fixture(scope="module")
def source_bars() -> pd.DataFrame:
    """Four stocks over 18 months: suspensions (one on an ex-date), dividends, share issues,
    an ST stretch, and one stock listed two months after the others."""
    bars = generate_bars(CODES, START, END, seed=7, suspension_rate=0.02)
    late = (bars["code"] == "688981.SH") & (bars["date"] < pd.Timestamp("2022-03-01"))
    bars = bars[~late].reset_index(drop=True)
    st = (bars["code"] == "000001.SZ") & bars["date"].between("2022-06-01", "2022-09-30")
    bars.loc[st, "is_st"] = True
    return bars


@pytest.fixture(scope="module")
def dirs(source_bars: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    save_csv(source_bars, root / "csv")
    dump_qlib(source_bars, root / "qlib", extra=(*EVENT_COLUMNS, "is_st"))
    dump_qlib(source_bars, root / "qlib_plain")  # only Qlib's own fields
    return {"csv": root / "csv", "qlib": root / "qlib", "qlib_plain": root / "qlib_plain"}


@pytest.fixture(scope="module")
def resources(dirs: dict[str, Path]) -> Resources:
    return Resources(ResourceSettings(data_sources={
        "csv": DataSourceSettings(kind="csv", path=dirs["csv"]),
        "qlib": DataSourceSettings(kind="qlib", path=dirs["qlib"]),
        "qlib_plain": DataSourceSettings(kind="qlib", path=dirs["qlib_plain"]),
    }), owner="alice")


def test_the_dataset_has_what_the_conversion_must_handle(source_bars: pd.DataFrame) -> None:
    assert source_bars["suspended"].sum() > 50
    assert (source_bars["suspended"] & (source_bars["cash_div"] > 0)).any()
    assert (source_bars["bonus_ratio"] + source_bars["transfer_ratio"] > 0).any()
    assert source_bars["adj_factor"].nunique() > 4
    assert source_bars["is_st"].sum() > 50


def test_codes_convert_both_ways() -> None:
    assert to_qlib_symbol("600000.SH") == "SH600000"
    assert from_qlib_symbol("sz000001") == "000001.SZ"
    for bad in ("../x", "600000.SH/../../etc", "SH600000", ""):
        with pytest.raises(ValueError):
            to_qlib_symbol(bad)
    with pytest.raises(ValueError):
        from_qlib_symbol("SH../../x")


def test_qlib_bars_equal_the_csv_bars(resources: Resources, source_bars: pd.DataFrame) -> None:
    # Given the same bars as a csv source and as Qlib's day data
    # When both are read through the operator's named sources
    from_csv = resources.load_bars("csv", CODES, START, END)
    from_qlib = resources.load_bars("qlib", CODES, START, END)
    # Then every row and column is the same: prices to the fen, volume to the share
    assert len(from_qlib) == len(source_bars) == len(from_csv)
    assert list(from_qlib.columns) == list(BAR_COLUMNS)
    assert validate_bars(from_qlib) == []
    exact = ["code", "date", "open", "high", "low", "close", "volume", *EVENT_COLUMNS,
             "is_st", "suspended"]
    pd.testing.assert_frame_equal(from_qlib[exact], from_csv[exact])
    # float32 keeps about 7 digits: amount (CNY) and the factor to that, no better
    np.testing.assert_allclose(from_qlib["amount"], from_csv["amount"], rtol=1.2e-7)
    np.testing.assert_allclose(from_qlib["adj_factor"], from_csv["adj_factor"], rtol=1.2e-7)


def test_a_suspended_day_is_flat_at_the_ex_rights_reference(resources: Resources,
                                                           source_bars: pd.DataFrame) -> None:
    bars = resources.load_bars("qlib", CODES, START, END)
    day = source_bars[source_bars["suspended"] & (source_bars["cash_div"] > 0)].iloc[0]
    row = bars[(bars["code"] == day["code"]) & (bars["date"] == day["date"])].iloc[0]
    before = bars[(bars["code"] == day["code"]) & (bars["date"] < day["date"])].iloc[-1]
    assert row["suspended"] and row["volume"] == 0 and row["amount"] == 0
    assert row["close"] == day["close"] < before["close"]  # ex-rights, not the last close


def test_without_raytasks_fields_events_and_st_default(resources: Resources) -> None:
    plain = resources.load_bars("qlib_plain", CODES, START, END)
    full = resources.load_bars("qlib", CODES, START, END)
    assert (plain[list(EVENT_COLUMNS)] == 0).all().all() and not plain["is_st"].any()
    same = ["code", "date", "open", "high", "low", "close", "volume", "suspended"]
    pd.testing.assert_frame_equal(plain[same], full[same])


def test_alpha158_from_qlib_equals_alpha158_from_csv(resources: Resources) -> None:
    from_csv = alpha158(resources.load_bars("csv", CODES, START, END))
    from_qlib = alpha158(resources.load_bars("qlib", CODES, START, END))
    assert from_qlib.shape == from_csv.shape and from_qlib.shape[1] == 158
    pd.testing.assert_index_equal(from_qlib.index, from_csv.index)
    pd.testing.assert_frame_equal(from_qlib.isna(), from_csv.isna())
    # the factor and amount carry float32's rounding (1e-7 relative) into the features, which
    # regressions on near-flat windows (RSQR, CORR, CORD, SUMD) raise to a few 1e-6
    ranks = [c for c in from_csv.columns if c.startswith("RANK")]
    rest = [c for c in from_csv.columns if c not in ranks]
    np.testing.assert_allclose(from_qlib[rest].to_numpy(), from_csv[rest].to_numpy(),
                               rtol=1e-4, atol=1e-5)
    # RANK: two adjusted closes equal across an ex-date (a tie) may come apart by 1e-7;
    # then one day's rank moves by one place (1/d), never more
    moved = 0
    for column in ranks:
        d = int(column.removeprefix("RANK"))
        gap = (from_qlib[column] - from_csv[column]).abs()
        assert gap.max() <= 1 / d + 1e-12, column
        moved += int((gap > 1e-9).sum())
    assert moved <= len(ranks)  # at most the one tie in this dataset, per window


def test_a_listing_after_the_calendar_starts_reads_from_its_own_index(
        dirs: dict[str, Path], source_bars: pd.DataFrame) -> None:
    raw = np.fromfile(dirs["qlib"] / "features" / "sh688981" / "close.day.bin", dtype="<f4")
    calendar = QlibDayData(dirs["qlib"]).calendar()
    first = source_bars[source_bars["code"] == "688981.SH"]["date"].min()
    assert int(raw[0]) == calendar.get_loc(first) > 0
    bars = load_bars(["688981.SH"], START, END, "csv", str(dirs["csv"]))
    assert QlibDayData(dirs["qlib"]).bars(["688981.SH"], START, END)["date"].min() == first
    assert len(raw) - 1 == len(bars)


def test_pyqlib_reads_the_same_files(dirs: dict[str, Path]) -> None:
    import qlib  # pyqlib, from the dev extra
    from qlib.data import D

    qlib.init(provider_uri=str(dirs["qlib"]), region="cn", expression_cache=None,
              dataset_cache=None)
    ours = QlibDayData(dirs["qlib"]).bars(CODES, START, END)
    theirs = D.features([to_qlib_symbol(c) for c in CODES],
                        ["$close/$factor", "$open/$factor", "$volume*$factor", "$amount",
                         "$factor"], start_time=START, end_time=END, freq="day")
    theirs.columns = ["close_qlib", "open_qlib", "volume_qlib", "amount_qlib", "factor_qlib"]
    theirs = theirs.reset_index()
    theirs["code"] = theirs["instrument"].map(from_qlib_symbol)
    merged = ours.merge(theirs, left_on=["code", "date"], right_on=["code", "datetime"],
                        validate="one_to_one")
    assert len(merged) == len(ours) == len(theirs)
    live = merged[~merged["suspended"]]
    assert len(live) > 0.9 * len(merged)
    np.testing.assert_allclose(live["close"], live["close_qlib"], atol=0.005)
    np.testing.assert_allclose(live["open"], live["open_qlib"], atol=0.005)
    np.testing.assert_allclose(live["volume"], live["volume_qlib"], rtol=1e-6)
    np.testing.assert_allclose(live["amount"], live["amount_qlib"], rtol=0)
    np.testing.assert_allclose(merged["adj_factor"], merged["factor_qlib"], rtol=0)
    # Qlib's convention: a suspended day is NaN in the stored data
    assert merged.loc[merged["suspended"], "close_qlib"].isna().all()


def test_a_task_names_the_source_never_its_path(resources: Resources,
                                                dirs: dict[str, Path]) -> None:
    # a path where a source name goes is an unknown source
    with pytest.raises(UnknownResourceError):
        resources.load_bars(str(dirs["qlib"]), CODES[:1], START, END)
    # a code cannot walk out of features/: the code pattern refuses it before any file opens
    outside = dirs["qlib"].parent / "outside"
    dump_qlib(generate_bars(["600000.SH"], START, "2022-03-01", seed=1), outside)
    for code in ("../outside/features/sh600000", "../../x", "600000.SH/..", "sh600000"):
        with pytest.raises(ValueError, match="not an A-share code"):
            resources.load_bars("qlib", [code], START, END)
    # a code the instruments do not list is refused by name, the root not shown
    with pytest.raises(ValueError, match="not in the Qlib data") as info:
        resources.load_bars("qlib", ["601318.SH"], START, END)
    assert str(dirs["qlib"]) not in str(info.value)


def test_a_qlib_source_needs_a_path() -> None:
    with pytest.raises(ValueError, match="needs a path"):
        DataSourceSettings(kind="qlib")


def test_task_parameters_take_a_source_name_and_codes_only() -> None:
    for bad in ({"source": "/srv/qlib_data"}, {"source": "cn/features"},
                {"codes": ["../x"]}, {"codes": ["sh600000"]}):
        with pytest.raises(ValidationError):
            DataParams(kind="sync", **bad)


def test_an_incremental_sync_past_the_data_reads_nothing_new(resources: Resources) -> None:
    # Given a Qlib source whose data end on END, and a sync that has stored through END
    params = DataParams(kind="sync", source="qlib", codes=["600000.SH"], start=START,
                        end="2023-07-31")
    # When it asks for the days after END
    new = fetch(params, resources, "600000.SH", "2023-07-01")
    # Then there are none (not an error), and from the start there are all of them
    assert new.empty
    assert len(fetch(params, resources, "600000.SH", START)) == 360
