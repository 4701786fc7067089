"""Serving: hypercorn on the public and admin listeners, worker processes, signals, the drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing import resource_tracker
from multiprocessing.connection import wait as wait_for_processes
from typing import cast

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from chatsvc.config import Settings
from chatsvc.readiness import Readiness

log = logging.getLogger("chatsvc.server")

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A worker that dies this soon after starting is failing to start, not crashing once.
RESPAWN_BACKOFF_SECONDS = 1.0


def run(settings: Settings) -> int:
    """`chatsvc serve`: one process serving, or a supervisor of `CHATSVC_WORKERS` of them."""
    public, admin = (hypercorn_config(settings, address) for address in listeners(settings))
    sockets = public.create_sockets(), admin.create_sockets()
    if settings.workers == 1:
        return _serve_in_this_process(settings, sockets)
    return Supervisor(settings, sockets).run()


def listeners(settings: Settings) -> tuple[tuple[str, int], tuple[str, int]]:
    """(host, port) of the public and of the admin listener, which bind independently."""
    return (settings.host, settings.port), (settings.admin_host, settings.admin_port)


def hypercorn_config(settings: Settings, address: tuple[str, int]) -> HypercornConfig:
    host, port = address
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.workers = settings.workers  # hypercorn sets SO_REUSEPORT for more than one
    config.graceful_timeout = settings.shutdown_timeout
    # Until a request's headers are complete the connection counts as idle, so this also
    # bounds how long a client may take to send them (one byte a second gets cut off).
    config.keep_alive_timeout = settings.keep_alive_timeout
    # No read timeout: hypercorn applies it to the whole connection, even while a response is
    # streaming, and tells the app the client left; every event stream would end after it.
    # Headers are bounded by the keep-alive timeout above, bodies by read_body's own timeout.
    config.read_timeout = None
    config.h11_max_incomplete_size = settings.max_header_bytes
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("chatsvc.hypercorn")
    return config


class Drain:
    """The shutdown sequence of docs/API.md, started by the first signal; a second exits at once."""

    def __init__(self, settings: Settings, readiness: Readiness) -> None:
        self._settings = settings
        self._readiness = readiness
        self._task: asyncio.Task[None] | None = None
        self.listeners_closed = asyncio.Event()

    def on_signal(self, signum: int) -> None:
        if self._task is not None:
            log.warning("second signal: exiting at once", extra={"signal": signum})
            os._exit(128 + signum)
        log.info("draining", extra={"signal": signum, "drain_delay": self._settings.drain_delay})
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="drain")

    async def _drain(self) -> None:
        # Readiness fails at once; serving goes on while load balancers notice.
        self._readiness.draining = True
        await asyncio.sleep(self._settings.drain_delay)
        log.info("closing listeners", extra={"shutdown_timeout": self._settings.shutdown_timeout})
        self.listeners_closed.set()


async def serve(settings: Settings, sockets: tuple[Sockets, Sockets]) -> None:
    """Serve both listeners on already-bound sockets until a signal has drained them."""
    from chatsvc import framing, metrics
    from chatsvc.admin import build_admin_app
    from chatsvc.app import build_app
    from chatsvc.resources import open_resources

    framing.install(h2c=settings.h2c)
    async with open_resources(settings) as resources:
        drain = Drain(settings, resources.readiness)
        loop = asyncio.get_running_loop()
        for signum in DRAIN_SIGNALS:
            loop.add_signal_handler(signum, drain.on_signal, signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, DRAIN_SIGNALS)  # blocked while a worker starts
        apps = build_app(resources), build_admin_app(resources)
        flusher = loop.create_task(metrics.flush_requests_forever(settings.metrics_flush_interval),
                                   name="metrics-flush")
        try:
            await asyncio.gather(*(
                # Starlette's and hypercorn's ASGI type hints differ in spelling, not in meaning.
                worker_serve(wrap_app(cast(ASGIFramework, app), 0, "asgi"),
                             hypercorn_config(settings, address), sockets=bound,
                             shutdown_trigger=drain.listeners_closed.wait)
                for app, address, bound in zip(apps, listeners(settings), sockets, strict=True)))
        finally:
            flusher.cancel()
            # The requests served since the last flush, the drain's included, are counted too.
            metrics.REQUEST_TALLY.flush()
    log.info("stopped")


def _serve_in_this_process(settings: Settings, sockets: tuple[Sockets, Sockets]) -> int:
    import uvloop

    log.info("serving", extra={"port": settings.port, "admin_port": settings.admin_port,
                               "pid": os.getpid()})
    uvloop.run(serve(settings, sockets))
    return 0


def _worker_main(settings: Settings, sockets: tuple[Sockets, Sockets]) -> None:
    """Entry point of a worker process."""
    # Own process group: a terminal's Ctrl-C reaches only the supervisor, which then
    # drains every worker once, instead of each worker seeing it and then a second signal.
    os.setpgrp()
    from chatsvc.logs import configure_logging

    configure_logging(settings)
    _serve_in_this_process(settings, sockets)


class Supervisor:
    """Keeps `CHATSVC_WORKERS` processes serving the shared sockets; one signal drains them all."""

    def __init__(self, settings: Settings, sockets: tuple[Sockets, Sockets]) -> None:
        self.settings = settings
        self.sockets = sockets
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, multiprocessing.process.BaseProcess] = {}
        self.stopping = False

    def run(self) -> int:
        from chatsvc import metrics

        metrics_dir = tempfile.mkdtemp(prefix="chatsvc-metrics-")
        # Set before the workers start, so each of them writes its samples where any can scrape.
        os.environ[metrics.MULTIPROCESS_DIR_ENV] = metrics_dir
        for signum in DRAIN_SIGNALS:
            signal.signal(signum, self._on_signal)
        try:
            for _ in range(self.settings.workers):
                self._start_worker()
            log.info("supervising", extra={"workers": self.settings.workers, "pid": os.getpid()})
            return self._supervise()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _start_worker(self) -> None:
        process = self.context.Process(target=_worker_main, args=(self.settings, self.sockets),
                                       name="chatsvc-worker")
        # A worker keeps the default (deadly) SIGTERM action until serve() installs the drain, so
        # it starts with the signals blocked and serve() unblocks them once they are handled.
        resource_tracker.ensure_running()  # it unblocks them itself when it first starts
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, DRAIN_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.workers[process.sentinel] = process

    def _supervise(self) -> int:
        from chatsvc import metrics

        failed = False
        while self.workers:
            for sentinel in wait_for_processes(list(self.workers)):
                assert isinstance(sentinel, int)  # the keys of self.workers are sentinels
                process = self.workers.pop(sentinel)
                process.join()  # the sentinel fires before the exit status can be read
                metrics.worker_exited(_pid(process))
                if self.stopping:
                    failed |= process.exitcode != 0
                    log.info("worker stopped", extra={"pid": process.pid, "exitcode": process.exitcode})
                    continue
                log.error("worker exited; starting another",
                          extra={"pid": process.pid, "exitcode": process.exitcode})
                time.sleep(RESPAWN_BACKOFF_SECONDS)
                if not self.stopping:
                    self._start_worker()
        log.info("stopped", extra={"failed": failed})
        return 1 if failed else 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            log.warning("second signal: stopping workers at once", extra={"signal": signum})
            for process in self.workers.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(_pid(process), signal.SIGKILL)
            os._exit(128 + signum)
        self.stopping = True
        log.info("draining workers", extra={"signal": signum, "workers": len(self.workers)})
        for process in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(_pid(process), signal.SIGTERM)
        # The workers close their copies when their drain delay ends; ours must go too, or the
        # kernel keeps queueing connections that no one will accept and resets them at exit.
        for bound in self.sockets:
            for sock in (*bound.secure_sockets, *bound.insecure_sockets):
                sock.close()


def _pid(process: multiprocessing.process.BaseProcess) -> int:
    """The pid of a started worker (only a process not yet started has none)."""
    assert process.pid is not None
    return process.pid
