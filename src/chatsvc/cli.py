"""`chatsvc serve | migrate | import-original | devdb …`: the command line."""

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
    importer = commands.add_parser(
        "import-original", help="copy an abatilo/chat database (accounts and history) into DATABASE_URL")
    importer.add_argument("--from", dest="source", required=True, metavar="DSN",
                          help="postgresql:// URL of the original's database (only read)")
    importer.add_argument("--dry-run", action="store_true",
                          help="report what would be imported; write nothing")
    importer.add_argument("--into-nonempty", action="store_true",
                          help="import although the database already holds users or messages")
    importer.add_argument("--batch-size", type=_batch_size, default=None,
                          help="rows per batch (default 10000)")
    devdb = commands.add_parser("devdb", help="a private PostgreSQL cluster for development")
    devdb.add_argument("action", choices=["start", "stop", "remove", "url", "exec"])
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
    if args.command == "import-original":
        return _import_original(settings, args)
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


def _batch_size(text: str) -> int:
    from chatsvc.importer import MAX_BATCH

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_BATCH}, got {text!r}")
    return value


def _import_original(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from chatsvc.importer import DEFAULT_BATCH, ImportOptions, TargetHoldsData, import_original
    from chatsvc.migrate import MigrationError

    options = ImportOptions(args.source, settings.database_url, args.batch_size or DEFAULT_BATCH,
                            args.dry_run, args.into_nonempty)
    try:
        summary = asyncio.run(import_original(options, sys.stderr))
    except (TargetHoldsData, MigrationError) as error:
        print(f"chatsvc import-original: {error}", file=sys.stderr)
        return 1
    except asyncpg.UniqueViolationError as error:
        print(f"chatsvc import-original: an imported id is taken already ({error.detail}); "
              "import into an empty database", file=sys.stderr)
        return 1
    except asyncpg.UndefinedTableError as error:
        print(f"chatsvc import-original: the source is not an abatilo/chat database ({error})",
              file=sys.stderr)
        return 1
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        print(f"chatsvc import-original: {error}", file=sys.stderr)
        return 1
    summary.write(sys.stdout)
    return 0


def _devdb(args: argparse.Namespace) -> int:
    from chatsvc import devdb

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.action == "exec":
        if not command:
            print("chatsvc devdb exec: expected -- COMMAND ...", file=sys.stderr)
            return 2
        return devdb.exec_with_database(command, args.root)
    actions = {"start": devdb.start, "stop": devdb.stop, "remove": devdb.remove, "url": devdb.url}
    return actions[args.action](args.root)
