"""Moved to chatsvc.testing, the one live-server harness; kept while the tests switch over."""

from pathlib import Path

from chatsvc.testing import DatabaseFactory, ServerProcess, User, free_port, sign_up_and_log_in, with_database

PROJECT_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["PROJECT_ROOT", "DatabaseFactory", "ServerProcess", "User", "free_port", "sign_up_and_log_in",
           "with_database"]
