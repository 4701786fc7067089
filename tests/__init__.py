"""The test suite; the live-server harness it uses is chatsvc.testing."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
