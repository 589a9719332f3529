"""make test's runner: the unit tier beside the integration tier, statuses kept, output not interleaved."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.both_tiers import run_beside

PY = sys.executable


def script(text: str) -> list[str]:
    return [PY, "-c", text]


def test_the_side_tier_prints_after_the_foreground_and_its_failure_fails_the_run(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    status = run_beside(script("print('side', 'says'); raise SystemExit(3)"),
                        script("import time; time.sleep(0.5); print('fore', 'says')"), tmp_path / "side.log")
    out = capfd.readouterr().out
    assert status == 3
    assert out.index("fore says") < out.index("side says"), out
    assert "exit 3" in out and (tmp_path / "side.log").read_text() == "side says\n"


def test_the_foreground_status_comes_first_and_no_tests_collected_in_the_side_tier_fails(tmp_path: Path) -> None:
    assert run_beside(script("raise SystemExit(5)"), script("raise SystemExit(1)"), tmp_path / "a.log") == 1
    assert run_beside(script("raise SystemExit(5)"), script("pass"), tmp_path / "b.log") == 5


def test_a_sigterm_stops_both_tiers(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    child = ("import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(120)")
    runner = (f"import sys; from pathlib import Path; from tests.both_tiers import run_beside; "
              f"sys.exit(run_beside([{PY!r}, '-c', {child!r}, {str(pids)!r}], "
              f"[{PY!r}, '-c', {child!r}, {str(pids)!r}], Path({str(tmp_path / 'side.log')!r})))")
    proc = subprocess.Popen([PY, "-c", runner], cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.1)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2, "the stand-in tiers did not start"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert f"exited {128 + signal.SIGTERM}" in out, out
    for pid in started:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), \
            f"tier process {pid} outlived the SIGTERM"
