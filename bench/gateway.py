#!/usr/bin/env python3
"""Cost of the gateway: small completions through it vs straight to the engines, measured in the same run.

Both paths are driven by one client on the gateway host (the only host the engine port is open to), so the
only difference is nginx: TLS, the key check, the proxy hop. Direct requests go round-robin to the same
engine replicas the gateway balances over; both keep their connections alive, as real clients do. Rounds
alternate the order of the two paths so drift in a noisy machine hits both. Prints p50/p99 latency and
throughput of each and the ratios. Target: gateway overhead <= 10% (ratio <= 1.10).

    python bench/gateway.py [--sandbox NAME | -i INVENTORY] [--requests 200] [--concurrency 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from enclave.inventory_layout import ca_cert

# Runs on the gateway host (stdin of `ssh ... python3 -`): secrets travel on stdin, never on a command line.
_CLIENT = r'''
import http.client, json, ssl, statistics, sys, threading, time
cfg = json.loads(sys.stdin.readline())
ctx = ssl.create_default_context(cadata=cfg["ca"])

def connect(target):
    if target["tls"]:
        return http.client.HTTPSConnection(target["host"], target["port"], context=ctx, timeout=120)
    return http.client.HTTPConnection(target["host"], target["port"], timeout=120)

def worker(targets, key, count, latencies, errors):
    conns = [connect(t) for t in targets]
    body = json.dumps({"model": cfg["model"], "prompt": "Hello", "max_tokens": cfg["max_tokens"],
                       "temperature": 0, "ignore_eos": True})
    headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    for i in range(count):
        conn = conns[i % len(conns)]
        start = time.perf_counter()
        try:
            conn.request("POST", "/v1/completions", body=body, headers=headers)
            reply = conn.getresponse()
            reply.read()
            ok = reply.status == 200
        except OSError:
            ok = False
            conns[i % len(conns)] = connect(targets[i % len(targets)])
        latencies.append(time.perf_counter() - start)
        if not ok:
            errors.append(i)

def batch(name):
    path = cfg["paths"][name]
    latencies, errors, threads = [], [], []
    per = cfg["requests"] // cfg["concurrency"]
    for n in range(cfg["concurrency"]):
        # each worker starts on a different replica, so direct load spreads like the gateway's round robin
        targets = path["targets"][n % len(path["targets"]):] + path["targets"][:n % len(path["targets"])]
        threads.append(threading.Thread(target=worker, args=(targets, path["key"], per, latencies, errors)))
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - start, "latencies": latencies, "errors": len(errors)}

# one warm-up batch per path (engine caches, TLS sessions), not counted
for name in cfg["paths"]:
    batch(name)
out = {name: [] for name in cfg["paths"]}
for r in range(cfg["rounds"]):
    order = list(cfg["paths"]) if r % 2 == 0 else list(reversed(list(cfg["paths"])))
    for name in order:
        out[name].append(batch(name))
print(json.dumps(out))
'''


def _inventory(args: argparse.Namespace) -> Path:
    if args.inventory:
        return Path(args.inventory)
    from enclave.sandbox import Sandbox

    status = Sandbox(args.sandbox).status()
    if not status.exists or status.inventory is None:
        sys.exit(f"sandbox {args.sandbox!r} does not exist: `enclave sandbox up --name {args.sandbox}` and deploy")
    return status.inventory


def _vars(inventory: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((inventory.parent / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", default="default")
    parser.add_argument("-i", "--inventory")
    parser.add_argument("--requests", type=int, default=200, help="per path and round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()

    inventory = _inventory(args)
    data = yaml.safe_load(inventory.read_text())["all"]
    hosts = {name: (spec or {}).get("ansible_host", name) for group in data["children"].values()
             for name, spec in (group.get("hosts") or {}).items()}
    gateway_host = next(iter(data["children"]["enclave_gateway"]["hosts"]))
    variables = {**data.get("vars", {}), **_vars(inventory)}
    plan = variables.get("enclave_plan") or {}
    if not variables.get("engine_api_key") or not plan:
        sys.exit("no engine key or plan in the inventory: deploy engines first")
    port = int(plan.get("port", 8000))
    heads = ([replica["hosts"][0] for replica in plan.get("replicas", [])]
             or list(data["children"]["enclave_nodes"]["hosts"]))
    client_key = next(iter(sorted(variables["gateway_api_keys"].items())))[1]
    config = {
        "ca": ca_cert(inventory).read_text(),
        "model": plan.get("served_model_name") or variables.get("enclave_model"),
        "max_tokens": args.max_tokens, "requests": args.requests, "concurrency": args.concurrency,
        "rounds": args.rounds,
        "paths": {
            "gateway": {"key": client_key, "targets": [{"host": hosts[gateway_host], "port": 443, "tls": True}]},
            "direct": {"key": variables["engine_api_key"],
                       "targets": [{"host": hosts[h], "port": port, "tls": False} for h in heads]},
        },
    }
    ssh = ["ssh", "-i", variables["ansible_ssh_private_key_file"], *variables["ansible_ssh_common_args"].split(),
           f"root@{hosts[gateway_host]}", "python3 -c " + shlex.quote(_CLIENT)]
    proc = subprocess.run(ssh, input=json.dumps(config) + "\n", capture_output=True, text=True, check=False,
                          env={**os.environ})
    if proc.returncode != 0:
        sys.exit(f"the client on {gateway_host} failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout)

    summary: dict[str, dict[str, float]] = {}
    for name, batches in result.items():
        latencies = [x for b in batches for x in b["latencies"]]
        errors = sum(b["errors"] for b in batches)
        if errors:
            sys.exit(f"{name}: {errors} requests failed")
        summary[name] = {"p50": _quantile(latencies, 0.50) * 1000, "p99": _quantile(latencies, 0.99) * 1000,
                         "rps": sum(len(b["latencies"]) for b in batches) / sum(b["seconds"] for b in batches)}
        print(f"{name:8} p50 {summary[name]['p50']:7.1f} ms  p99 {summary[name]['p99']:7.1f} ms  "
              f"{summary[name]['rps']:7.1f} req/s  ({len(latencies)} requests, {args.concurrency} concurrent, "
              f"{args.max_tokens} tokens each)")
    gw, direct = summary["gateway"], summary["direct"]
    ratios = {"p50": gw["p50"] / direct["p50"], "p99": gw["p99"] / direct["p99"],
              "throughput": direct["rps"] / gw["rps"]}
    print("gateway / direct: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
          + f"  (target <= 1.10: {'met' if max(ratios.values()) <= 1.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
