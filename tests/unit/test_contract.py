"""Every task and play name Python reads Ansible's results by (enclave.contract) exists in its playbook, as
`ansible-playbook --list-tasks` lists it (roles and imports expanded); and no module outside enclave.contract
spells one of them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from enclave import contract

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("enclave_nodes", "enclave_gateway", "enclave_staging")


def listed(playbook: str, tmp_path: Path) -> tuple[set[str], set[str]]:
    """(task names, play names) of `playbook` as Ansible lists them."""
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump({"all": {"children": {g: {"hosts": {f"{g}-1": None}} for g in GROUPS}}}))
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "--list-tasks", "-i", str(hosts),
                           f"playbooks/{playbook}"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plays = set(re.findall(r"^\s+play #\d+ \([^)]*\): (.+?)\tTAGS:", proc.stdout, re.M))
    tasks = {re.sub(r"^[\w.-]+ : ", "", t) for t in re.findall(r"^ {6}(.+?)\tTAGS:", proc.stdout, re.M)}
    return tasks, plays


@pytest.mark.parametrize("playbook", sorted({*contract.TASKS_IN, *contract.PLAYS_IN}))
def test_each_name_python_reads_is_in_its_playbook(playbook: str, tmp_path: Path) -> None:
    tasks, plays = listed(playbook, tmp_path)
    assert set(contract.TASKS_IN.get(playbook, ())) - tasks == set(), sorted(tasks)
    assert set(contract.PLAYS_IN.get(playbook, ())) - plays == set(), sorted(plays)


def test_every_name_has_one_definition() -> None:
    names = [*(n for ns in contract.TASKS_IN.values() for n in ns), *contract.BEFORE_DRAIN_PLAYS]
    spelled = {}
    for module in (REPO / "src" / "enclave").rglob("*.py"):
        if module.name == "contract.py":
            continue
        text = module.read_text()
        spelled.update({(str(module.relative_to(REPO)), n): True for n in names if f'"{n}"' in text})
    assert spelled == {}, sorted(spelled)
