"""Every host tool the tests, the sandbox and the controller run comes from a package `make test` installs.

The tools are derived from the code itself (argv literals handed to subprocess, `shutil.which` look-ups, commands
the roles run on the controller), so a new tool cannot slip in unmapped; the map's packages must all be in the
Makefile's HOST_PACKAGES, the one list `make host-packages` installs on a fresh machine.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.host_tools import FILE_PACKAGES, HOSTTOOLS_DIR, ON_HOST_ONLY, TOOL_PACKAGES, VENV_TOOLS

REPO = Path(__file__).resolve().parents[2]
PYTHON_TREES = ("src", "tests", "bench")
RUN_CALLS = frozenset({"run", "Popen", "check_output", "check_call", "call"})
# A name that looks like a command: a plain program name, not a path, a flag or a Python file (a test module handed
# to the shipped checks' runner).
COMMAND = re.compile(r"(?![^\s]*\.py$)[a-z][a-z0-9.+_-]*")
# Shell words that are not programs to install.
SHELL_BUILTINS = frozenset({"umask", "cd", "test", "set", "exec", "exit", "true", "false", "export", "[", "chmod",
                            "mv", "rm", "mkdir", "cat", "cp"})


def makefile_host_packages() -> set[str]:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^HOST_PACKAGES\s*:?=(.*)$", text, re.M)
    assert match, "the Makefile defines no HOST_PACKAGES"
    return set(match.group(1).split())


def _package_and_dependencies(package: str) -> set[str]:
    """A package and what it depends on (gnupg ships gpg through its dependency on the gpg package)."""
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}", package],
                          capture_output=True, text=True, timeout=30, check=False)
    names = {re.split(r"[\s:(]", alt.strip())[0] for dep in proc.stdout.split(",") for alt in dep.split("|")}
    return {package} | (names - {""})


def _argv_head(node: ast.AST) -> str | None:
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        head = node.elts[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str) and COMMAND.fullmatch(head.value):
            return head.value
    return None


def python_tools() -> Iterator[tuple[str, str]]:
    """(tool, where) for every program the Python code starts or looks up by a literal name."""
    for tree in PYTHON_TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            where = path.relative_to(REPO)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                tool = None
                if isinstance(node, ast.Call) and node.args:
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                    first = node.args[0]
                    if name == "which" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                        tool = first.value
                    elif name in RUN_CALLS:
                        tool = _argv_head(first)
                elif isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and ("argv" in t.id or "cmd" in t.id) for t in node.targets):
                    # An argv built ahead of its call; its head may also be a subcommand of a tool under test
                    # (["manifest", "build", ...]), so only a program that exists somewhere counts.
                    head = _argv_head(node.value)
                    tool = head if head and (head in TOOL_PACKAGES or shutil.which(head)) else None
                if tool:
                    yield tool, f"{where}:{node.lineno}"


def _shell_commands(line: str) -> Iterator[str]:
    """The program of each simple command in a shell line (after &&, ||, ;, |)."""
    for segment in re.split(r"&&|\|\||;|\|", re.sub(r"\{\{.*?\}\}", "X", line)):
        words = shlex.split(segment, comments=True) if segment.strip() else []
        while words and "=" in words[0]:
            words.pop(0)
        if words and COMMAND.fullmatch(words[0]) and words[0] not in SHELL_BUILTINS:
            yield words[0]


def _tasks(node: object) -> Iterator[dict]:
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            yield from _tasks(node.get(key))


def controller_tools() -> Iterator[tuple[str, str]]:
    """(tool, where) for every program a role or playbook runs on the controller (delegate_to: localhost)."""
    for path in sorted((REPO / "playbooks").rglob("*.yml")):
        where = path.relative_to(REPO)
        for task in _tasks(yaml.safe_load(path.read_text())):
            if task.get("delegate_to") != "localhost":
                continue
            for module in ("ansible.builtin.command", "ansible.builtin.shell", "command", "shell"):
                args = task.get(module)
                if args is None:
                    continue
                argv = args.get("argv") if isinstance(args, dict) else None
                if isinstance(argv, list):
                    yield str(argv[0]), f"{where}: {task.get('name')}"
                    continue
                if isinstance(argv, str):  # an argv list built by a Jinja expression: its literal head
                    head = re.match(r"\{\{\s*\[\s*'([^']+)'", argv)
                    if head:
                        yield head.group(1), f"{where}: {task.get('name')}"
                    continue
                line = args.get("cmd", "") if isinstance(args, dict) else str(args)
                for tool in _shell_commands(line):
                    yield tool, f"{where}: {task.get('name')}"


@functools.cache
def used_tools() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for tool, where in [*python_tools(), *controller_tools()]:
        found.setdefault(tool, []).append(where)
    return found


def test_the_scan_sees_the_tools_we_know_the_code_runs() -> None:
    # Guards the derivation itself: if the scan found nothing, the checks below would pass vacuously.
    assert {"nginx", "nft", "openssl", "systemd-nspawn", "debootstrap", "chronyd", "ssh", "rsync", "tc"} \
        <= set(used_tools())


def unmapped_tools(found: dict[str, list[str]]) -> dict[str, list[str]]:
    """The tools with no package here: neither mapped, nor from the venv, nor run only by the on-host tools."""
    return {tool: where for tool, where in found.items()
            if tool not in TOOL_PACKAGES and tool not in VENV_TOOLS
            and not (tool in ON_HOST_ONLY and all(w.startswith(HOSTTOOLS_DIR) for w in where))}


def test_a_host_only_tool_run_from_the_controller_still_needs_a_package() -> None:
    host_only = next(iter(ON_HOST_ONLY))
    assert unmapped_tools({host_only: [f"{HOSTTOOLS_DIR}engine_status.py:72"]}) == {}
    assert unmapped_tools({host_only: [f"{HOSTTOOLS_DIR}engine_status.py:72", "src/enclave/status/gpus.py:9"]}) \
        == {host_only: [f"{HOSTTOOLS_DIR}engine_status.py:72", "src/enclave/status/gpus.py:9"]}


def test_every_tool_the_code_runs_is_mapped_to_a_package() -> None:
    unmapped = unmapped_tools(used_tools())
    assert not unmapped, (
        "tools run by the code with no Debian package in tests/host_tools.py TOOL_PACKAGES "
        f"(add them there and their package to the Makefile's HOST_PACKAGES): {unmapped}")


def test_every_mapped_package_is_in_the_makefile_list() -> None:
    listed = makefile_host_packages()
    missing = {tool: pkg for tool, pkg in TOOL_PACKAGES.items() if pkg not in listed}
    assert not missing, (f"the Makefile's HOST_PACKAGES lacks the package of {missing}: a fresh machine would not "
                         "have these tools when the tests run them")


@pytest.mark.parametrize("tool", sorted(TOOL_PACKAGES))
def test_the_map_names_the_package_that_really_ships_the_tool(tool: str) -> None:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: install the Debian package {TOOL_PACKAGES[tool]} (make host-packages)")
    # With merged /usr, dpkg may have recorded the file under /bin or /sbin: ask for both spellings.
    real = Path(path).resolve()
    candidates = {str(real), str(Path(path))} | {re.sub(r"^/usr(/s?bin/)", r"\1", p)
                                                 for p in (str(real), str(path))}
    owners = set()
    for candidate in sorted(candidates):
        proc = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, timeout=30,
                              check=False)
        owners |= {line.split(":")[0].strip() for line in proc.stdout.splitlines()}
    owners = {p.strip() for o in owners for p in o.split(",")}
    assert owners & _package_and_dependencies(TOOL_PACKAGES[tool]), (
        f"{tool} ({path}) is shipped by {owners or 'no package'}, which {TOOL_PACKAGES[tool]} (named in "
        "tests/host_tools.py) neither is nor depends on")


def test_files_the_tests_load_come_from_host_packages() -> None:
    """The njs module the gateway's nginx loads (gateway role's gateway_njs_module, installed by its packages) is one
    the unit tests load too: its package is in HOST_PACKAGES and in the role's own list."""
    role = REPO / "playbooks" / "roles" / "gateway"
    module = yaml.safe_load((role / "vars" / "main.yml").read_text())["gateway_njs_module"]
    assert module in FILE_PACKAGES, f"{module} is not mapped to a package in tests/host_tools.py"
    assert set(FILE_PACKAGES.values()) <= makefile_host_packages()
    assert FILE_PACKAGES[module] in yaml.safe_load((role / "defaults" / "main.yml").read_text())["gateway_packages"]
