"""Logging: every line one JSON object on stderr, and the access log's line per request."""

from __future__ import annotations

import logging
import math
import sys
from datetime import UTC, datetime
from typing import TextIO

import msgspec

from chatsvc.config import Settings

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}

access_log = logging.getLogger("chatsvc.access")


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_second: tuple[int, str] = (0, "")  # the last whole second stamped, and its text up to the seconds


def _access_timestamp(now: float) -> str:
    """`_timestamp(now)`, with the date and time text made once per second rather than per line."""
    global _second
    seconds = math.floor(now)
    micros = round((now - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    if _second[0] != seconds:
        _second = (seconds, datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{micros // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # default=str: an extra field of any type still logs rather than raising.
        return msgspec.json.encode(line, enc_hook=str).decode()


class JsonLinesHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs: JSON lines on a stream, and the access log's
    lines written straight to it (`log_access`)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())

    def write_line(self, line: str) -> None:
        """Write one finished line as `emit` writes a formatted record: whole, then flushed."""
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
        finally:
            self.release()


class _AccessLine(msgspec.Struct):
    """The fields, in order, that JsonFormatter writes for the access log's record."""

    time: str
    level: str
    logger: str
    message: str
    request_id: str | None
    method: str
    route: str
    status: int
    duration_ms: float
    user_id: int | None


_access_encoder = msgspec.json.Encoder()


def log_access(now: float, request_id: str | None, method: str, route: str, status: int,
               duration_ms: float, user_id: int | None) -> None:
    """The access log's line for one request (`now`: its end, as `time.time()`).

    Through the logging machinery a line costs a LogRecord, the handler chain and a formatter
    that inspects the record: about as much CPU as a small request. When the record would reach
    only our JSON handler (the configuration `configure_logging` makes), the same line is encoded
    from a struct and written directly; any other configuration gets the record as before.
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    handler = _sole_json_handler()
    if handler is None:
        access_log.info("request", extra={
            "request_id": request_id, "method": method, "route": route, "status": status,
            "duration_ms": duration_ms, "user_id": user_id})
        return
    line = _AccessLine(_access_timestamp(now), "info", access_log.name, "request", request_id, method,
                       route, status, duration_ms, user_id)
    handler.write_line(_access_encoder.encode(line).decode())


def _sole_json_handler() -> JsonLinesHandler | None:
    """Our handler when it alone would handle an info record of the access log, unfiltered."""
    if access_log.filters:
        return None
    found: list[logging.Handler] = []
    logger: logging.Logger | None = access_log
    while logger is not None:  # the walk Logger.callHandlers makes
        found.extend(logger.handlers)
        logger = logger.parent if logger.propagate else None
    if len(found) != 1:
        return None
    handler = found[0]
    if (type(handler) is not JsonLinesHandler or handler.filters or handler.level > logging.INFO
            or type(handler.formatter) is not JsonFormatter):
        return None
    return handler


def configure_logging(settings: Settings) -> None:
    handler = JsonLinesHandler(sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
