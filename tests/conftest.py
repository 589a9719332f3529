"""Shared fixtures: every test gets its own state and cache directories unless it asks for the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import module_times


def pytest_configure(config: pytest.Config) -> None:
    module_times.install(config)


@pytest.fixture
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point enclave's state dir at a fresh directory (runs, sandbox records)."""
    state = tmp_path / "state"
    monkeypatch.setenv("ENCLAVE_STATE_DIR", str(state))
    return state
