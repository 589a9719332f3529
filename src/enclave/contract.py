"""The names Python finds Ansible's results by: the task and play names of the playbooks the CLI reads.

ansible-runner's events carry a task's (and play's) name, not an id, so a renamed task would silently stop feeding
a read (`enclave plan`, `status`, `weights status`, `rollback`, `usage`) or a decision (`update`'s "no node was
drained").
Every such name lives here, with the playbook that must hold it; tests/unit/test_contract.py lists each playbook's
tasks with `ansible-playbook --list-tasks` (roles and imports expanded, as Ansible runs them) and fails on a name
that is not there.
"""

from __future__ import annotations

# playbooks/facts.yml: the enclave_host_facts module's result (enclave.runner.reads.gather)
FACTS_TASK = "Read GPUs, drivers, memory, disk and addresses"
# playbooks/weights-status.yml and rollback-state.yml: `nodetool status` of a host (weights role, status.yml)
WEIGHTS_STATUS_TASK = "Report the weights of this host"
# playbooks/rollback-state.yml: the build a node runs and what it ran before its last move (update role, report.yml)
BUILD_TASK = "Report the engine build and the last move of this node"
# playbooks/status.yml: the engine's state on a node (engine role) and the gateway's rotation (gateway role)
NODE_STATUS_TASK = "Report the engine state of this host"
GATEWAY_STATUS_TASK = "Report the gateway's rotation"
# playbooks/usage.yml: per client and model, the requests and tokens of the gateway's access log (gateway role)
USAGE_TASK = "Report the gateway's usage"

# playbooks/update.yml (and roll.yml's first play): the plays that run before any node is drained, so an update that
# failed only there left every node serving as before.
BEFORE_DRAIN_PLAYS = ("Install the vLLM build on every node beside the running one",
                      "Stage the revision on the staging host",
                      "Place and verify the revision on every node, current unchanged",
                      "Check every node holds the revision")

# Which playbook must hold each task name (as `ansible-playbook --list-tasks` shows it).
TASKS_IN = {
    "facts.yml": (FACTS_TASK,),
    "weights-status.yml": (WEIGHTS_STATUS_TASK,),
    "rollback-state.yml": (WEIGHTS_STATUS_TASK, BUILD_TASK),
    "status.yml": (NODE_STATUS_TASK, GATEWAY_STATUS_TASK),
    "usage.yml": (USAGE_TASK,),
}
PLAYS_IN = {"update.yml": BEFORE_DRAIN_PLAYS}
