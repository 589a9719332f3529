"""Running playbooks through ansible-runner: requests in, events out, a result at the end. Never prints."""

from enclave.runner.driver import PlaybookRequest, RunResult, run_playbook
from enclave.runner.events import HostTally, RunProgress, TaskFailure

__all__ = ["HostTally", "PlaybookRequest", "RunProgress", "RunResult", "TaskFailure", "run_playbook"]
