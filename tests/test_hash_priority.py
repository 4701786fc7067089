"""Password hashing yields the CPU to the event loop, so a login storm does not slow other requests."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from chatsvc.config import Settings
from chatsvc.passwords import HASH_THREAD_NICE_INCREMENT, Passwords
from tests.conftest import TEST_SETTINGS


def _thread_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_hash_threads_are_nicer_than_the_event_loop() -> None:
    passwords = Passwords(Settings.from_env({**TEST_SETTINGS, "CHATSVC_HASH_THREADS": "1"}))
    try:
        hashing = await passwords._run(_thread_niceness)
    finally:
        passwords.close()
    assert hashing == min(19, _thread_niceness() + HASH_THREAD_NICE_INCREMENT)
