"""Every Jinja expression in a `shell:` or a `command:` string goes through `| quote`.

An unquoted expression in a command line is code the inventory writes: a host name `x;touch /tmp/pwned` once ran
on the controller from the gateway role's internal CA tasks. Argv lists (`argv:`, or `command:` given a list) hand
each word to the program as is and need no quoting; this walks every task and handler of every role and playbook.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
_MODULES = {f"{prefix}{name}" for prefix in ("", "ansible.builtin.") for name in ("shell", "command", "raw")}
_NESTED = {"block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"}
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_QUOTED = re.compile(r"\|\s*(ansible\.builtin\.)?quote\s*$")


def command_tasks(node: Any) -> Iterator[tuple[str, Any]]:
    """(task name, what the module was given) for every shell/command/raw task in a play or task list, blocks
    and handlers included. Only task keys count: `shell:` of the user module is a login shell, not a command."""
    for item in node if isinstance(node, list) else []:
        if not isinstance(item, dict):
            continue
        for key in _MODULES & item.keys():
            yield str(item.get("name", "?")), item[key]
        for nested in _NESTED & item.keys():
            yield from command_tasks(item[nested])


def command_line(given: Any) -> str | None:
    """The command as one string, or None for an argv list."""
    line = given.get("cmd") if isinstance(given, dict) else given
    return line if isinstance(line, str) else None


def unquoted(line: str) -> list[str]:
    return [expr.strip() for expr in _EXPRESSION.findall(line) if not _QUOTED.search(expr.strip())]


def test_unquoted_finds_what_it_should() -> None:
    assert unquoted("openssl x -out {{ inventory_hostname }}.crt") == ["inventory_hostname"]
    assert unquoted("a {{ x | quote }} b {{ y|ansible.builtin.quote }}") == []
    assert unquoted("a {{ x | quote | upper }}") == ["x | quote | upper"]
    tasks = [{"block": [{"name": "t", "ansible.builtin.shell": {"cmd": "ls {{ d }}"}},
                        {"name": "a", "ansible.builtin.command": {"argv": ["ls", "{{ d }}"]}},
                        {"name": "u", "ansible.builtin.user": {"shell": "{{ s }}"}}]}]
    assert [(name, command_line(given)) for name, given in command_tasks(tasks)] == [("t", "ls {{ d }}"), ("a", None)]


def test_every_command_line_quotes_its_expressions() -> None:
    files = sorted(PLAYBOOKS.rglob("*.yml"))
    assert len(files) > 40  # the walk found the roles
    tasks = [(path, name, given) for path in files for name, given in command_tasks(yaml.safe_load(path.read_text()))]
    assert len(tasks) > 20  # and their command tasks
    offenders = [f"{path.relative_to(PLAYBOOKS)}: task {name!r}: {expr}"
                 for path, name, given in tasks for expr in unquoted(command_line(given) or "")]
    assert not offenders, "unquoted in a command line (add `| quote`, or use argv):\n" + "\n".join(offenders)
