"""Password hashing: argon2id for new hashes, bcrypt verified for legacy ones, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import argon2
import bcrypt

from chatsvc import metrics
from chatsvc.config import Settings

T = TypeVar("T")

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# bcrypt only ever looked at the first 72 bytes; the original's hashes were made that way.
BCRYPT_MAX_BYTES = 72
# The hash threads run at the lowest CPU priority: when the CPU is short, the event loop (and so
# every other request) comes first and logins wait for what is left, instead of a login storm
# slowing every request down (measured in BENCHMARKS.md, "Login storm").
HASH_THREAD_NICE_INCREMENT = 19


class HashQueueFull(Exception):
    """More than `CHATSVC_HASH_QUEUE` hashes already wait: answered 503 at once, not after them."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a verification; `new_hash` is set when the stored hash should be replaced."""

    ok: bool
    new_hash: str | None = None


class Passwords:
    """Hashes and verifies passwords in a thread pool so a burst of logins never stalls requests.

    The queue in front of the threads is bounded: past `CHATSVC_HASH_QUEUE` waiting hashes a new
    login, sign-up or password change raises HashQueueFull at once, so that a flood of logins
    cannot make a real one wait for all of them. A hash that completes a login already verified
    (a legacy hash replaced) is not refused.
    """

    def __init__(self, settings: Settings) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=argon2.Type.ID,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.hash_threads, thread_name_prefix="password-hash", initializer=_yield_the_cpu
        )
        # Verified when the username is unknown, so that costs what a wrong password costs.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._most_in_flight = settings.hash_threads + settings.hash_queue
        self._in_flight = 0

    async def hash(self, password: str, *, bounded: bool = True) -> str:
        """A new argon2id hash of `password`; HashQueueFull when the queue is full and `bounded`."""
        return await self._run(self._hasher.hash, password, bounded=bounded)

    async def verify(self, stored_hash: str | None, password: str) -> Verdict:
        """Check `password` against `stored_hash` (None: unknown user, always false)."""
        if stored_hash is None:
            await self._run(self._verify_argon2, self._dummy_hash, password)
            return Verdict(ok=False)
        if stored_hash.startswith(BCRYPT_PREFIXES):
            ok = await self._run(self._verify_bcrypt, stored_hash, password)
            if not ok:
                return Verdict(ok=False)
            return Verdict(ok=True, new_hash=await self.hash(password, bounded=False))
        ok = await self._run(self._verify_argon2, stored_hash, password)
        if ok and self._needs_rehash(stored_hash):
            return Verdict(ok=True, new_hash=await self.hash(password, bounded=False))
        return Verdict(ok=ok)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, function: Callable[..., T], *args: object, bounded: bool = True) -> T:
        if bounded and self._in_flight >= self._most_in_flight:
            metrics.PASSWORD_HASH_REJECTED.inc()
            raise HashQueueFull
        started = time.perf_counter()
        self._in_flight += 1
        metrics.PASSWORD_HASH_QUEUE.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._in_flight -= 1
            metrics.PASSWORD_HASH_QUEUE.dec()
            metrics.PASSWORD_HASH_SECONDS.observe(time.perf_counter() - started)

    def _verify_argon2(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def _needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except argon2.exceptions.InvalidHashError:
            return True

    @staticmethod
    def _verify_bcrypt(stored_hash: str, password: str) -> bool:
        try:
            return bcrypt.checkpw(password.encode()[:BCRYPT_MAX_BYTES], stored_hash.encode())
        except ValueError:
            return False


def _yield_the_cpu() -> None:
    """Lower the priority of the calling hash thread only (on Linux a thread has its own nice value)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.nice(HASH_THREAD_NICE_INCREMENT)
