"""The shape docs/architecture.md promises, read from the source's import statements (AST, not text search):
planning is pure (plan/ never runs Ansible, a process or the sandbox), and each CLI verb stands alone (a verb
module imports the CLI's shared helpers, never another verb)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "enclave"
# What planning must not import: the runner (Ansible), the sandbox, and process spawning of its own.
PLAN_FORBIDDEN = ("enclave.runner", "enclave.sandbox", "subprocess")
# Modules of enclave/cli that are shared by the verbs rather than verbs themselves (`__init__` assembles the verbs).
CLI_HELPERS = {"common", "progress", "results"}


def imported(path: Path, package: str) -> list[tuple[int, list[str]]]:
    """(line, modules) for every import statement in `path`, anywhere in it (inside functions too), relative ones
    resolved; `from a import b` names both a and a.b (b may be a module), in that order."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, [base, *(f"{base}.{alias.name}" for alias in node.names)]))
    return found


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def plan_violations(src: Path = SRC) -> list[str]:
    problems = []
    for path in sorted((src / "plan").rglob("*.py")):
        for line, modules in imported(path, "enclave.plan"):
            bad = [m for m in modules if any(under(m, prefix) for prefix in PLAN_FORBIDDEN)]
            if bad:
                problems.append(f"{path.relative_to(src.parent)}:{line} imports {bad[0]}")
    return problems


def cli_violations(src: Path = SRC) -> list[str]:
    problems = []
    for path in sorted((src / "cli").glob("*.py")):
        if path.stem == "__init__" or path.stem in CLI_HELPERS:
            continue
        for line, modules in imported(path, "enclave.cli"):
            # enclave.cli.X (a module of the package) names the module X, whatever is imported from it.
            names = [m.split(".")[2] for m in modules if under(m, "enclave.cli") and m != "enclave.cli"]
            verbs = [n for n in names if n != path.stem and n not in CLI_HELPERS]
            if verbs:
                problems.append(f"{path.relative_to(src.parent)}:{line} imports the verb module enclave.cli.{verbs[0]}")
    return problems


def test_planning_imports_no_runner_sandbox_or_subprocess() -> None:
    assert plan_violations() == []


def test_no_cli_verb_imports_another_verb() -> None:
    assert cli_violations() == []


def test_the_helpers_named_exist() -> None:
    # A helper name that no longer exists would silently widen what a verb may import.
    for name in CLI_HELPERS:
        assert (SRC / "cli" / f"{name}.py").is_file(), name


@pytest.mark.parametrize(("plan_code", "cli_code", "expected"), [
    ("import subprocess\n", "", ["subprocess"]),
    ("def f():\n    from enclave.runner import run_playbook\n", "", ["enclave.runner"]),
    ("from ..sandbox import Sandbox\n", "", ["enclave.sandbox"]),
    ("from enclave.runner_notes import x\nimport enclave.plan.facts\n", "", []),
    ("", "from enclave.cli.weights import collect_status\n", ["enclave.cli.weights"]),
    ("", "from enclave.cli import verify\n", ["enclave.cli.verify"]),
    ("", "from . import deploy\n", ["enclave.cli.deploy"]),
    ("", "from enclave.cli.common import console\nfrom enclave.cli.progress import run_with_progress\n", []),
])
def test_the_rules_catch_what_they_name(tmp_path: Path, plan_code: str, cli_code: str, expected: list[str]) -> None:
    (tmp_path / "plan").mkdir()
    (tmp_path / "cli").mkdir()
    (tmp_path / "plan" / "mod.py").write_text(plan_code)
    (tmp_path / "cli" / "verb.py").write_text(cli_code)
    (tmp_path / "cli" / "common.py").write_text("import subprocess\n")  # helpers and others' rules do not apply
    found = plan_violations(tmp_path) + cli_violations(tmp_path)
    assert [f.rsplit(" ", 1)[1] for f in found] == expected
