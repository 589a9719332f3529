"""make test's runner (tests/tiers.py) with stand-in tiers (small Python programs): the unit tier starts once the
integration tier signals its first deploy done (or ends, or the limit passes) and then runs beside it; both always
run, the exit status says whether either failed, and the unit tier's output comes after the integration tier's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import tiers

PRELUDE = ("import os, sys, time\nfrom pathlib import Path\n"
           "mark, early = Path(os.environ['MARK']), Path(os.environ['EARLY'])\n")
# The integration stand-in waits (bounded: 20 s) for the unit stand-in's mark: it passes only if the unit tier ran
# while it was still running, and only with ENCLAVE_INTEGRATION=required.
WAIT_FOR_UNIT = ("for _ in range(200):\n    if mark.exists():\n        break\n    time.sleep(0.1)\n"
                 "print('integration-line', flush=True)\n"
                 "sys.exit(0 if mark.exists() and os.environ.get('ENCLAVE_INTEGRATION') == 'required' else 1)\n")
SIGNAL = f"Path(os.environ['{tiers.SIGNAL_ENV}']).touch()\n"


def run(tmp_path: Path, capfd: pytest.CaptureFixture[str], unit: str, integration: str,
        limit_s: float = 60) -> tuple[int, str]:
    env = {"MARK": str(tmp_path / "mark"), "EARLY": str(tmp_path / "early")}
    rc = tiers.run([sys.executable, "-c", PRELUDE + unit], [sys.executable, "-c", PRELUDE + integration], env,
                   start_limit_s=limit_s)
    return rc, capfd.readouterr().out


def test_the_unit_tier_starts_at_the_signal_runs_beside_and_its_output_follows(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    unit = ("print('unit-line-1', flush=True)\nmark.touch()\nprint('unit-line-2')\n"
            "sys.exit(1 if early.exists() else 0)\n")
    # Before the signal the unit tier must not have started: the stand-in gives it a second to show up.
    integration = "time.sleep(1)\nif mark.exists():\n    early.touch()\n" + SIGNAL + WAIT_FOR_UNIT
    rc, out = run(tmp_path, capfd, unit, integration)
    assert rc == 0, out
    lines = out.splitlines()
    assert lines.index("integration-line") < lines.index("make test: the unit tier's output:") \
        < lines.index("unit-line-1") < lines.index("unit-line-2"), out
    assert "make test: the integration tier's first deploy is done: unit tier started beside it" in out
    assert out.rstrip().endswith("make test: unit tier exited 0, integration tier exited 0"), out


def test_without_a_signal_the_unit_tier_starts_after_the_limit(tmp_path: Path,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    rc, out = run(tmp_path, capfd, "mark.touch()\n", WAIT_FOR_UNIT, limit_s=1)
    assert rc == 0, out
    assert "the integration tier gave no signal within 1 s" in out


def test_an_integration_tier_that_ends_first_still_gets_its_unit_tier(tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    rc, out = run(tmp_path, capfd, "print('unit-ran')\n", "print('integration-ran')\nsys.exit(4)\n")
    assert rc == 1, out
    assert "the integration tier has ended" in out and "unit-ran" in out
    assert "unit tier exited 0, integration tier exited 4" in out


@pytest.mark.parametrize(("unit", "integration", "said"), [
    (3, 0, "unit tier exited 3, integration tier exited 0"),
    (0, 5, "unit tier exited 0, integration tier exited 5"),
    (1, 1, "unit tier exited 1, integration tier exited 1"),
])
def test_either_tier_failing_fails_make_test_after_both_ran(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                             unit: int, integration: int, said: str) -> None:
    rc, out = run(tmp_path, capfd, f"print('unit-ran')\nsys.exit({unit})\n",
                  SIGNAL + f"print('integration-ran')\nsys.exit({integration})\n")
    assert rc == 1 and said in out, out
    assert "unit-ran" in out and "integration-ran" in out


def test_the_unit_tier_runs_niced_on_every_core_and_the_integration_tier_serially() -> None:
    assert tiers.unit_command()[:3] == ["nice", "-n", "10"]
    assert tiers.unit_command()[3:] == [str(Path(sys.executable).parent / "pytest"), "-n", "auto", "--dist",
                                        "loadfile", "tests/unit"]
    assert tiers.integration_command() == [str(Path(sys.executable).parent / "pytest"), "tests/integration"]


def test_make_test_runs_this_runner() -> None:
    makefile = (Path(tiers.__file__).parents[1] / "Makefile").read_text()
    recipe = makefile[makefile.index("\ntest:"):].split("\n\n", 1)[0]
    assert "$(BIN)/python -m tests.tiers" in recipe, recipe


@pytest.mark.parametrize("signalled", [True, False], ids=["unit tier running", "before the signal"])
def test_ctrl_c_stops_both_and_lets_the_integration_tier_tear_down(tmp_path: Path, signalled: bool) -> None:
    # The runner in its own session, as make runs it in a terminal's process group; Ctrl-C is SIGINT to that group.
    pids = tmp_path / "unit.pid" if signalled else tmp_path / "integration.pid"
    unit = f"Path({str(tmp_path / 'unit.pid')!r}).write_text(str(os.getpid()))\ntime.sleep(60)\n"
    integration = ((SIGNAL if signalled else f"Path({str(pids)!r}).write_text(str(os.getpid()))\n")
                   + "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    time.sleep(0.5)\n"
                   "    (mark.parent / 'torn-down').touch()\n    sys.exit(2)\n")
    # Ctrl-C as in a terminal: a run started in the background of a non-interactive shell (`make test &`, a CI
    # runner's job) inherits SIGINT ignored, and a Python started so never raises KeyboardInterrupt; the runner
    # takes Python's own handler again, and its children (exec resets a handled signal) theirs.
    runner = (f"import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
              f"from tests import tiers\nsys.exit(tiers.run([sys.executable, '-c', {PRELUDE + unit!r}], "
              f"[sys.executable, '-c', {PRELUDE + integration!r}], {{'MARK': {str(tmp_path / 'mark')!r}, "
              f"'EARLY': {str(tmp_path / 'early')!r}}}))\n")
    proc = subprocess.Popen([sys.executable, "-c", runner], cwd=Path(tiers.__file__).parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(200):  # the unit tier (or, before the signal, the integration tier) runs (bounded: 20 s)
        if pids.exists() and pids.read_text():
            break
        time.sleep(0.1)
    assert pids.exists(), "the stand-in never started"
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode != 0, out
    assert (tmp_path / "torn-down").exists(), f"the integration tier was not let finish its teardown:\n{out}"
    if not signalled:
        assert not (tmp_path / "unit.pid").exists(), f"the unit tier started after Ctrl-C:\n{out}"
        return
    unit_pid = int(pids.read_text())
    for _ in range(100):
        if not Path(f"/proc/{unit_pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{unit_pid}").exists(), "the unit tier outlived the runner"
