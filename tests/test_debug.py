"""Debug routes: the task dump, the event loop profile, allocation sites."""

from __future__ import annotations

import asyncio
import re
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette

from chatsvc.admin.debug import ROUTES
from chatsvc.api.error_handlers import EXCEPTION_HANDLERS


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
        yield client


@pytest.fixture
def no_tracing() -> Iterator[None]:
    """tracemalloc off before and after: tracing slows everything that runs after it."""
    tracemalloc.stop()
    yield
    tracemalloc.stop()


async def parked_for_the_dump(event: asyncio.Event) -> None:
    await event.wait()


async def churn_for_the_profiler(stop: asyncio.Event) -> None:
    """CPU work in small chunks, yielding to the loop between them as a busy handler would."""
    while not stop.is_set():
        sum(i * i for i in range(10_000))
        await asyncio.sleep(0)


def allocate_for_the_memory_dump() -> list[bytearray]:
    return [bytearray(1000) for _ in range(10**4)]


def stack_of(dump: str, name: str) -> str:
    """The section of the dump for the task called `name`."""
    match = re.search(rf"^task '{re.escape(name)}' .*?(?=^task |\Z)", dump, re.MULTILINE | re.DOTALL)
    assert match, f"no task {name!r} in the dump"
    return match.group(0)


async def until_in_the_profile_handler(client: httpx.AsyncClient, task_name: str) -> None:
    """Wait until the task dump shows `task_name` inside the profile handler."""
    for _ in range(500):
        if "in profile\n" in stack_of((await client.get("/debug/tasks")).text, task_name):
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{task_name} never reached the profile handler")


async def test_the_task_dump_shows_each_task_where_it_is_parked(client: httpx.AsyncClient) -> None:
    release = asyncio.Event()
    parked = [asyncio.create_task(parked_for_the_dump(release), name=name)
              for name in ("b-parked", "a-parked")]
    await asyncio.sleep(0)  # let them run up to their await
    this_task = asyncio.current_task()
    assert this_task
    try:
        response = await client.get("/debug/tasks")
    finally:
        release.set()
        await asyncio.gather(*parked)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    header = re.match(r"(\d+) asyncio tasks\n", response.text)
    assert header and int(header.group(1)) >= 3
    names = re.findall(r"^task '([^']*)'", response.text, re.MULTILINE)
    assert len(names) == int(header.group(1))
    assert names == sorted(names)
    section = stack_of(response.text, "a-parked")
    assert section.startswith("task 'a-parked' (pending) coroutine parked_for_the_dump\n")
    assert re.search(r'File ".*test_debug\.py", line \d+, in parked_for_the_dump\n\s+await event\.wait\(\)',
                     section)
    # The awaited chain is followed below the task's own coroutine, into Event.wait.
    assert re.search(r'File ".*locks\.py", line \d+, in wait\n', section)
    # The task asking for the dump is running: its stack goes down into the handler.
    assert re.search(r"in tasks\n[^\n]*\n+\Z", stack_of(response.text, this_task.get_name()))


async def test_a_profile_names_the_functions_the_loop_was_busy_in(client: httpx.AsyncClient) -> None:
    stop = asyncio.Event()
    churn = asyncio.create_task(churn_for_the_profiler(stop))
    try:
        response = await client.get("/debug/profile", params={"seconds": "1"})
    finally:
        stop.set()
        await churn

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("event loop thread profiled for 1 s;")
    by_cumulative, _, by_own = response.text.partition("by own time")
    assert "churn_for_the_profiler" in by_cumulative
    assert "churn_for_the_profiler" in by_own


@pytest.mark.parametrize("seconds", ["0", "0.5", "61", "60.5", "abc", "", "-1", "1e1", "nan"])
async def test_a_profile_length_outside_1_to_60_seconds_is_refused(client: httpx.AsyncClient,
                                                                   seconds: str) -> None:
    response = await client.get("/debug/profile", params={"seconds": seconds})
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid_request",
                                         "message": "seconds: expected a number from 1 to 60"}}


async def test_only_one_profile_runs_at_a_time(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(client.get("/debug/profile?seconds=1") for _ in range(2)))

    assert sorted(response.status_code for response in responses) == [200, 409]
    refused = next(response for response in responses if response.status_code == 409)
    assert refused.json() == {"error": {"code": "conflict", "message":
                                        "a profile is already running; retry when it has finished"}}


async def test_a_cancelled_profile_stops_the_profiler_and_frees_the_slot(client: httpx.AsyncClient) -> None:
    request = asyncio.create_task(client.get("/debug/profile?seconds=60"), name="profile-client")
    try:
        await until_in_the_profile_handler(client, "profile-client")
    finally:
        request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert sys.getprofile() is None
    assert (await client.get("/debug/profile?seconds=1")).status_code == 200


async def test_a_profile_ends_when_the_client_goes_away() -> None:
    app = Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/debug/profile", "raw_path": b"/debug/profile", "root_path": "",
             "query_string": b"seconds=60", "headers": [(b"host", b"admin")],
             "server": ("admin", 80), "client": ("127.0.0.1", 40000)}
    received = iter([{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(received, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    # Far below the 60 s asked for: the profile stopped because the client left.
    async with asyncio.timeout(10):
        await app(scope, receive, send)

    assert sent[0]["status"] == 200
    assert b"cut short: the client went away" in sent[1]["body"]


@pytest.mark.usefixtures("no_tracing")
async def test_memory_tracing_starts_on_demand_shows_sites_and_stops(client: httpx.AsyncClient) -> None:
    # No GET changes anything: while tracing is off, GET says so and leaves it off.
    off = await client.get("/debug/memory")
    assert off.status_code == 409 and off.json()["error"]["code"] == "conflict", off.text
    assert not tracemalloc.is_tracing()
    started = await client.post("/debug/memory")
    assert started.status_code == 200
    assert "tracemalloc started" in started.text
    assert tracemalloc.is_tracing()

    kept = allocate_for_the_memory_dump()
    report = await client.get("/debug/memory")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/plain")
    assert re.match(r"traced memory: current \d.*, peak \d", report.text)
    site_line = allocate_for_the_memory_dump.__code__.co_firstlineno + 1
    assert re.search(rf"^#\d+ .*test_debug\.py:{site_line}: [\d.]+ MiB in \d+ blocks\n"
                     r"\s+return \[bytearray\(1000\)", report.text, re.MULTILINE)
    assert "tracemalloc.py" not in report.text
    del kept

    stopped = await client.delete("/debug/memory")
    assert (stopped.status_code, stopped.text) == (200, "tracemalloc stopped; traces cleared\n")
    assert not tracemalloc.is_tracing()
    again = await client.delete("/debug/memory")
    assert (again.status_code, again.text) == (200, "tracemalloc was not running\n")
