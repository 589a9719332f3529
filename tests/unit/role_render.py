"""Render role templates exactly as Ansible does: a local play over a throwaway inventory, with the roles' own
defaults and vars loaded, so filters, groups and hostvars behave as in a deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from enclave.ansible_env import strategy_env

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "playbooks" / "roles"


def render(tmp: Path, *, roles: list[str], groups: dict[str, dict[str, dict[str, Any]]],
           templates: dict[str, str], extra: dict[str, Any], hosts: str = "all",
           task_files: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """{host: {name: text}} for every template (name -> path under templates/) on every host of `hosts`, after
    running the roles' `task_files` (paths under playbooks/roles/) on those hosts."""
    out = tmp / "out"
    for members in groups.values():
        for host in members:
            (out / host).mkdir(parents=True, exist_ok=True)
    renders = [{"name": f"Render {name}", "ansible.builtin.template": {
        "src": str(REPO / "templates" / path), "dest": f"{out}/{{{{ inventory_hostname }}}}/{name}",
        "mode": "0600"}, "delegate_to": "localhost"} for name, path in templates.items()]
    proc = run_play(tmp, roles=roles, groups=groups, extra=extra, hosts=hosts, task_files=task_files,
                    tasks=renders)
    if proc.returncode != 0:
        raise RenderError(proc.stdout[-3000:] + proc.stderr[-2000:])
    return {host.name: {f.name: f.read_text() for f in host.iterdir()} for host in out.iterdir()
            if any(host.iterdir())}


def run_play(tmp: Path, *, roles: list[str], groups: dict[str, dict[str, dict[str, Any]]], extra: dict[str, Any],
             hosts: str = "all", task_files: tuple[str, ...] = (), tasks: list[dict[str, Any]] | None = None,
             args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """ansible-playbook (with `args`, e.g. -vvv) over a local play that runs the roles' `task_files` and then
    `tasks` on `hosts`; its output and exit status, whatever they are."""
    inventory = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                         "children": {g: {"hosts": h} for g, h in groups.items()}}}
    (tmp / "hosts.yml").write_text(yaml.safe_dump(inventory))
    var_files = [str(p) for role in ["enclave", *roles] for kind in ("defaults", "vars")
                 if (p := ROLES / role / kind / "main.yml").is_file()]
    play = [{
        "name": "Render", "hosts": hosts, "gather_facts": False, "vars_files": var_files,
        "tasks": [{"name": f"Run {path}", "ansible.builtin.include_tasks": str(ROLES / path)} for path in task_files]
        + (tasks or []),
    }]
    (tmp / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    # The play is not in playbooks/, so the paths the enclave role derives from playbook_dir are given.
    (tmp / "extra.json").write_text(json.dumps({"enclave_templates_dir": str(REPO / "templates"),
                                                "enclave_hosttools_src": str(ROLES / "enclave" / "files" / "hosttools"),
                                                **extra}))
    # An empty configuration: the checkout's ansible.cfg would bring its fact cache (other runs' hosts).
    (tmp / "ansible.cfg").write_text("[defaults]\n")
    # The strategy is the product's (mitogen's, unless ANSIBLE_STRATEGY says otherwise): what a deploy runs.
    env = {**os.environ, **strategy_env(), "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
           "ANSIBLE_FILTER_PLUGINS": str(REPO / "playbooks" / "filter_plugins"),
           "ANSIBLE_LIBRARY": str(REPO / "playbooks" / "library"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_LOCALHOST_WARNING": "False",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False", **(env or {})}
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(tmp / "hosts.yml"),
                           str(tmp / "play.yml"), "-e", f"@{tmp / 'extra.json'}", *args],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=300, check=False)


class RenderError(Exception):
    """Ansible refused to render: its output says why."""
