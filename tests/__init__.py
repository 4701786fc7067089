"""The test suite; the live-server harness it uses is chatsvc.testing."""

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Helper modules holding asserts shared by several test modules: pytest explains their failures too.
pytest.register_assert_rewrite("tests.message_requests", "tests.live.streams", "tests.openapi_checks",
                              "tests.live.prometheus_load", "tests.live.outage_requests",
                              "tests.session_requests", "tests.live.drain_support")
