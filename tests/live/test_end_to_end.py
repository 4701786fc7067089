"""End to end over TCP: a real `chatsvc serve` process, driven by curl scripts as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import asyncpg
import pytest

from chatsvc.testing import ServerProcess
from tests import PROJECT_ROOT
from tests.live.conftest import Launch


@pytest.fixture
async def server(launch: Launch) -> ServerProcess:
    return await launch()


def run_script(script: Path, host: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script)], env={**os.environ, "HOST": host},
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_end_to_end_script_passes(server: ServerProcess) -> None:
    result = run_script(PROJECT_ROOT / "bin" / "integration-test", server.url)
    assert result.returncode == 0, result.stdout + result.stderr + server.log()
    summary = re.search(r"^integration-test: (\d+) passed, 0 failed$", result.stdout, re.MULTILINE)
    assert summary and int(summary.group(1)) > 100, result.stdout


async def test_the_original_services_own_script_passes_unmodified(
        server: ServerProcess) -> None:
    result = run_script(PROJECT_ROOT / "tests" / "original_integration_test.sh", server.url)
    assert result.returncode == 0, result.stdout + result.stderr + server.log()
    assert "Created user 1" in result.stdout
    # Each of its ten sends printed our 201 body; none printed an error envelope.
    created = re.findall(r'\{"id":(\d+),"timestamp":"[^"]+Z"\}', result.stdout)
    assert len(created) == 10, result.stdout
    assert '"error"' not in result.stdout
    connection = await asyncpg.connect(server.database_url)
    try:
        rows = await connection.fetch(
            "SELECT sender_id, recipient_id, content FROM messages ORDER BY id")
    finally:
        await connection.close()
    assert [(row["sender_id"], row["recipient_id"]) for row in rows] == [(1, 1)] * 10
    kinds = {json.loads(row["content"])["type"] for row in rows}
    assert kinds <= {"text", "image", "video"}
    # Its listing asks for start 1..500; whatever it printed must be messages of ours. (The last
    # send's body has no newline, so the first listed message can share its line.)
    listed = [document for line in result.stdout.splitlines() for document in json_documents(line)
              if "content" in document]
    assert all(document["recipient"] == 1 for document in listed), listed


def json_documents(line: str) -> list[dict]:
    """The JSON objects printed one after another on `line` (none if it is not JSON)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while line.startswith("{", at):
        try:
            document, at = decoder.raw_decode(line, at)
        except ValueError:
            return found
        found.append(document)
    return found
