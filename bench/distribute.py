#!/usr/bin/env python3
"""Placing one model on 1 node and on 3 nodes, and the naive every-node-pulls-from-staging, in the same run.

Every sandbox host's link is limited in both directions with `tc tbf` (--rate), so the scheme's shape shows, not this
machine's memory bandwidth: the physical floor is one copy's time, size / rate, whatever the node count, since each
node must receive every byte over its own link. Measured with the on-host tools the weights role runs:

- relay, 1 node:  staging -> node1 (transfer.py relay-send / relay-receive)
- relay, 3 nodes: staging -> node1 -> node2 -> node3, each forwarding while it writes
- naive, 3 nodes: node1, node2 and node3 each pull every file from staging's rsync seed at once

Target: t(relay, 3) / t(relay, 1) <= 1.3. The naive scheme should come out near 3x.

    python bench/distribute.py [--sandbox bench] [--mib 288] [--shards 6] [--rate 200mbit] [--keep]

The sandbox is made (3 nodes) and given the provision and weights phases; `--keep` leaves it for the next run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from enclave.runner import PlaybookRequest, run_playbook
from enclave.sandbox import Sandbox
from enclave.sandbox.spec import SandboxSpec

TOOL = "/opt/enclave/tools/hosttools/transfer.py"
SRC = "/srv/enclave/models/bench-source"  # inside the seed's rsync module
DEST = "/srv/enclave/bench-dest"
PORT = 7480  # the weights relay port: open between cluster hosts
RSYNC_URL = "rsync://{staging}:8730/enclave-models/"


class Hosts:
    def __init__(self, inventory: Path) -> None:
        data = yaml.safe_load(inventory.read_text())["all"]
        self.addr = {name: h["ansible_host"] for group in data["children"].values()
                     for name, h in (group.get("hosts") or {}).items()}
        self.ssh = ["ssh", "-i", data["vars"]["ansible_ssh_private_key_file"],
                    *data["vars"]["ansible_ssh_common_args"].split(), "-o", "BatchMode=yes"]

    def run(self, host: str, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.ssh, f"root@{self.addr[host]}", script], capture_output=True, text=True,
                              timeout=1800, check=False)
        if check and proc.returncode != 0:
            sys.exit(f"{host}: {script[:80]!r} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc


def limit_links(spec: SandboxSpec, rate: str | None) -> None:
    """Both directions of every host's link: the host-side veth (into the host) and eth0 in its namespace (out)."""
    for host in spec.hosts:
        for prefix, dev in ((["ip", "netns", "exec", f"enclave-{spec.name}-{host.name}"], "eth0"),
                            ([], host.veth_host(spec.name))):
            subprocess.run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, check=False)
            if rate:
                subprocess.run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                                "burst", "256kb", "latency", "200ms"], check=True)


