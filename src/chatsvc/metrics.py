"""Prometheus metrics of chatsvc, defined once."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LOGINS = Counter("chatsvc_logins_total", "Login attempts by result.", ["result"])
MESSAGES_CREATED = Counter(
    "chatsvc_messages_created_total", "Messages stored, by content type.", ["content_type"])
PASSWORD_HASH_SECONDS = Histogram(
    "chatsvc_password_hash_seconds", "Time to hash or verify one password.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
