"""`chatsvc serve | migrate | devdb …`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from chatsvc.config import ConfigError, Settings

log = logging.getLogger("chatsvc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatsvc", description="A chat API on PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the public and admin listeners until SIGTERM")
    migrate = commands.add_parser("migrate", help="apply the pending SQL migrations")
    migrate.add_argument("--sql-dir", type=Path, help="directory of NNNN_name.sql files")
    devdb = commands.add_parser("devdb", help="a private PostgreSQL cluster for development")
    devdb.add_argument("action", choices=["start", "stop", "url", "exec"])
    devdb.add_argument("--root", type=Path, default=Path(".data"), help="cluster directory")
    devdb.add_argument("argv", nargs=argparse.REMAINDER, help="with exec: -- COMMAND ...")
    args = parser.parse_args(argv)

    if args.command == "devdb":
        return _devdb(args)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"chatsvc: {error}", file=sys.stderr)
        return 2
    if not settings.database_url:
        print("chatsvc: DATABASE_URL is not set (expected a postgresql:// URL)", file=sys.stderr)
        return 2
    from chatsvc.logs import configure_logging

    configure_logging(settings)
    if args.command == "migrate":
        return _migrate(settings, args.sql_dir)
    return _serve(settings)


def _serve(settings: Settings) -> int:
    from chatsvc.server import run

    return run(settings)


def _migrate(settings: Settings, sql_dir: Path | None) -> int:
    from chatsvc.migrate import MigrationError, migrate

    try:
        applied = asyncio.run(migrate(settings.database_url, sql_dir))
    except MigrationError as error:
        print(f"chatsvc migrate: {error}", file=sys.stderr)
        return 1
    print(f"chatsvc migrate: applied {len(applied)} migration(s)"
          + (": " + ", ".join(applied) if applied else "; the schema is up to date"))
    return 0


def _devdb(args: argparse.Namespace) -> int:
    from chatsvc import devdb

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.action == "exec":
        if not command:
            print("chatsvc devdb exec: expected -- COMMAND ...", file=sys.stderr)
            return 2
        return devdb.exec_with_database(command, args.root)
    actions = {"start": devdb.start, "stop": devdb.stop, "url": devdb.url}
    return actions[args.action](args.root)
