#!/usr/bin/env python3
"""Cost of the gateway: small completions through it vs straight to the engines, measured in the same run.

Both paths are driven by one client on the gateway host (the only host the engine port is open to), so the
only difference is nginx: TLS, the key check, the proxy hop. Direct requests go round-robin to the same
engine replicas the gateway balances over; both keep their connections alive, as real clients do. Every
client thread alternates between the two paths request by request (half start on each), so a stall of a
shared machine, or a busy engine, hits both paths alike: earlier versions ran the paths in separate batches
and one stall during a gateway batch moved the p99 ratio from 0.95 to 1.10 between runs. Prints p50, p99 and
mean latency of each path over all rounds, their ratios (the mean's ratio is the throughput cost at a fixed
concurrency), and the spread: each round's ratios (min/median/max) and the pooled ratios of the first and
second half of the rounds. Target: gateway overhead <= 10% (ratio <= 1.10).

A p99 over few requests is the few slowest ones, so one stall on a shared machine moves it: a run is only
worth quoting when its two halves agree within 5%. Each half stands for a run of its own, so the bench adds
--rounds more rounds while they disagree, up to --max-rounds and --budget-s, and says whether they agreed.

--loopback needs no sandbox: the role's own nginx configuration on this machine's loopback addresses in front
of stand-in engines that answer after --engine-ms (bench/gateway_loopback.py); the client runs here.

    python bench/gateway.py [--sandbox NAME | -i INVENTORY | --loopback [--engine-ms 50]]
                            [--requests 200] [--concurrency 4] [--rounds 8] [--max-rounds 32] [--budget-s 900]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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

def rotated(targets, n):
    # each worker starts on a different replica, so direct load spreads like the gateway's round robin
    return targets[n % len(targets):] + targets[:n % len(targets)]

def worker(n, count, latencies, errors):
    # Request by request, this worker alternates between the paths (half the workers start on each): a stall of
    # the shared machine hits both paths alike, and the engines serve the same mix whichever path asked.
    paths = cfg["paths"]
    names = sorted(paths) if n % 2 == 0 else sorted(paths, reverse=True)
    targets = {name: rotated(paths[name]["targets"], n) for name in names}
    conns = {name: [connect(t) for t in targets[name]] for name in names}
    body = json.dumps({"model": cfg["model"], "prompt": "Hello", "max_tokens": cfg["max_tokens"],
                       "temperature": 0, "ignore_eos": True})
    headers = {name: {"Authorization": "Bearer " + paths[name]["key"], "Content-Type": "application/json"}
               for name in names}
    for i in range(count):
        name = names[i % 2]
        k = (i // 2) % len(conns[name])
        start = time.perf_counter()
        try:
            conns[name][k].request("POST", "/v1/completions", body=body, headers=headers[name])
            reply = conns[name][k].getresponse()
            reply.read()
            ok = reply.status == 200
        except OSError:
            ok = False
            conns[name][k] = connect(targets[name][k])
        latencies[name].append(time.perf_counter() - start)
        if not ok:
            errors[name] += 1

def batch():
    latencies = {name: [] for name in cfg["paths"]}
    errors = {name: 0 for name in cfg["paths"]}
    per = 2 * cfg["requests"] // cfg["concurrency"]  # cfg["requests"] per path
    threads = [threading.Thread(target=worker, args=(n, per, latencies, errors)) for n in range(cfg["concurrency"])]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return {name: {"seconds": seconds, "latencies": latencies[name], "errors": errors[name]} for name in latencies}

batch()  # warm-up (engine caches, TLS sessions), not counted
out = {name: [] for name in cfg["paths"]}
for r in range(cfg["rounds"]):
    for name, result in batch().items():
        out[name].append(result)
print(json.dumps(out))
'''


def _inventory(args: argparse.Namespace) -> Path:
    if args.inventory:
        return Path(args.inventory)
    from enclave.errors import UsageError
    from enclave.sandbox import Sandbox

    try:
        status = Sandbox(args.sandbox).status()
    except UsageError as e:
        sys.exit(str(e))
    if not status.exists or status.inventory is None:
        sys.exit(f"sandbox {args.sandbox!r} does not exist: `enclave sandbox up --name {args.sandbox}` and deploy")
    return status.inventory


def _vars(inventory: Path) -> dict[str, Any]:
    """group_vars/all, then the gateway's own group_vars (where `enclave keys` keeps the client keys)."""
    merged: dict[str, Any] = {}
    for group in ("all", "enclave_gateway"):
        for path in sorted((inventory.parent / "group_vars" / group).glob("*.yml")):
            merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


