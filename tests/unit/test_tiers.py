"""make test's runner (tests/tiers.py) with stand-in tiers: both run at once, both always run, the exit status says
whether either failed, and the unit tier's output comes after the integration tier's, whole."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import tiers


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def run(tmp_path: Path, capfd: pytest.CaptureFixture[str], unit: str, integration: str) -> tuple[int, str]:
    rc = tiers.run(sh(unit), sh(integration), {"PATH": "/usr/bin:/bin", "MARK": str(tmp_path / "mark")})
    return rc, capfd.readouterr().out


def test_the_tiers_run_at_the_same_time_and_the_unit_output_follows(tmp_path: Path,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    # The integration stand-in passes only if the unit stand-in has started meanwhile (bounded: 20 s).
    mark = tmp_path / "mark"
    unit = f"echo unit-line-1; touch {mark}; echo unit-line-2"
    integration = ("i=0; while [ ! -e \"$MARK\" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; "
                   "echo integration-line; test -e \"$MARK\" && test \"$ENCLAVE_INTEGRATION\" = required")
    rc, out = run(tmp_path, capfd, unit, integration)
    assert rc == 0, out
    lines = out.splitlines()
    assert lines.index("integration-line") < lines.index("make test: the unit tier's output:") \
        < lines.index("unit-line-1") < lines.index("unit-line-2"), out
    assert out.rstrip().endswith("make test: unit tier exited 0, integration tier exited 0"), out


@pytest.mark.parametrize(("unit", "integration", "said"), [
    ("exit 3", "true", "unit tier exited 3, integration tier exited 0"),
    ("true", "exit 5", "unit tier exited 0, integration tier exited 5"),
    ("exit 1", "exit 1", "unit tier exited 1, integration tier exited 1"),
])
def test_either_tier_failing_fails_make_test_after_both_ran(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                             unit: str, integration: str, said: str) -> None:
    rc, out = run(tmp_path, capfd, f"echo unit-ran; {unit}", f"echo integration-ran; {integration}")
    assert rc == 1 and said in out, out
    assert "unit-ran" in out and "integration-ran" in out


def test_the_unit_tier_runs_niced_on_every_core_and_the_integration_tier_serially() -> None:
    assert tiers.unit_command()[:3] == ["nice", "-n", "10"]
    assert tiers.unit_command()[3:] == [str(Path(sys.executable).parent / "pytest"), "-n", "auto", "--dist",
                                        "loadfile", "tests/unit"]
    assert tiers.integration_command() == [str(Path(sys.executable).parent / "pytest"), "tests/integration"]
    assert "-n" not in tiers.integration_command()


def test_make_test_runs_this_runner() -> None:
    makefile = (Path(tiers.__file__).parents[1] / "Makefile").read_text()
    recipe = makefile[makefile.index("\ntest:"):].split("\n\n", 1)[0]
    assert "$(BIN)/python -m tests.tiers" in recipe, recipe
