"""`enclave status --watch` stops on Ctrl-C wherever the SIGINT lands: between rounds included.

A child process runs the watch 50 times with a reader that answers at once, no pause between rounds and output
thrown away, and a timer SIGINTs it a few milliseconds after each run's first round: the main thread is then between
rounds on most tries. The old loop paused with threading.Event.wait(), which runs Python code while holding the
Event's lock, and the handler's set() took that lock again on the same thread: the child hung for good within the 50
runs.
"""

from __future__ import annotations

import subprocess
import sys

RUNS = 50
CHILD = f"""
import os, random, signal, threading, types
from enclave.cli import status

class Cluster:
    def as_dict(self):
        return {{}}

class Reader:
    # The timer starts at the first round, after _watch has put its handler in place: a SIGINT before that would
    # be Python's default KeyboardInterrupt, not the case under test.
    def __init__(self):
        self.timer = None

    def read(self, *, samples, cancel):
        if self.timer is None:
            self.timer = threading.Timer(random.uniform(0.005, 0.03), os.kill, (os.getpid(), signal.SIGINT))
            self.timer.start()
        return Cluster()

status.console = types.SimpleNamespace(print=lambda *a, **k: None, is_terminal=False)
for run in range({RUNS}):
    reader = Reader()
    status._watch(reader, 0.0, True)
    reader.timer.join()
print("stopped", run + 1)
"""


def test_ctrl_c_between_rounds_stops_the_watch() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        out = child.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        child.kill()
        out = child.communicate()[0]
        raise AssertionError(f"a watch was still running 60 s after its SIGINT:\n{out}") from None
    assert child.returncode == 0 and f"stopped {RUNS}" in out, f"rc {child.returncode}\n{out}"
