"""Logs: one JSON object per line (a live server's logs: tests/live/test_log_secrecy.py)."""

from __future__ import annotations

import io
import json
import logging

from chatsvc.logs import JsonFormatter, JsonLinesHandler, _access_timestamp, _timestamp, log_access


def test_a_record_becomes_one_json_object_with_its_extra_fields() -> None:
    record = logging.LogRecord("chatsvc.test", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.request_id = "abc"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "warning" and parsed["message"] == "hello you"
    assert parsed["request_id"] == "abc" and parsed["time"].endswith("Z")


def test_the_access_line_written_directly_is_the_line_the_formatter_writes() -> None:
    """log_access skips the logging machinery when only our handler would see the record: the
    line must be the one a record through that handler would have given."""
    fields = {"request_id": "f00d", "method": "POST", "route": "/messages", "status": 201,
              "duration_ms": 1.234, "user_id": None}
    direct, through_logging = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        root.handlers[:] = [JsonLinesHandler(direct)]
        root.setLevel(logging.INFO)
        log_access(1_700_000_000.0125, **fields)
        root.handlers[:] = [JsonLinesHandler(through_logging)]
        root.handlers[0].addFilter(lambda record: True)  # not ours alone: the record goes through logging
        log_access(1_700_000_000.0125, **fields)
        root.setLevel(logging.WARNING)
        log_access(1_700_000_000.0125, **fields)  # below the level: no line either way
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line, logged = direct.getvalue(), through_logging.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1 and logged.count("\n") == 1
    parsed = json.loads(line)
    assert list(parsed) == list(json.loads(logged))
    assert {**json.loads(logged), "time": parsed["time"]} == parsed
    assert parsed["time"] == "2023-11-14T22:13:20.012Z" and parsed["logger"] == "chatsvc.access"


def test_the_access_timestamp_is_the_formatters_at_every_millisecond_edge() -> None:
    moments = [1_700_000_000 + n / 1000 + edge for n in range(0, 2001, 7) for edge in (0, 4e-7, 9.994e-4)]
    moments += [1_700_000_000.9999996, 1_700_000_059.9999999, 1_699_999_999.0]
    assert [_access_timestamp(now) for now in moments] == [_timestamp(now) for now in moments]
