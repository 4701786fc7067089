"""Logs: one JSON object per line, one access line per request, and never a secret."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path

import bcrypt
import httpx

from chatsvc.logs import JsonFormatter
from chatsvc.migrate import migrate
from tests.support import PROJECT_ROOT, DatabaseFactory, ServerProcess


def test_a_record_becomes_one_json_object_with_its_extra_fields() -> None:
    record = logging.LogRecord("chatsvc.test", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.request_id = "abc"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "warning" and parsed["message"] == "hello you"
    assert parsed["request_id"] == "abc" and parsed["time"].endswith("Z")


async def test_no_secret_ever_reaches_a_log_line(databases: DatabaseFactory, tmp_path: Path) -> None:
    url = await databases.create()
    await migrate(url)
    log_path = tmp_path / "serve.log"
    secrets_seen: list[str] = []
    with ServerProcess(url, log_path, CHATSVC_LOG_LEVEL="debug", CHATSVC_AUTH_BURST="1000") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for name in ("log-alice", "log-bob"):
                password = f"pw-{name}-correct-horse"
                secrets_seen.append(password)
                assert (await client.post("/users", json={"username": name, "password": password})
                        ).status_code == 201
                login = await client.post("/login", json={"username": name, "password": password})
                token = login.json()["token"]
                secrets_seen += [token, hashlib.sha256(token.encode()).hexdigest()]
                headers = {"Authorization": f"Bearer {token}"}
                await client.post("/messages", headers=headers,
                                  json={"recipient": 1, "content": {"type": "text", "text": "hi"}})
                await client.get("/messages", params={"recipient": 1}, headers=headers)
                await client.post("/logout", headers={"Authorization": token})
                # The revoked token, a wrong password and a garbage token: the failure paths log too.
                await client.get("/messages", params={"recipient": 1}, headers=headers)
                wrong = f"wrong-{password}"
                secrets_seen.append(wrong)
                await client.post("/login", json={"username": name, "password": wrong})
                await client.get("/messages", params={"recipient": 1},
                                 headers={"Authorization": "Bearer not-a-token-at-all"})
            # A legacy bcrypt account, upgraded at login: neither hash may be logged.
            legacy_password = "legacy-secret-1"
            legacy_hash = bcrypt.hashpw(legacy_password.encode(), bcrypt.gensalt(4)).decode()
            secrets_seen += [legacy_password, legacy_hash]
            import asyncpg

            connection = await asyncpg.connect(url)
            try:
                await connection.execute(
                    "INSERT INTO users (username, username_key, password_hash) VALUES ($1, $1, $2)",
                    "log-legacy", legacy_hash)
                assert (await client.post("/login", json={"username": "log-legacy",
                                                          "password": legacy_password})
                        ).status_code == 200
                secrets_seen += [row["password_hash"] for row in await connection.fetch(
                    "SELECT password_hash FROM users")]
            finally:
                await connection.close()
        script = await asyncio.create_subprocess_exec(
            "bash", str(PROJECT_ROOT / "bin" / "integration-test"),
            env={"PATH": "/usr/bin:/bin", "HOST": server.url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(script.communicate(), 300)
        assert script.returncode == 0, output.decode()
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    access = [r for r in records if r["logger"] == "chatsvc.access"]
    assert len(access) > 50  # the traffic above really was logged
    assert {"request_id", "method", "route", "status", "duration_ms", "user_id"} <= set(access[0])
    assert any(r["user_id"] is not None for r in access)
    text = log_path.read_text()
    for secret in secrets_seen:
        assert secret not in text
    for marker in ("$argon2id$", "$2b$", "Bearer ", "authorization", "Authorization", "password\":"):
        assert marker not in text, marker
