"""`make test`: the unit tier runs beside the integration tier instead of before it.

The integration tier spends much of its time waiting on sandbox hosts (SSH round trips, engine starts, weights
moving over veths) with a core to spare; the unit tier (about 8 minutes alone) fills that time. Its output goes
to a log file while it runs and is printed whole after the integration tier's, so neither interleaves with the
other. The exit status is the integration tier's when that failed, else the unit tier's: any failure, or
pytest's "no tests collected" (5), fails the run.

    ENCLAVE_INTEGRATION=required python -m tests.both_tiers     # what `make test` runs
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

PYTEST = [sys.executable, "-m", "pytest"]
UNIT = [*PYTEST, "tests/unit", "-p", "no:cacheprovider"]  # one pytest cache writer: the integration tier
INTEGRATION = [*PYTEST, "tests/integration"]
LOG = Path(os.environ.get("ENCLAVE_UNIT_LOG") or Path(tempfile.gettempdir()) / "enclave-unit-tier.log")


def run_beside(background: Sequence[str], foreground: Sequence[str], log: Path) -> int:
    """Run `background` with its output to `log` while `foreground` runs on this terminal; then print the log and
    return the first nonzero status (the foreground's first). A SIGTERM to this process reaches both; a Ctrl-C,
    which the terminal already gave the foreground, is passed on to the background, whose session is its own."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        side = subprocess.Popen(list(background), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    print(f"{_name(background)}: running beside, output in {log}", flush=True)
    fore = subprocess.Popen(list(foreground))

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        # Not the Ctrl-C again to the foreground: pytest then cuts its sandbox teardown short.
        if side.poll() is None:
            os.killpg(side.pid, signum)
        if signum != signal.SIGINT and fore.poll() is None:
            fore.send_signal(signum)

    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        fore_status, side_status = _status(fore.wait()), _status(side.wait())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"\n{'=' * 20} {_name(background)}, which ran beside: exit {side_status} {'=' * 20}", flush=True)
    sys.stdout.write(log.read_text(errors="replace"))
    print(f"tiers: {_name(foreground)} exited {fore_status}; {_name(background)} exited {side_status}", flush=True)
    return fore_status or side_status


def _status(returncode: int) -> int:
    """A tier killed by a signal reports as a shell does (128 + the signal), not as Popen's negative number."""
    return 128 - returncode if returncode < 0 else returncode


def _name(argv: Sequence[str]) -> str:
    """`pytest tests/unit` rather than the interpreter's whole path."""
    if list(argv[:3]) != PYTEST:
        return " ".join(argv)
    return " ".join(["pytest", *(a for a in argv[3:] if not a.startswith("-") and a != "no:cacheprovider")])


def main() -> int:
    return run_beside(UNIT, INTEGRATION, LOG)


if __name__ == "__main__":
    sys.exit(main())
