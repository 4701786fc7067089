"""chatsvc: a small, fast, hardened chat API on PostgreSQL."""

__version__ = "0.1.0"
