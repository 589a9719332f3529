"""The budget guard (tests/module_times.py) in a real pytest run of a generated test directory, wired in the way
tests/conftest.py wires it; durations are fixed by a hook so the expected sums are exact, not timed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every phase of every test reports a fixed duration: setup 1 s, call 2 s, teardown 0.25 s (3.25 s a test).
FIXED_DURATIONS = '''
import pytest

from tests import conftest as enclave_conftest

pytest_configure = enclave_conftest.pytest_configure

SECONDS = {"setup": 1.0, "call": 2.0, "teardown": 0.25}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.duration = SECONDS[report.when]
'''


def run_pytest(tmp_path: Path, files: dict[str, str], *args: str,
               integration: str = "") -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
           "ENCLAVE_INTEGRATION": integration}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args, str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False)


def summary(stdout: str) -> list[str]:
    head = re.search(r"^=+ time per test module \(setup \+ call \+ teardown\) =+$", stdout, re.MULTILINE)
    assert head, f"no per-module summary in:\n{stdout}"
    return stdout[head.end():].strip().splitlines()


def test_summary_sums_every_phase_per_module_largest_first(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, {
        "conftest.py": FIXED_DURATIONS,
        "test_small.py": "def test_one():\n    pass\n",
        "test_big.py": "import pytest\n\n@pytest.mark.parametrize('n', range(3))\ndef test_many(n):\n    pass\n"
                       "\ndef test_fails():\n    assert False\n",
    }, "--durations=25")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the failing test: the summary comes anyway
    assert proc.stdout.index("slowest 25 durations") < proc.stdout.index("time per test module")
    lines = summary(proc.stdout)
    assert re.fullmatch(r"\s*13\.00s\s+80\.0%\s+test_big\.py \(4 tests\)", lines[0]), lines
    assert re.fullmatch(r"\s*3\.25s\s+20\.0%\s+test_small\.py \(1 test\)", lines[1]), lines
    assert re.match(r"\s*16\.25s 100\.0%\s+total of 2 modules \(session wall time \d+\.\d\ds\)$", lines[2]), lines


def test_no_summary_when_no_test_ran(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, {"conftest.py": FIXED_DURATIONS, "test_none.py": "X = 1\n"})
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "time per test module" not in proc.stdout


def test_required_turns_a_skip_into_a_failure_with_its_reason(tmp_path: Path) -> None:
    files = {"test_needs.py": "from tests.required import skip_or_fail\n\n"
                              "def test_needs_a_tool():\n    skip_or_fail('needs the frobnicator')\n"}
    failed = run_pytest(tmp_path, files, "-rA", integration="required")
    skipped = run_pytest(tmp_path, files, "-rA")
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout
    assert "needs the frobnicator (ENCLAVE_INTEGRATION=required: this test must run)" in failed.stdout
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert "SKIPPED" in skipped.stdout and "needs the frobnicator" in skipped.stdout


def test_a_directory_with_its_own_conftest_runs(tmp_path: Path) -> None:
    # As tests/integration has: pytest then asks for a subset of the plugins, which must hash (a plain dataclass
    # plugin made every test of `make test` an INTERNALERROR before any ran).
    (tmp_path / "sub").mkdir()
    proc = run_pytest(tmp_path, {"conftest.py": FIXED_DURATIONS, "sub/conftest.py": "X = 1\n",
                                 "sub/test_inner.py": "def test_inner():\n    pass\n",
                                 "test_outer.py": "def test_outer():\n    pass\n"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {re.sub(r"\s+", " ", line).strip() for line in summary(proc.stdout)[:2]} == {
        "3.25s 50.0% sub/test_inner.py (1 test)", "3.25s 50.0% test_outer.py (1 test)"}
