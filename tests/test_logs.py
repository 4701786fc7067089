"""Logs: one JSON object per line (a live server's logs: tests/live/test_log_secrecy.py)."""

from __future__ import annotations

import json
import logging

from chatsvc.logs import JsonFormatter


def test_a_record_becomes_one_json_object_with_its_extra_fields() -> None:
    record = logging.LogRecord("chatsvc.test", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.request_id = "abc"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "warning" and parsed["message"] == "hello you"
    assert parsed["request_id"] == "abc" and parsed["time"].endswith("Z")
