"""`chatsvc import-original`: copy an abatilo/chat database, accounts and history, into chatsvc's.

The original is read in one repeatable-read, read-only snapshot; chatsvc's database is written a
batch at a time with COPY, each batch committed with the import's progress (table
original_imports), so a stopped import started again resumes where it stopped and ends with the
same rows. Ids, senders, recipients and instants are kept exactly; contents become chatsvc's
content union under the rule of POST /messages, and what that rule cannot express is listed with
its reason (table original_import_skipped), never guessed at. Accounts keep their bcrypt hashes
(upgraded to argon2id at their first login) and log in with their exact names.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

import asyncpg

from chatsvc.importer import assemble, target
from chatsvc.importer.report import SHOWN, Progress, Summary
from chatsvc.importer.source import Snapshot
from chatsvc.importer.target import TargetHoldsData
from chatsvc.migrate import migrate

__all__ = ["ImportOptions", "TargetHoldsData", "import_original"]

DEFAULT_BATCH = 10_000
MAX_BATCH = 1_000_000


@dataclass(frozen=True)
class ImportOptions:
    source_dsn: str
    target_dsn: str
    batch: int = DEFAULT_BATCH
    dry_run: bool = False
    into_nonempty: bool = False


async def import_original(options: ImportOptions, stream: TextIO = sys.stdout) -> Summary:
    """Import everything the original holds that this target lacks; the summary of the run."""
    started = time.monotonic()
    summary = Summary(dry_run=options.dry_run)
    # The source first: a wrong --from changes nothing in the target.
    snapshot = await Snapshot.open(options.source_dsn)
    try:
        await snapshot.count_users(0)
        if not options.dry_run:
            await migrate(options.target_dsn)
        connection = await asyncpg.connect(options.target_dsn, server_settings={"statement_timeout": "0"})
        try:
            if options.dry_run:
                await _refuse_when_not_empty(connection, options.into_nonempty)
                resume = (0, 0)
            else:
                resume = await target.begin(connection, snapshot.identity, options.into_nonempty)
            summary.resumed_after = resume
            await _users(snapshot, connection, options, resume[0], summary, stream)
            await _messages(snapshot, connection, options, resume[1], summary, stream)
            if not options.dry_run:
                await target.finish(connection, snapshot.identity)
                summary.look_alikes = await target.look_alikes(connection, SHOWN)
                summary.skipped = await target.skipped(connection, SHOWN)
        finally:
            await connection.close()
    finally:
        await snapshot.close()
    summary.seconds = time.monotonic() - started
    return summary


async def _refuse_when_not_empty(connection: asyncpg.Connection, into_nonempty: bool) -> None:
    """The dry run's version of target.begin: it reads, whether or not the schema is there yet."""
    migrated = await connection.fetchval("SELECT to_regclass('users') IS NOT NULL")
    if migrated and not into_nonempty and await connection.fetchval(target.HOLDS_DATA):
        raise TargetHoldsData("the database already holds users or messages; import into an empty one, "
                              "or pass --into-nonempty if their ids cannot collide")


async def _users(snapshot: Snapshot, connection: asyncpg.Connection, options: ImportOptions,
                 after: int, summary: Summary, stream: TextIO) -> None:
    progress = Progress(stream, "users", await snapshot.count_users(after))
    async for rows in snapshot.users(after, options.batch):
        accounts = [assemble.account(row) for row in rows]
        for each in accounts:
            for remark in each.remarks:
                summary.remark(each.id, each.username, remark)
        if not options.dry_run:
            await target.copy_users(connection, snapshot.identity, accounts, accounts[-1].id)
        summary.users += len(accounts)
        progress.advance(len(accounts))
    progress.close()


async def _messages(snapshot: Snapshot, connection: asyncpg.Connection, options: ImportOptions,
                    after: int, summary: Summary, stream: TextIO) -> None:
    progress = Progress(stream, "messages", await snapshot.count_messages(after))
    async for rows in snapshot.messages(after, options.batch):
        copied, skipped = [], []
        for row in rows:
            message = assemble.message(row)
            if message.content is None:
                skipped.append((message.id, str(message.reason)))
                summary.skipped_now[str(message.reason)] += 1
            else:
                copied.append((row["id"], row["created_at"], row["sender_id"], row["recipient_id"],
                               message.content))
                summary.messages[str(message.type)] += 1
        if not options.dry_run:
            await target.copy_messages(connection, snapshot.identity, copied, skipped, rows[-1]["id"])
        progress.advance(len(rows))
    progress.close()
