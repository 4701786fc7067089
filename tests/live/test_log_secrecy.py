"""A live server's logs: one access line per request, and never a secret."""

from __future__ import annotations

import asyncio
import hashlib
import json

import asyncpg
import bcrypt
import httpx

from tests import PROJECT_ROOT
from tests.live.conftest import Launch


async def test_no_secret_ever_reaches_a_log_line(launch: Launch) -> None:
    server = await launch(CHATSVC_LOG_LEVEL="debug", CHATSVC_AUTH_BURST="1000")
    url, log_path = server.database_url, server.log_path
    secrets_seen: list[str] = []
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
    server.stop()  # its log is complete once it has exited
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
