"""Budget guard: at the end of a run, the time each test module cost (setup + call + teardown of its tests,
summed per file), largest first, with the session total, in the terminal summary after pytest's slowest 25.

A session-scoped fixture is paid by the first test that asks for it, so a module that brings the sandbox up or
runs the first deploy carries that cost: that is where the budget went, and the line says so.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from _pytest.terminal import TerminalReporter

NAME = "enclave-module-times"


@dataclass(eq=False)  # a registered plugin must hash (pluggy keeps plugins in sets)
class ModuleTimes:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    tests: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    started: float = field(default_factory=time.monotonic)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        module = report.nodeid.split("::", 1)[0]
        self.seconds[module] += report.duration
        self.tests[module].add(report.nodeid)

    def lines(self) -> list[str]:
        total = sum(self.seconds.values())
        rows = sorted(self.seconds.items(), key=lambda kv: (-kv[1], kv[0]))
        out = [f"{secs:9.2f}s {100 * secs / total if total else 0:5.1f}%  {module} ({_tests(len(self.tests[module]))})"
               for module, secs in rows]
        out.append(f"{total:9.2f}s 100.0%  total of {len(rows)} modules "
                   f"(session wall time {time.monotonic() - self.started:.2f}s)")
        return out

    @pytest.hookimpl(trylast=True)  # after pytest's own "slowest 25 durations"
    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        if not self.seconds:
            return
        terminalreporter.write_sep("=", "time per test module (setup + call + teardown)")
        for line in self.lines():
            terminalreporter.write_line(line)


def _tests(n: int) -> str:
    return f"{n} test" if n == 1 else f"{n} tests"


def install(config: pytest.Config) -> None:
    """Register once per session (tests/conftest.py calls this from pytest_configure)."""
    if not config.pluginmanager.has_plugin(NAME):
        config.pluginmanager.register(ModuleTimes(), NAME)