STABLE = 0.05  # the two halves' pooled ratios must agree this closely for a run to be quoted


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _sandbox_config(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The client's config and the ssh command that runs it on the sandbox's (or inventory's) gateway host."""
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
        "paths": {
            "gateway": {"key": client_key, "targets": [{"host": hosts[gateway_host], "port": 443, "tls": True}]},
            "direct": {"key": variables["engine_api_key"],
                       "targets": [{"host": hosts[h], "port": port, "tls": False} for h in heads]},
        },
    }
    ssh = ["ssh", "-i", variables["ansible_ssh_private_key_file"], *variables["ansible_ssh_common_args"].split(),
           f"root@{hosts[gateway_host]}", "python3 -c " + shlex.quote(_CLIENT)]
    return config, ssh


def _run_client(argv: list[str], config: dict[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    proc = subprocess.run(argv, input=json.dumps(config) + "\n", capture_output=True, text=True, check=False,
                          env={**os.environ})
    if proc.returncode != 0:
        sys.exit(f"the client on {where} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def _pooled(batches: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [x for b in batches for x in b["latencies"]]
    return {"p50": _quantile(latencies, 0.50) * 1000, "p99": _quantile(latencies, 0.99) * 1000,
            "mean": statistics.fmean(latencies) * 1000, "n": len(latencies)}


def _ratios(gateway: list[dict[str, Any]], direct: list[dict[str, Any]]) -> dict[str, float]:
    """gateway / direct: above 1 means the gateway costs. A closed loop at fixed concurrency serves
    concurrency / mean latency requests a second, so the mean's ratio is also the throughput's."""
    gw, d = _pooled(gateway), _pooled(direct)
    return {k: gw[k] / d[k] for k in ("p50", "p99", "mean")}


def halves(result: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, float], dict[str, float], float]:
    """The pooled ratios of the first and the second half of the rounds, and their largest relative gap."""
    gateway, direct = result["gateway"], result["direct"]
    half = len(gateway) // 2
    first, second = _ratios(gateway[:half], direct[:half]), _ratios(gateway[half:], direct[half:])
    return first, second, max(abs(first[k] - second[k]) / min(first[k], second[k]) for k in first)


def measure(run_rounds: Callable[[], dict[str, list[dict[str, Any]]]],
            args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """--rounds rounds, then as many more at a time while the halves disagree, up to --max-rounds and --budget-s:
    each half is a run of its own, so halves that agree stand for back-to-back runs that agree."""
    started = time.monotonic()
    result = run_rounds()
    while len(result["gateway"]) + args.rounds <= args.max_rounds:
        gap = halves(result)[2]
        spent = time.monotonic() - started
        chunk = spent * args.rounds / len(result["gateway"])
        if gap <= STABLE or spent + chunk > args.budget_s:
            break
        print(f"  halves {100 * gap:.1f}% apart after {len(result['gateway'])} rounds: {args.rounds} more",
              flush=True)
        more = run_rounds()
        for name in result:
            result[name] += more[name]
    return result


def report(result: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    for name, batches in result.items():
        errors = sum(b["errors"] for b in batches)
        if errors:
            sys.exit(f"{name}: {errors} requests failed")
        pooled = _pooled(batches)
        print(f"{name:8} p50 {pooled['p50']:7.1f} ms  p99 {pooled['p99']:7.1f} ms  mean {pooled['mean']:7.1f} ms  "
              f"({pooled['n']:.0f} requests, {args.max_tokens} tokens each)")
    gateway, direct = result["gateway"], result["direct"]
    rounds = len(gateway)
    served = sum(len(b["latencies"]) for batches in result.values() for b in batches)
    print(f"both     {served / sum(b['seconds'] for b in gateway):.1f} req/s, {args.concurrency} concurrent "
          f"client threads each alternating between the paths")
    per_round = [_ratios([g], [d]) for g, d in zip(gateway, direct, strict=True)]
    print(f"per round ({rounds} rounds of {args.requests} requests per path), gateway / direct:")
    for key in ("p50", "p99", "mean"):
        values = [r[key] for r in per_round]
        print(f"  {key:4} min {min(values):.3f}  median {statistics.median(values):.3f}  max {max(values):.3f}"
              f"   [{' '.join(f'{v:.2f}' for v in values)}]")
    first, second, gap = halves(result)
    print(f"halves (rounds 1-{rounds // 2} vs {rounds // 2 + 1}-{rounds}): "
          + ", ".join(f"{k} {first[k]:.3f} vs {second[k]:.3f}" for k in first)
          + f"  (largest gap {100 * gap:.1f}%: "
          + ("stable" if gap <= STABLE else f"NOT stable within {100 * STABLE:.0f}%: do not quote this run") + ")")
    ratios = _ratios(gateway, direct)
    print("gateway / direct, all rounds: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
          + f"  (target <= 1.10: {'met' if max(ratios.values()) <= 1.10 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", default="default")
    parser.add_argument("-i", "--inventory")
    parser.add_argument("--loopback", action="store_true", help="no sandbox: the role's nginx on loopback here")
    parser.add_argument("--engine-ms", type=float, default=50.0, help="stand-in engines' service time (--loopback)")
    parser.add_argument("--requests", type=int, default=200, help="per path and round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8, help="at first, and per extension")
    parser.add_argument("--max-rounds", type=int, default=32, help="extend while the halves disagree, up to this")
    parser.add_argument("--budget-s", type=float, default=900, help="no extension that would end past this")
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    if args.rounds < 2 or args.requests < args.concurrency:
        sys.exit("--rounds must be at least 2 and --requests at least --concurrency")
    knobs = {"max_tokens": args.max_tokens, "requests": args.requests, "concurrency": args.concurrency,
             "rounds": args.rounds}
    if args.loopback:
        from gateway_loopback import loopback_gateway

        with loopback_gateway(args.engine_ms) as config:
            print(f"loopback: the gateway role's nginx on 127.0.0.10, stand-in engines answering after "
                  f"{args.engine_ms:g} ms on 127.0.0.11-12, client on this machine ({os.cpu_count()} cores)")
            result = measure(lambda: _run_client([sys.executable, "-c", _CLIENT], {**config, **knobs},
                                                 "this machine"), args)
            load = os.getloadavg()[0]
            # nginx's TLS and proxying compete with everything else for the cores: its tail follows the load
            print(f"load average {load:.1f} at the end on {os.cpu_count()} cores"
                  + (": busy, the gateway's p99 includes waiting for a core" if load > (os.cpu_count() or 1) else ""))
    else:
        config, ssh = _sandbox_config(args)
        result = measure(lambda: _run_client(ssh, {**config, **knobs}, ssh[-2].split("@", 1)[1]), args)
    report(result, args)


if __name__ == "__main__":
    main()
