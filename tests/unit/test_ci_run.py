"""`.ci/run` stays a thin wrapper of `make test`: it keeps make's exit status and prints the run's wall time last."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("recipe", "status"), [("@echo tests ran", 0), ("@echo tests ran; exit 5", 2)])
def test_ci_run_keeps_makes_status_and_prints_the_wall_time_last(tmp_path: Path, recipe: str, status: int) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "Makefile").write_text(f"test:\n\t{recipe}\n")
    # As CI starts it: not inside another make (under `make test` the outer make's MAKELEVEL/MAKEFLAGS would make
    # the inner one print "Entering directory" lines).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run([str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60, check=False,
                          env=env)
    assert proc.returncode == status, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "tests ran"
    assert re.fullmatch(rf"ci: make test exited {status} after 0h00m\d\ds wall time \(\d+ s\)", lines[-1]), lines
