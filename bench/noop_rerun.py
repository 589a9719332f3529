#!/usr/bin/env python3
"""Cost of a no-op rerun of site.yml against a floor measured in the same run.

The baseline has the same plays on the same host patterns as the rerun, each with as many trivial tasks
(ansible.builtin.ping) as that play executed (tasks skipped everywhere do not count), run against the same
sandbox hosts with the same Ansible settings. The ratio says how much a converged deploy
costs beyond the bare minimum of touching every host that many times. Target: <= 1.5.

    python bench/noop_rerun.py [--rounds 5] [--sandbox bench] [--keep]
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


def executed_tasks(events: list[dict]) -> list[tuple[str, int]]:
    """Per play, in order: its host pattern and the number of tasks that ran on at least one host."""
    plays: list[tuple[str, set[str]]] = []
    for event in sorted(events, key=lambda e: e.get("counter", 0)):
        data = event.get("event_data") or {}
        if event.get("event") == "playbook_on_play_start":
            plays.append((data.get("play_pattern") or "all", set()))
        elif event.get("event") in ("runner_on_ok", "runner_on_failed") and plays:
            plays[-1][1].add(data.get("task_uuid"))
    return [(pattern, len(tasks)) for pattern, tasks in plays]


def timed(request: PlaybookRequest) -> tuple[float, list[dict], int]:
    events: list[dict] = []
    started = time.perf_counter()
    result = run_playbook(request, on_event=lambda event, _: events.append(event))
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        sys.exit(f"{request.playbook} failed (run {result.run_dir}); see `enclave logs`")
    return seconds, events, result.progress.changed_total


def baseline_playbook(directory: Path, plays: list[tuple[str, int]]) -> Path:
    text = "---\n"
    for number, (pattern, tasks) in enumerate(plays):
        body = "".join(f"    - name: Trivial task {number}.{i}\n      ansible.builtin.ping:\n" for i in range(tasks))
        text += (f"- name: Baseline play {number}\n  hosts: {pattern}\n  gather_facts: false\n  become: true\n"
                 f"  tasks:\n{body}")
    path = directory / "baseline.yml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
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
                plays = executed_tasks(events)
                base, _, _ = timed(PlaybookRequest(str(baseline_playbook(Path(tmp), plays)), inventory))
                reruns.append(rerun)
                baselines.append(base)
                shape = " + ".join(f"{n} on {p}" for p, n in plays)
                print(f"round {round_no}: no-op rerun {rerun:.1f} s, baseline ({shape} pings) {base:.1f} s, "
                      f"ratio {rerun / base:.2f}")
        ratio = statistics.median(r / b for r, b in zip(reruns, baselines, strict=True))
        # Noise on a shared 2-core machine only ever adds time, so the fastest of each is the steadier estimate.
        floor_ratio = min(reruns) / min(baselines)
        print(f"noop_rerun ratio: median of {args.rounds} rounds {ratio:.2f}, fastest/fastest {floor_ratio:.2f} "
              f"(rerun {min(reruns):.1f} s, baseline {min(baselines):.1f} s; target <= 1.5)")
    finally:
        if not existed and not args.keep:
            sandbox.down()


if __name__ == "__main__":
    main()
