"""How values are written in SQL for the API: one timestamp format for every route."""

from __future__ import annotations


def timestamp_of(column: str) -> str:
    """SQL that formats the timestamptz `column` as the API writes every timestamp: RFC 3339 in
    UTC with microseconds and a `Z`."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