def parallel(jobs: list[tuple[str, str]], hosts: Hosts) -> list[subprocess.CompletedProcess[str]]:
    results: list[Any] = [None] * len(jobs)

    def one(i: int, host: str, script: str) -> None:
        results[i] = hosts.run(host, script, check=False)

    threads = [threading.Thread(target=one, args=(i, h, s)) for i, (h, s) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (host, script), proc in zip(jobs, results, strict=True):
        if proc.returncode != 0:
            sys.exit(f"{host}: {script[:100]!r} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return results


def clean(hosts: Hosts, nodes: list[str]) -> None:
    parallel([(n, f"rm -rf {DEST} && mkdir -p {DEST}") for n in nodes], hosts)


def relay(hosts: Hosts, nodes: list[str], files: list[str]) -> float:
    clean(hosts, nodes)
    want = json.dumps(files)
    chain = ["gateway", *nodes]
    jobs = []
    for i, node in enumerate(nodes):
        forward = f" --forward {hosts.addr[nodes[i + 1]]}:{PORT}" if i + 1 < len(nodes) else ""
        jobs.append((node, f"echo {shlex.quote(want)} > {DEST}/.want.json && {TOOL} relay-receive --json "
                           f"--listen {hosts.addr[node]}:{PORT} --dest {DEST} --want {DEST}/.want.json "
                           f"--accept-from {hosts.addr[chain[i]]}{forward}"))
    receivers = threading.Thread(target=parallel, args=(jobs, hosts))
    receivers.start()
    time.sleep(1.0)  # let the receivers listen; the sender also retries its connection
    started = time.perf_counter()
    hosts.run("gateway", f"echo {shlex.quote(want)} > /tmp/bench-send.json && {TOOL} relay-send --json "
                         f"--to {hosts.addr[nodes[0]]}:{PORT} --source {SRC} --files /tmp/bench-send.json")
    receivers.join()  # the sender returns only once the last hop has written everything
    return time.perf_counter() - started


def naive(hosts: Hosts, nodes: list[str]) -> float:
    clean(hosts, nodes)
    url = RSYNC_URL.format(staging=hosts.addr["gateway"]) + "bench-source/"
    started = time.perf_counter()
    parallel([(n, f"rsync -a --whole-file {url} {DEST}/") for n in nodes], hosts)
    return time.perf_counter() - started


def check_copies(hosts: Hosts, nodes: list[str], expected: str) -> None:
    for node in nodes:
        got = hosts.run(node, f"cd {DEST} && sha256sum $(ls | sort) | sha256sum").stdout.split()[0]
        if got != expected:
            sys.exit(f"{node}: the copy differs from staging's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sandbox", default="bench")
    parser.add_argument("--mib", type=int, default=288, help="model size in MiB (default 288)")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--rate", default="200mbit", help="tc rate of every link (default 200mbit)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up")
    args = parser.parse_args()

    box = Sandbox(args.sandbox)
    status = box.up(nodes=3, report=lambda m: print(f"sandbox: {m}", flush=True))
    assert status.inventory is not None
    spec = box.recorded_spec()
    assert spec is not None
    hosts = Hosts(status.inventory)
    try:
        print("deploying the provision and weights phases (tools, seed) ...", flush=True)
        from enclave.plan import planfile
        from enclave.plan.decide import required_plan
        from enclave.plan.facts import host_facts
        from enclave.runner.inventory import validate
        from enclave.runner.reads import gather

        inv = validate(status.inventory)
        planfile.write(status.inventory, required_plan(inv, {h: host_facts(h, f)
                                                              for h, f in gather(status.inventory).items()}))
        for playbook in ("provision.yml", "weights.yml"):
            result = run_playbook(PlaybookRequest(playbook=playbook, inventory=status.inventory))
            if result.exit_code != 0:
                sys.exit(f"{playbook} failed (run {result.run_dir}); see `enclave logs`")
        size = args.mib // args.shards
        files = [f"shard-{i + 1:03d}.bin" for i in range(args.shards)]
        hosts.run("gateway", f"mkdir -p {SRC} && cd {SRC} && for f in {' '.join(files)}; do "
                             f"[ -s $f ] || head -c {size}M /dev/urandom > $f; done; "
                             f"chmod -R a+rX {SRC}")
        expected = hosts.run("gateway", f"cd {SRC} && sha256sum $(ls | sort) | sha256sum").stdout.split()[0]
        total = size * args.shards * 1024 * 1024
        nodes = ["node1", "node2", "node3"]
        limit_links(spec, args.rate)
        rows: dict[str, list[float]] = {"relay1": [], "relay3": [], "naive3": []}
        for _ in range(args.rounds):
            rows["relay1"].append(relay(hosts, nodes[:1], files))
            rows["relay3"].append(relay(hosts, nodes, files))
            check_copies(hosts, nodes, expected)
            rows["naive3"].append(naive(hosts, nodes))
            check_copies(hosts, nodes, expected)
        limit_links(spec, None)
        best = {k: min(v) for k, v in rows.items()}
        floor = total * 8 / _rate_bits(args.rate)
        print(f"model {total / 1e6:.0f} MB in {args.shards} shards, every link {args.rate} "
              f"(one copy at line rate: {floor:.1f} s), best of {args.rounds}")
        print(f"  relay, 1 node:    {best['relay1']:.1f} s")
        print(f"  relay, 3 nodes:   {best['relay3']:.1f} s")
        print(f"  naive, 3 nodes:   {best['naive3']:.1f} s  (each node pulls from staging at once)")
        print(f"ratio t(3)/t(1) relay: {best['relay3'] / best['relay1']:.2f} (target <= 1.3)")
        print(f"ratio naive(3)/relay(3): {best['naive3'] / best['relay3']:.2f}")
    finally:
        limit_links(spec, None)
        hosts.run("gateway", f"rm -rf {SRC}", check=False)
        if not args.keep:
            box.down()


def _rate_bits(rate: str) -> float:
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for unit, factor in units.items():
        if rate.endswith(unit):
            return float(rate[: -len(unit)]) * factor
    return float(rate)


if __name__ == "__main__":
    main()
