#!/usr/bin/env python3
"""How long an engine restart on a sandbox node takes to answer /health again, idle and while the other node serves.

On one node: `systemctl restart enclave-engine` (the start job itself waits for /health: ExecStartPost), then one
more /health probe from the node; the time is from the restart command to that 200. Each restart is timed once
with the sandbox idle and once while two clients send small completions through the gateway (the gateway's address
only; the other node answers them while this one restarts). Printed: each time, the engine's own compile lines from
that start (vLLM logs whether it compiled or loaded its graphs from the cache), and under load / idle as a ratio.

    python bench/engine_restart.py --inventory ~/.local/state/enclave/sandbox/NAME/inventory/hosts.yml \
        [--node node1] [--rounds 1]

Needs a deployed sandbox (`enclave deploy -i INVENTORY`); it changes nothing but the engine's uptime.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.nethelpers import Gateway, host_address, served_model  # noqa: E402
from tests.integration.test_update import Load  # noqa: E402

UNIT = "enclave-engine.service"
PORT = 8000
# vLLM's own report of its compile step: "Compiling a graph ... takes", "Directly load the compiled graph(s) ...",
# "torch.compile takes ... in total", and the engine's whole start ("init engine ... took").
COMPILE_LINES = r"torch.compile takes|Directly load|Compiling a graph|init engine|Cache the graph"


def ssh_argv(inventory: Path, host: str, script: str) -> list[str]:
    data = yaml.safe_load(inventory.read_text())["all"]
    return ["ssh", "-i", data["vars"]["ansible_ssh_private_key_file"], *data["vars"]["ansible_ssh_common_args"].split(),
            f"root@{host_address(inventory, host)}", script]


def restart(inventory: Path, node: str) -> tuple[float, list[str]]:
    """Seconds from `systemctl restart` to /health 200 on `node`, and the engine's compile lines of that start."""
    url = f"http://{host_address(inventory, node)}:{PORT}/health"
    script = (f"since=$(date '+%Y-%m-%d %H:%M:%S'); s=$(date +%s.%N); systemctl restart {UNIT} || exit 3; "
              f"until curl -fsS -o /dev/null --max-time 2 {shlex.quote(url)}; do sleep 0.5; done; "
              f"e=$(date +%s.%N); echo \"elapsed $s $e\"; "
              f"journalctl -u {UNIT} --since \"$since\" --no-pager -o cat "
              f"| grep -E {shlex.quote(COMPILE_LINES)} || true")
    proc = subprocess.run(ssh_argv(inventory, node, script), capture_output=True, text=True, timeout=1200,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"restart on {node} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    lines = proc.stdout.splitlines()
    start, end = next(ln for ln in lines if ln.startswith("elapsed ")).split()[1:]
    return float(end) - float(start), [ln for ln in lines if not ln.startswith("elapsed ")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--node", default="node1")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    gateway = Gateway.of(args.inventory)
    model = served_model(gateway)
    idle, loaded = [], []
    for round_ in range(args.rounds):
        seconds, lines = restart(args.inventory, args.node)
        idle.append(seconds)
        print(f"round {round_ + 1} idle:      restart to /health 200 in {seconds:.1f} s", *lines, sep="\n  ")
        # The load starts first and runs through the whole restart; requests go to the gateway only.
        with Load(gateway, model, clients=2, limit=5000, deadline_s=1200) as load:
            time.sleep(5)
            seconds, lines = restart(args.inventory, args.node)
        report = load.report
        loaded.append(seconds)
        print(f"round {round_ + 1} under load: restart to /health 200 in {seconds:.1f} s "
              f"({report.requests} requests through the gateway, {len(report.failures)} failed, "
              f"ended by {report.ended_by})", *lines, *report.failures[:5], sep="\n  ")
    print(f"median idle {statistics.median(idle):.1f} s, under load {statistics.median(loaded):.1f} s, "
          f"under load / idle {statistics.median(loaded) / statistics.median(idle):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
