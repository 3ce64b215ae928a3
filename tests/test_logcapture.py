"""Per-attempt log capture without Ray: bounded, redacted, split into lines."""

from __future__ import annotations

import io

from pydantic import SecretStr

from raytasks.logcapture import AttemptLog, Capture, _Tee, secrets_of
from raytasks.settings import DataSourceSettings, ResourceSettings, Settings


def test_an_attempts_log_is_bounded_then_says_truncated() -> None:
    log = AttemptLog("t", 3, 0, max_bytes=100)
    for i in range(20):
        log.add("stdout", f"line {i} " + "x" * 10)
    lines = log.take()
    assert lines[-1].line.startswith("[truncated") and lines[-1].stream == "raytasks"
    assert sum(len(x.line) + 1 for x in lines[:-1]) <= 100
    assert all(x.token == 3 and x.task_id == "t" for x in lines)
    log.add("stdout", "after the cap")
    assert log.take() == []  # nothing more, and no second marker


def test_secrets_from_the_settings_never_reach_a_log_line(tmp_path: object) -> None:
    settings = Settings(data_dir=tmp_path, resources=ResourceSettings(data_sources={
        "vendor": DataSourceSettings(kind="tushare", token=SecretStr("tok-12345-secret"))}))
    secrets = secrets_of(settings)
    assert "tok-12345-secret" in secrets
    log = AttemptLog("t", 1, 0, 10_000, secrets)
    log.add("INFO", "fetching with token=tok-12345-secret from the vendor")
    assert log.take()[0].line == "fetching with token=*** from the vendor"


def test_print_output_is_split_into_lines_and_written_through() -> None:
    original = io.StringIO()
    capture = Capture()
    capture.current = AttemptLog("t", 1, 0, 10_000)
    tee = _Tee(original, "stdout", capture._sink)
    tee.write("one\ntw")
    tee.write("o\nthree")
    assert [x.line for x in capture.current.take()] == ["one", "two"]  # three is not done
    assert original.getvalue() == "one\ntwo\nthree"
    capture.current = None
    tee.write("\nnobody's\n")  # between attempts: written through, kept by no attempt
    assert original.getvalue().endswith("nobody's\n")
