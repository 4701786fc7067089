"""Debug routes of the admin app: a task dump, an event loop profile, allocation sites."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import linecache
import pstats
import re
import sys
import traceback
import tracemalloc
from types import FrameType
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from chatsvc.errors import ApiError, ErrorCode, invalid_request

PROFILE_DEFAULT_SECONDS = 5.0
PROFILE_MAX_SECONDS = 60.0
PROFILE_TOP = 30
MEMORY_FRAMES = 25
MEMORY_TOP = 25

_SECONDS = re.compile(r"\d+(?:\.\d+)?")
# Sites that only describe the tracing itself, or imports done once at start.
_NOT_THE_APP = frozenset({tracemalloc.__file__, "<frozen importlib._bootstrap>",
                          "<frozen importlib._bootstrap_external>", "<unknown>"})
# Never waited on while held (a second profile is refused), so it binds to no loop.
_profiling = asyncio.Lock()


async def tasks(request: Request) -> Response:
    """Every asyncio task of the loop with its stack: the analogue of Go's goroutine dump."""
    current = asyncio.current_task()
    all_tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())
    sections = [f"{len(all_tasks)} asyncio tasks\n"]
    for task in all_tasks:
        state = "running" if task is current else _state(task)
        sections.append(f"task {task.get_name()!r} ({state}) coroutine {_coroutine_name(task)}\n"
                        "Stack (most recent call last):\n"
                        + "".join(_format_frames(task_stack(task))))
    return PlainTextResponse("\n".join(sections))


async def profile(request: Request) -> Response:
    """Profile the event loop thread for `seconds` and list its hottest functions."""
    seconds = profile_seconds(request.query_params.get("seconds"))
    if _profiling.locked():
        raise ApiError(ErrorCode.CONFLICT, "a profile is already running; retry when it has finished")
    async with _profiling:
        profiler = cProfile.Profile()
        try:
            profiler.enable()
        except ValueError:  # Python 3.12+: another profiler (not ours) holds the thread.
            raise ApiError(ErrorCode.CONFLICT,
                           "another profiler is active on the event loop thread") from None
        try:
            # The handler runs on the loop thread, so the profiler sees all the loop runs meanwhile.
            stayed = await _sleep_while_connected(request, seconds)
        finally:
            profiler.disable()
    head = f"event loop thread profiled for {seconds:g} s"
    if not stayed:
        head += " (cut short: the client went away)"
    head += "; work in other threads (executors, password hashing) is not seen\n"
    return PlainTextResponse(head + format_profile(profiler))


async def memory(request: Request) -> Response:
    """GET: the top allocation sites (409 while tracing is off). POST: start tracing. DELETE: stop.

    No GET changes anything: tracing slows every request down, and a page elsewhere could make a
    browser GET this route (`<img src=...>`), but not POST or DELETE it.
    """
    if request.method == "POST":
        if tracemalloc.is_tracing():
            return PlainTextResponse("tracemalloc was already running\n")
        tracemalloc.start(MEMORY_FRAMES)
        return PlainTextResponse(
            f"tracemalloc started ({MEMORY_FRAMES} frames): allocations from now on are traced; "
            "GET for the top sites, DELETE to stop tracing\n")
    if request.method == "DELETE":
        if not tracemalloc.is_tracing():
            return PlainTextResponse("tracemalloc was not running\n")
        tracemalloc.stop()
        return PlainTextResponse("tracemalloc stopped; traces cleared\n")
    if not tracemalloc.is_tracing():
        raise ApiError(ErrorCode.CONFLICT, "memory tracing is off: POST /debug/memory starts it")
    # Snapshot and grouping take a while on a big heap; a thread lets the loop keep answering.
    return PlainTextResponse(await asyncio.to_thread(top_allocation_sites))


def profile_seconds(raw: str | None) -> float:
    """The `seconds` query parameter: a number from 1 to 60, 5 when absent."""
    if raw is None:
        return PROFILE_DEFAULT_SECONDS
    if _SECONDS.fullmatch(raw) and 1 <= float(raw) <= PROFILE_MAX_SECONDS:
        return float(raw)
    raise invalid_request(f"seconds: expected a number from 1 to {PROFILE_MAX_SECONDS:g}")


def task_stack(task: asyncio.Task[Any]) -> list[FrameType]:
    """The task's frames, outermost first, down to where it is suspended (or running)."""
    if task is asyncio.current_task():
        # Running, it awaits nothing yet: its stack is this thread's, down to the caller.
        return [frame for frame, _ in traceback.walk_stack(sys._getframe(1))][::-1]
    frames = task.get_stack()
    # get_stack() stops at the task's own coroutine; the awaited chain says where it is parked.
    awaited = _awaited_by(task.get_coro())
    while awaited is not None and (frame := _frame_of(awaited)) is not None:
        frames.append(frame)
        awaited = _awaited_by(awaited)
    return frames


def format_profile(profiler: cProfile.Profile) -> str:
    """The top functions by cumulative time, then by own time, as pstats prints them."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"\n=== top {PROFILE_TOP} by cumulative time ===\n")
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(PROFILE_TOP)
    out.write(f"\n=== top {PROFILE_TOP} by own time ===\n")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(PROFILE_TOP)
    return out.getvalue()


def top_allocation_sites() -> str:
    """The largest allocation sites still alive, with current and peak traced memory."""
    statistics = tracemalloc.take_snapshot().statistics("lineno")
    current, peak = tracemalloc.get_traced_memory()
    # Filtering the grouped sites, not Snapshot.filter_traces: that is seconds per 100k traces.
    sites = [stat for stat in statistics if stat.traceback[0].filename not in _NOT_THE_APP]
    lines = [f"traced memory: current {_size(current)}, peak {_size(peak)}",
             f"top {MEMORY_TOP} allocation sites by size:"]
    for rank, stat in enumerate(sites[:MEMORY_TOP], start=1):
        frame = stat.traceback[0]
        lines.append(f"#{rank} {frame.filename}:{frame.lineno}: {_size(stat.size)} in {stat.count} blocks")
        if source := linecache.getline(frame.filename, frame.lineno).strip():
            lines.append(f"    {source}")
    return "\n".join(lines) + "\n"


async def _sleep_while_connected(request: Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the client has gone away."""
    # Servers let a handler run on after a disconnect: stop early rather than hold the profiler.
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        return not done
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _state(task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return "cancelled"
    return "done" if task.done() else "pending"


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", type(coro).__qualname__)


def _awaited_by(awaitable: Any) -> Any:
    for attribute in ("cr_await", "gi_yieldfrom", "ag_await"):
        if (awaited := getattr(awaitable, attribute, None)) is not None:
            return awaited
    return None


def _frame_of(awaitable: Any) -> FrameType | None:
    for attribute in ("cr_frame", "gi_frame", "ag_frame"):
        if isinstance(frame := getattr(awaitable, attribute, None), FrameType):
            return frame
    return None


def _format_frames(frames: list[FrameType]) -> list[str]:
    # A frame being set up has no line yet; 0 makes linecache return no source instead of failing.
    return traceback.StackSummary.extract((frame, frame.f_lineno or 0) for frame in frames).format()


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = size / 1024
    for unit in ("KiB", "MiB"):
        if scaled < 1024:
            return f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} GiB"


ROUTES = [
    Route("/debug/tasks", tasks, methods=["GET"]),
    Route("/debug/profile", profile, methods=["GET"]),
    Route("/debug/memory", memory, methods=["GET", "POST", "DELETE"]),
]
