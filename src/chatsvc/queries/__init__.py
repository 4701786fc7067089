"""The SQL of chatsvc, one module per resource: named constants beside the thin functions that run them.

Statements are module-level constants with positional parameters (asyncpg prepares and caches
them); nothing is ever formatted into SQL. A function takes the pool (or a connection) first,
then few parameters, named where more than one could be confused.
"""

from chatsvc.queries import conversations, login_failures, messages, sessions, stream, users

__all__ = ["conversations", "login_failures", "messages", "sessions", "stream", "users"]
