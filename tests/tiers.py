"""`make test`: the unit tier and the integration tier at the same time.

The integration tier keeps this machine's CPU only about half busy (measured on the 2-core CI machine kind: 48% over
its 28 minutes; it waits on engine starts, timers, grace periods and alerts), and the unit tier needs about 7 CPU
minutes. Run one after the other, the unit tier's 4-5 minutes came on top; beside the integration tier, at a lower
priority (nice 10: the integration tier's waits on real hosts keep their timing), it fills those gaps. Its output goes
to a temporary file printed when both are done: two sessions writing one terminal would interleave their lines.

Both tiers always run; the exit status is nonzero when either failed. Ctrl-C stops both (the unit tier is in the
same process group and gets the terminal's SIGINT too, and is terminated if it is still running).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

UNIT_NICE = 10
BIN = Path(sys.executable).parent


def unit_command() -> list[str]:
    return ["nice", "-n", str(UNIT_NICE), str(BIN / "pytest"), "-n", "auto", "--dist", "loadfile", "tests/unit"]


def integration_command() -> list[str]:
    return [str(BIN / "pytest"), "tests/integration"]


def run(unit: Sequence[str], integration: Sequence[str], env: dict[str, str]) -> int:
    with tempfile.TemporaryFile("w+") as log:
        print(f"make test: unit tier, beside the integration tier (its output follows at the end): {' '.join(unit)}",
              flush=True)
        unit_proc = subprocess.Popen(unit, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            print(f"make test: integration tier: ENCLAVE_INTEGRATION=required {' '.join(integration)}", flush=True)
            integration_proc = subprocess.Popen(integration, env={**env, "ENCLAVE_INTEGRATION": "required"})
            try:
                integration_rc = integration_proc.wait()
            except KeyboardInterrupt:  # it had the same SIGINT: let it tear its sandbox down and end
                integration_rc = integration_proc.wait()
            if unit_proc.poll() is None:
                print("make test: waiting for the unit tier", flush=True)
            unit_rc = unit_proc.wait()
        finally:
            if unit_proc.poll() is None:
                unit_proc.terminate()
                unit_proc.wait(60)
        print("make test: the unit tier's output:", flush=True)
        log.seek(0)
        shutil.copyfileobj(log, sys.stdout)
    print(f"make test: unit tier exited {unit_rc}, integration tier exited {integration_rc}", flush=True)
    return 0 if unit_rc == 0 and integration_rc == 0 else 1


def main() -> int:
    return run(unit_command(), integration_command(), dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
