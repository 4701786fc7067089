"""End to end over TCP: a real `chatsvc serve` process, driven by curl scripts as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from chatsvc.migrate import migrate
from tests.support import PROJECT_ROOT, DatabaseFactory, ServerProcess


async def fresh_server(databases: DatabaseFactory, log_path: Path) -> tuple[ServerProcess, str]:
    url = await databases.create()
    await migrate(url)
    return ServerProcess(url, log_path).start(), url


@pytest.fixture
async def server(databases: DatabaseFactory, tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, str]]:
    process, url = await fresh_server(databases, tmp_path / "serve.log")
    yield process, url
    process.stop()


def run_script(script: Path, host: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script)], env={**os.environ, "HOST": host},
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_end_to_end_script_passes(server: tuple[ServerProcess, str]) -> None:
    process, _ = server
    result = run_script(PROJECT_ROOT / "bin" / "integration-test", process.url)
    assert result.returncode == 0, result.stdout + result.stderr + process.log()
    summary = re.search(r"^integration-test: (\d+) passed, 0 failed$", result.stdout, re.MULTILINE)
    assert summary and int(summary.group(1)) > 100, result.stdout


async def test_the_original_services_own_script_passes_unmodified(
        server: tuple[ServerProcess, str]) -> None:
    process, url = server
    result = run_script(PROJECT_ROOT / "tests" / "original_integration_test.sh", process.url)
    assert result.returncode == 0, result.stdout + result.stderr + process.log()
    assert "Created user 1" in result.stdout
    # Each of its ten sends printed our 201 body; none printed an error envelope.
    created = re.findall(r'\{"id":(\d+),"timestamp":"[^"]+Z"\}', result.stdout)
    assert len(created) == 10, result.stdout
    assert '"error"' not in result.stdout
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT sender_id, recipient_id, content FROM messages ORDER BY id")
    finally:
        await connection.close()
    assert [(row["sender_id"], row["recipient_id"]) for row in rows] == [(1, 1)] * 10
    kinds = {json.loads(row["content"])["type"] for row in rows}
    assert kinds <= {"text", "image", "video"}
    # Its listing asks for start 1..500; whatever it printed must be messages of ours.
    for line in result.stdout.splitlines():
        if line.startswith('{"id":') and '"content"' in line:
            assert json.loads(line)["recipient"] == 1
