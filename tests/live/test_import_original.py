"""`chatsvc import-original`: an abatilo/chat database, written the way the original wrote it, is
imported with the real command, then checked through chatsvc's own HTTP API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from chatsvc.testing import DatabaseFactory, assert_error, client_for
from chatsvc.testing.original import OriginalDatabase
from tests.live.conftest import Launch

EPOCH = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
LONG_PASSWORD = "correct horse battery staple " * 4  # 116 bytes: bcrypt saw the first 72
# Names the original told apart, or that the sign-up rule would refuse or merge.
NAMES = {
    "Alice": "alice-password",
    "alice": "other-alice-password",
    "bob": "bob-password",
    "\uff42\uff4f\uff42": "fullwidth-bob-password",  # bob in fullwidth letters
    "zero\u200bwidth": "zero-width-password",
    " carol": LONG_PASSWORD,
    "dave": "x",  # shorter than the sign-up rule allows
}


@dataclass
class Original:
    """What the original's database holds, as the original's API would have shown it."""

    dsn: str
    ids: dict[str, int] = field(default_factory=dict)
    # id -> (sender, recipient, timestamp, content) for the messages chatsvc can show.
    messages: dict[int, tuple[int, int, str, dict[str, object]]] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


async def make_original(databases: DatabaseFactory, filler: int = 0) -> Original:
    original = Original(await databases.create())
    writer = await OriginalDatabase.create(original.dsn)
    try:
        for name, password in NAMES.items():
            original.ids[name] = await writer.user(name, password)
        alice, other, bob, wide_bob = (
            original.ids[n] for n in ("Alice", "alice", "bob", "\uff42\uff4f\uff42")
        )
        instants = (EPOCH + timedelta(seconds=n, microseconds=n) for n in range(10_000))

        async def send(
            sender: int,
            recipient: int,
            kind: str,
            shown: dict[str, object] | None,
            reason: str | None = None,
            **content: object,
        ) -> None:
            at = next(instants)
            message_id = await writer.send(sender, recipient, kind, at, **content)
            if shown is None:
                original.skipped[message_id] = str(reason)
            else:
                stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                original.messages[message_id] = (sender, recipient, stamp, {"type": kind, **shown})

        await send(alice, bob, "text", {"text": "hi bob\nsecond line"}, text="hi bob\nsecond line")
        await send(
            bob,
            alice,
            "image",
            {"url": "https://example.com/a.png", "width": 640, "height": 480},
            url="https://example.com/a.png",
            width=640,
            height=480,
        )
        await writer.skip_ids(5)
        await send(bob, alice, "image", {"url": "aGVsbG8=", "width": 64, "height": 64}, url="aGVsbG8=")
        await send(
            alice,
            bob,
            "video",
            {"url": "https://youtu.be/x", "source": "youtube"},
            url="https://youtu.be/x",
            source="youtube",
        )
        await send(alice, bob, "video", None, "no content row", url="https://vimeo.com/1", source="vimeo")
        await send(bob, alice, "image", None, "no content row", url="https://example.com/w.png", width=40000)
        await send(bob, alice, "image", None, "refused by chatsvc's rule", url="javascript:alert(1)")
        await send(other, other, "text", {"text": "a note to self"}, text="a note to self")
        await send(wide_bob, other, "text", {"text": "from the fullwidth bob"}, text="from the fullwidth bob")
        await writer.skip_ids(3)
        # Sender values the original never checked against the caller: kept as stored.
        await send(
            bob, other, "text", {"text": "<script>alert(1)</script>"}, text="<script>alert(1)</script>"
        )
        for n in range(filler):
            await send(
                alice if n % 2 else bob,
                bob if n % 2 else alice,
                "text",
                {"text": f"filler {n}"},
                text=f"filler {n}",
            )
    finally:
        await writer.close()
    return original


def import_command(source: str, target: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "chatsvc", "import-original", "--from", source, *options]


def run_import(source: str, target: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": target}
    return subprocess.run(
        import_command(source, target, *options),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def table_contents(dsn: str) -> dict[str, list[asyncpg.Record]]:
    connection = await asyncpg.connect(dsn)
    try:
        return {
            "users": await connection.fetch(
                "SELECT id, username, username_key, password_hash FROM users ORDER BY id"
            ),
            "messages": await connection.fetch(
                "SELECT id, created_at, sender_id, recipient_id, content::text FROM messages ORDER BY id"
            ),
            "conversations": await connection.fetch("SELECT * FROM conversations ORDER BY low_id, high_id"),
            "skipped": await connection.fetch("SELECT * FROM original_import_skipped ORDER BY message_id"),
        }
    finally:
        await connection.close()


async def table_names(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        return [
            row[0]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
    finally:
        await connection.close()


async def test_every_account_and_message_arrives_and_is_served_by_the_api(
    databases: DatabaseFactory, launch: Launch
) -> None:
    original = await make_original(databases)
    target = await databases.create()
    done = run_import(original.dsn, target, "--batch-size", "3")
    assert done.returncode == 0, done.stderr
    summary = done.stdout
    assert f"users: {len(NAMES)}" in summary
    assert f"messages: {len(original.messages)}" in summary
    assert f"skipped messages: {len(original.skipped)}" in summary
    assert "'Alice', 'alice'" in summary and "'bob', '\uff42\uff4f\uff42'" in summary  # look-alikes named
    assert "'zero\\u200bwidth': the sign-up rule would refuse this name" in summary

    connection = await asyncpg.connect(target)
    try:
        skipped = dict(await connection.fetch("SELECT message_id, reason FROM original_import_skipped"))
    finally:
        await connection.close()
    assert skipped.keys() == original.skipped.keys()
    for message_id, reason in original.skipped.items():
        assert skipped[message_id].startswith(reason), (message_id, skipped[message_id])

    server = await launch(database_url=target)
    async with client_for(server) as client:
        tokens = {}
        for name, password in NAMES.items():
            login = await client.post("/login", json={"username": name, "password": password})
            assert login.status_code == 200, (name, login.text)
            assert login.json()["id"] == original.ids[name]
            tokens[name] = login.json()["token"]
        # The exact spelling decides between accounts the original told apart by case.
        wrong = await client.post("/login", json={"username": "alice", "password": NAMES["Alice"]})
        assert_error(wrong, 401, "unauthorized")

        for name, user_id in original.ids.items():
            headers = {"Authorization": f"Bearer {tokens[name]}"}
            page = await client.get(
                "/messages", params={"recipient": user_id, "limit": 1000}, headers=headers
            )
            assert page.status_code == 200, page.text
            expected = [
                {
                    "id": message_id,
                    "timestamp": stamp,
                    "sender": sender,
                    "recipient": recipient,
                    "content": content,
                }
                for message_id, (sender, recipient, stamp, content) in sorted(original.messages.items())
                if recipient == user_id
            ]
            assert page.json()["messages"] == expected, name

        # Conversations and unread counts, as chatsvc keeps them for new messages.
        alice, bob = original.ids["Alice"], original.ids["bob"]
        listing = await client.get("/conversations", headers={"Authorization": f"Bearer {tokens['Alice']}"})
        assert listing.status_code == 200, listing.text
        (with_bob,) = listing.json()["conversations"]
        between = [i for i, (s, r, _, _) in original.messages.items() if {s, r} == {alice, bob}]
        assert with_bob["peer"] == {"id": bob, "username": "bob"}
        assert with_bob["last_message"]["id"] == max(between)
        assert with_bob["unread"] == sum(1 for i in between if original.messages[i][0] == bob)
        assert with_bob["last_read"] is None

        # New ids continue past the imported ones.
        sent = await client.post(
            "/messages",
            json={"recipient": bob, "content": {"type": "text", "text": "new"}},
            headers={"Authorization": f"Bearer {tokens['Alice']}"},
        )
        assert sent.status_code == 201, sent.text
        assert sent.json()["id"] > max([*original.messages, *original.skipped])
        signed_up = await client.post("/users", json={"username": "erin", "password": "erin-password"})
        assert signed_up.status_code == 201 and signed_up.json()["id"] > max(original.ids.values())

    connection = await asyncpg.connect(target)
    try:
        hashes = dict(await connection.fetch("SELECT username, password_hash FROM users"))
    finally:
        await connection.close()
    assert all(hashes[name].startswith("$argon2id$") for name in NAMES), "upgraded at the first login"


async def test_a_stopped_import_resumes_to_the_same_result_and_a_rerun_adds_nothing(
    databases: DatabaseFactory,
) -> None:
    original = await make_original(databases, filler=300)
    whole = await databases.create()
    assert run_import(original.dsn, whole).returncode == 0

    stopped = await databases.create()
    env = {**os.environ, "DATABASE_URL": stopped}
    process = await asyncio.create_subprocess_exec(
        *import_command(original.dsn, stopped, "--batch-size", "1"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    while b"messages" not in await asyncio.wait_for(process.stderr.readline(), 60):
        pass
    process.send_signal(signal.SIGKILL)
    await process.wait()
    partial = await table_contents(stopped)
    assert 0 < len(partial["messages"]) < len(original.messages), "stopped in the middle"

    resumed = run_import(original.dsn, stopped, "--batch-size", "7")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after" in resumed.stdout
    assert await table_contents(stopped) == await table_contents(whole)

    again = run_import(original.dsn, stopped)
    assert again.returncode == 0, again.stderr
    assert "messages: 0" in again.stdout
    assert await table_contents(stopped) == await table_contents(whole)


async def test_a_dry_run_writes_nothing_and_a_database_in_use_is_refused(
    databases: DatabaseFactory, launch: Launch
) -> None:
    original = await make_original(databases)
    empty = await databases.create()
    dry = run_import(original.dsn, empty, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and f"messages: {len(original.messages)}" in dry.stdout
    assert await table_names(empty) == []

    in_use = await databases.create(migrated=True)
    server = await launch(database_url=in_use)
    async with client_for(server) as client:
        created = await client.post("/users", json={"username": "someone", "password": "a-password"})
        assert created.status_code == 201
    refused = run_import(original.dsn, in_use)
    assert refused.returncode == 1
    assert "already holds users or messages" in refused.stderr
    assert len((await table_contents(in_use))["users"]) == 1


@pytest.mark.parametrize("source", ["unreachable", "not a url", "not the original's"])
async def test_an_unreachable_or_wrong_source_is_a_clear_error(
    databases: DatabaseFactory, source: str
) -> None:
    dsn = {"unreachable": "postgresql://127.0.0.1:1/none", "not a url": "not a url"}.get(source)
    target = await databases.create()
    refused = run_import(dsn or await databases.create(), target)
    assert refused.returncode == 1
    assert refused.stderr.startswith("chatsvc import-original: "), refused.stderr
    assert "Traceback" not in refused.stderr
    target_tables = await table_names(target)
    assert target_tables == [], "a wrong source changes nothing in the target"
