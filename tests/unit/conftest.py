"""Fixtures the unit tests share (helpers they import live in modules beside this one, never in a test module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.offline_cli import finished_example


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The shipped example as an operator finishes it: the shipped files plus the revision they vetted and the
    secrets (a module that needs another state defines its own)."""
    return finished_example(tmp_path)
