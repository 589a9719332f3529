#!/usr/bin/env python3
"""Cost of a no-op rerun of site.yml against a floor measured in the same run.

The baseline is a playbook of as many trivial tasks (ansible.builtin.ping) as the rerun executed on hosts,
against the same sandbox hosts with the same Ansible settings. The ratio says how much a converged deploy
costs beyond the bare minimum of touching every host that many times. Target: <= 1.5.

    python bench/noop_rerun.py [--rounds 3] [--sandbox bench] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from enclave.runner import PlaybookRequest, run_playbook
from enclave.sandbox import Sandbox

HOSTS = "enclave_nodes:enclave_gateway:enclave_staging"


def executed_tasks(events: list[dict]) -> int:
    """Tasks that ran a module on at least one host (skipped and meta tasks excluded)."""
    return len({e["event_data"].get("task_uuid") for e in events
                if e.get("event") in ("runner_on_ok", "runner_on_failed")})


def timed(request: PlaybookRequest) -> tuple[float, list[dict], int]:
    events: list[dict] = []
    started = time.perf_counter()
    result = run_playbook(request, on_event=lambda event, _: events.append(event))
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        sys.exit(f"{request.playbook} failed (run {result.run_dir}); see `enclave logs`")
    return seconds, events, result.progress.changed_total


def baseline_playbook(directory: Path, tasks: int) -> Path:
    body = "\n".join(f"    - name: Trivial task {i}\n      ansible.builtin.ping:\n" for i in range(tasks))
    path = directory / "baseline.yml"
    path.write_text(f"---\n- name: Baseline\n  hosts: {HOSTS}\n  gather_facts: false\n  become: true\n"
                    f"  tasks:\n{body}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sandbox", default="bench")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    args = parser.parse_args()

    sandbox = Sandbox(args.sandbox)
    existed = sandbox.status().exists
    status = sandbox.up(report=lambda m: print(f"sandbox: {m}", file=sys.stderr))
    inventory = status.inventory
    assert inventory is not None
    try:
        first, _, changed = timed(PlaybookRequest("site.yml", inventory))
        print(f"converging deploy: {first:.1f} s, {changed} change(s)")
        reruns, baselines = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for round_no in range(1, args.rounds + 1):
                rerun, events, changed = timed(PlaybookRequest("site.yml", inventory))
                if changed:
                    sys.exit(f"round {round_no}: the rerun changed {changed} thing(s); it must change nothing")
                tasks = executed_tasks(events)
                base, _, _ = timed(PlaybookRequest(str(baseline_playbook(Path(tmp), tasks)), inventory))
                reruns.append(rerun)
                baselines.append(base)
                print(f"round {round_no}: no-op rerun {rerun:.1f} s ({tasks} executed tasks), "
                      f"baseline {tasks} x ping {base:.1f} s, ratio {rerun / base:.2f}")
        ratio = statistics.median(r / b for r, b in zip(reruns, baselines, strict=True))
        print(f"noop_rerun ratio (median of {args.rounds}): {ratio:.2f}  (target <= 1.5)")
    finally:
        if not existed and not args.keep:
            sandbox.down()


if __name__ == "__main__":
    main()
