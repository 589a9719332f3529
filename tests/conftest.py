"""Shared fixtures: every test gets its own state and cache directories unless it asks for the real ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import module_times

if "PYTEST_XDIST_WORKER" in os.environ:
    # An xdist worker (make test runs the unit tier on every core) starts with COLUMNS=80 in its environment, and
    # rich fixes a console's width from COLUMNS when the CLI module is imported (by the unit conftest, before any
    # hook): the CLI tests' own COLUMNS (CliRunner env) would no longer widen the tables they read.
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


def pytest_configure(config: pytest.Config) -> None:
    module_times.install(config)


@pytest.fixture
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point enclave's state dir at a fresh directory (runs, sandbox records)."""
    state = tmp_path / "state"
    monkeypatch.setenv("ENCLAVE_STATE_DIR", str(state))
    return state
