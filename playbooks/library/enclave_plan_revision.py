#!/usr/bin/python
"""Documentation for the enclave_plan_revision action (playbooks/action_plugins/enclave_plan_revision.py does the
work on the controller; this file gives ansible-doc and ansible-lint its arguments)."""

DOCUMENTATION = r"""
module: enclave_plan_revision
short_description: Record the revision the nodes moved to in the plan beside the inventory
description:
  - Sets C(revision) in C(group_vars/all/enclave_plan.yml) beside the inventory, as C(enclave plan) writes it.
  - Runs on the controller; changed only when the recorded revision differs. Check mode reports without writing.
options:
  inventory_dir:
    description: The directory of the inventory (Ansible's C(inventory_dir)).
    type: path
    required: true
  revision:
    description: The revision every node now serves (a 40-hex commit id).
    type: str
    required: true
"""

if __name__ == "__main__":
    raise SystemExit("enclave_plan_revision is an action: it runs on the controller only")
