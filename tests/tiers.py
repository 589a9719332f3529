"""`make test`: the integration tier, and the unit tier beside it once the integration tier's first deploy is done.

Measured on the 2-core CI machine kind (/proc/stat sampled over a clean-clone run): the integration tier keeps the CPU
48% busy over its 28 minutes, but its first deploy (vLLM installs, two engine starts: about 3 minutes) keeps it 78-100%
busy, and after it the tier mostly waits on engine starts, timers, grace periods and alerts (27-58% per module). The
unit tier needs about 7 CPU minutes. Run one after the other, its 4-5 minutes came on top of the integration tier's;
started together, both fought over the first deploy (284 s instead of 185 s). So the unit tier starts when the
integration tier signals that its first deploy is done (`SIGNAL_ENV`, a file its conftest writes), or when the
integration tier ends, or after `START_LIMIT_S`, whichever comes first, at a lower priority (nice 10) so the
integration tier's waits on real hosts keep their timing. Its output goes to a temporary file printed when both are
done: two sessions writing one terminal would interleave their lines.

Both tiers always run; the exit status is nonzero when either failed. Ctrl-C stops both: each is in the terminal's
process group and gets its SIGINT, and a unit tier still running when this runner ends is terminated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

UNIT_NICE = 10
SIGNAL_ENV = "ENCLAVE_TEST_DEPLOYED_SIGNAL"
START_LIMIT_S = 900.0
BIN = Path(sys.executable).parent


def unit_command() -> list[str]:
    return ["nice", "-n", str(UNIT_NICE), str(BIN / "pytest"), "-n", "auto", "--dist", "loadfile", "tests/unit"]


def integration_command() -> list[str]:
    return [str(BIN / "pytest"), "tests/integration"]


def _await_start(signal: Path, integration: subprocess.Popen[bytes], limit_s: float) -> str:
    """Why the unit tier may start now: the signal appeared, the integration tier ended, or the limit passed."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if signal.exists():
            return "the integration tier's first deploy is done"
        if integration.poll() is not None:
            return "the integration tier has ended"
        time.sleep(1)
    return f"the integration tier gave no signal within {limit_s:.0f} s"


def run(unit: Sequence[str], integration: Sequence[str], env: dict[str, str],
        start_limit_s: float = START_LIMIT_S) -> int:
    with tempfile.TemporaryDirectory(prefix="enclave-tiers-") as scratch, \
            (Path(scratch) / "unit.log").open("w+") as log:
        signal = Path(scratch) / "first-deploy-done"
        print(f"make test: integration tier: ENCLAVE_INTEGRATION=required {' '.join(integration)}", flush=True)
        integration_proc = subprocess.Popen(integration, env={**env, "ENCLAVE_INTEGRATION": "required",
                                                              SIGNAL_ENV: str(signal)})
        unit_proc: subprocess.Popen[bytes] | None = None
        try:
            why = _await_start(signal, integration_proc, start_limit_s)
            print(f"\nmake test: {why}: unit tier started beside it (its output follows at the end): "
                  f"{' '.join(unit)}", flush=True)
            unit_proc = subprocess.Popen(unit, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
            integration_rc = integration_proc.wait()
            if unit_proc.poll() is None:
                print("make test: waiting for the unit tier", flush=True)
            unit_rc = unit_proc.wait()
        except KeyboardInterrupt:
            integration_proc.wait()  # it had the same SIGINT: let it tear its sandbox down and end
            raise
        finally:
            for proc in (unit_proc, integration_proc):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(60)
        print("make test: the unit tier's output:", flush=True)
        log.seek(0)
        shutil.copyfileobj(log, sys.stdout)
    print(f"make test: unit tier exited {unit_rc}, integration tier exited {integration_rc}", flush=True)
    return 0 if unit_rc == 0 and integration_rc == 0 else 1


def main() -> int:
    return run(unit_command(), integration_command(), dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
