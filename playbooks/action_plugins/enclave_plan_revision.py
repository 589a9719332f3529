"""Record the revision the nodes were moved to in the plan beside the inventory (the last play of roll.yml).

Runs on the controller: the plan file is the controller's, and writing it here (not in the CLI) means a plain
`ansible-playbook playbooks/update.yml` leaves the same state as `enclave update`, so a later site.yml keeps the
nodes where the update put them. The write is enclave.plan.planfile's own (atomic, only when the content changes,
the same format `enclave plan` writes); the revision is checked by enclave.revision's rule first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        try:
            from enclave.errors import UsageError
            from enclave.plan import planfile
            from enclave.revision import check_revision
        except ImportError as exc:  # plain ansible-playbook from a Python without the kit
            return {**result, "failed": True, "msg": f"enclave_plan_revision needs the enclave package in Ansible's "
                    f"Python (run ansible-playbook from the kit's venv): {exc}"}
        args = self._task.args
        inventory_dir = Path(str(args.get("inventory_dir") or ""))
        try:
            revision = check_revision(args.get("revision"), "update_revision")
        except UsageError as exc:
            return {**result, "failed": True, "msg": str(exc)}
        plan = planfile.read(inventory_dir) if inventory_dir.is_dir() else None
        if plan is None:
            return {**result, "failed": True, "msg": f"no plan at {planfile.plan_path(inventory_dir)}: run "
                    "`enclave plan -i INVENTORY` (the rolling play needs the plan the nodes were deployed with)"}
        path = planfile.plan_path(inventory_dir)
        before = plan.get("revision")
        result.update(path=str(path), revision=revision, previous=before, changed=before != revision)
        if before != revision and not self._task.check_mode:
            planfile.write(inventory_dir, {**plan, "revision": revision})
        return result
