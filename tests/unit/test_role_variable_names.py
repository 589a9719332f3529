"""No task registers or set_facts a name that a role declares in defaults/ or vars/.

A registered result outranks a role default, so the setting is silently replaced by a result dict for the rest of
the play: `register: weights_activate` once turned the weights role's `weights_activate: true` flag into a dict,
`weights_activate | bool` into false, and skipped the "stop when the revision does not verify" task after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def declared() -> dict[str, str]:
    names = {}
    for role in sorted((PLAYBOOKS / "roles").iterdir()):
        for kind in ("defaults", "vars"):
            path = role / kind / "main.yml"
            if path.is_file():
                names.update(dict.fromkeys(yaml.safe_load(path.read_text()) or {}, f"{role.name}/{kind}/main.yml"))
    return names


def assigned(tasks: list[Any]) -> Iterator[tuple[str, str]]:
    """(variable, task name) for every register and set_fact key, blocks included."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for nested in ("block", "rescue", "always"):
            yield from assigned(task.get(nested) or [])
        if "register" in task:
            yield task["register"], task.get("name", "?")
        facts = task.get("ansible.builtin.set_fact") or task.get("set_fact")
        if isinstance(facts, dict):
            yield from ((key, task.get("name", "?")) for key in facts if key != "cacheable")


def task_lists(path: Path) -> list[Any]:
    data = yaml.safe_load(path.read_text()) or []
    tasks: list[Any] = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and "hosts" in item:
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                tasks += item.get(section) or []
        else:
            tasks.append(item)
    return tasks


def test_no_task_assigns_a_declared_role_variable() -> None:
    names = declared()
    files = sorted(PLAYBOOKS.glob("roles/*/tasks/*.yml")) + sorted(PLAYBOOKS.glob("roles/*/handlers/*.yml")) + \
        sorted(PLAYBOOKS.glob("*.yml"))
    assert len(files) > 20 and len(names) > 50  # the walk found the roles
    clashes = [f"{path.relative_to(PLAYBOOKS)}: task {task!r} assigns {name}, declared in {names[name]}"
               for path in files for name, task in assigned(task_lists(path)) if name in names]
    assert not clashes, "\n".join(clashes)


def test_the_walk_finds_a_clash() -> None:
    tasks = [{"name": "outer", "block": [{"name": "Verify", "ansible.builtin.command": "true",
                                          "register": "weights_activate"}]}]
    assert [name for name, _ in assigned(tasks) if name in declared()] == ["weights_activate"]
