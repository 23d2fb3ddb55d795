"""The log formats and the context fields, on records made here."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.observability import logs


@pytest.fixture
def emit():
    """Log through a handler like ``logs.configure`` installs, in the given format."""
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)

    def emit(fmt: str, level: int, message: str, *args, **kwargs) -> str:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.formatter(fmt))
        handler.addFilter(logs.ContextFilter())
        logger.addHandler(handler)
        try:
            logger.log(level, message, *args, **kwargs)
        finally:
            logger.removeHandler(handler)
        lines = stream.getvalue().splitlines()
        stream.seek(0)
        stream.truncate()
        return lines[-1] if fmt == "json" else "\n".join(lines)

    return emit


def test_json_lines_carry_the_bound_fields_and_extras(emit):
    with logs.bound(job_id="j-1", job_type="simple-task", step="run", checkpoint_id=None):
        line = json.loads(
            emit("json", logging.INFO, "step %s: %s", "run", "advanced", extra={"attempt": 2})
        )
    assert line["message"] == "step run: advanced"
    assert (line["level"], line["logger"]) == ("INFO", "tests.logs")
    assert {k: line[k] for k in ("job_id", "job_type", "step", "attempt")} == {
        "job_id": "j-1",
        "job_type": "simple-task",
        "step": "run",
        "attempt": 2,
    }
    assert "checkpoint_id" not in line
    assert next(iter(line)) == "time" and line["time"].endswith("+00:00")
    assert isinstance(line["pid"], int)


def test_a_traceback_stays_on_one_json_line(emit):
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        text = emit("json", logging.WARNING, "failed", exc_info=True)
    assert "\n" not in text
    assert json.loads(text)["exc_info"].endswith("RuntimeError: boom")


def test_fields_bound_in_a_block_end_with_it_and_extra_wins(emit):
    with logs.bound(job_id="outer"):
        with logs.bound(step="inner"):
            assert logs.context() == {"job_id": "outer", "step": "inner"}
            line = json.loads(emit("json", logging.INFO, "x", extra={"job_id": "explicit"}))
        assert logs.context() == {"job_id": "outer"}
    assert logs.context() == {}
    assert (line["job_id"], line["step"]) == ("explicit", "inner")


def test_text_lines_show_the_bound_fields_for_people(emit):
    with logs.bound(request_id="r-1", job_id="j-1", step="run"):
        text = emit("text", logging.INFO, "hello")
    assert text.endswith(" INFO    tests.logs [request_id=r-1 job_id=j-1 step=run]: hello")
    assert emit("text", logging.ERROR, "plain").endswith(" ERROR   tests.logs: plain")


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "json"), ("", "json"), ("json", "json"), ("TEXT", "text")]
)
def test_log_format_defaults_to_json(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("LOG_FORMAT", raising=False)
    else:
        monkeypatch.setenv("LOG_FORMAT", value)
    assert logs.log_format() == expected
