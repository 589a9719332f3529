"""`enclave status`: one screen for the cluster: engines, weights, health, GPUs, load, gateway rotation."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from enclave.cli.common import (
    AskVaultOpt,
    InventoryOpt,
    VaultFileOpt,
    console,
    err,
    open_inventory,
    reports_errors,
)
from enclave.errors import RunError, UsageError
from enclave.gateway import cert
from enclave.gateway.client import GatewayTarget, target_of
from enclave.plan import planfile
from enclave.status.cluster import ClusterStatus, NodeStatus, cluster_status
from enclave.status.collect import read_answers
from enclave.status.gpus import GpuReading
from enclave.status.history import DEFAULT_MINUTES, MAX_MINUTES, History, Trend, history_or_reason
from enclave.status.metrics import EngineLoad

# Without --watch, tokens/s comes from two /metrics samples this far apart, taken on each head in the same pass.
SAMPLE_GAP_S = 2.0
MIN_INTERVAL_S = 1.0
SPARKS = "▁▂▃▄▅▆▇█"


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "?" if value is None else fmt.format(value)


def gpu_cell(node: NodeStatus) -> str:
    if node.gpus is None:
        return node.gpu_note or "no GPU"
    if not node.gpus:
        return "nvidia-smi lists no GPU"
    used = [g.memory_used_mib for g in node.gpus if g.memory_used_mib is not None]
    total = [g.memory_total_mib for g in node.gpus if g.memory_total_mib is not None]
    util = [g.utilization_pct for g in node.gpus if g.utilization_pct is not None]
    memory = f"{sum(used) / 1024:.0f}/{sum(total) / 1024:.0f} GiB" if used and total else "memory ?"
    load = f"util {sum(util) / len(util):.0f}% (max {max(util):.0f}%)" if util else "util ?"
    return f"{len(node.gpus)}x {_gpu_name(node.gpus)}: {memory}, {load}"


def _gpu_name(gpus: list[GpuReading]) -> str:
    names = sorted({g.name for g in gpus})
    return names[0] if len(names) == 1 else "mixed"


def _requests(node: NodeStatus) -> str:
    if node.role != "head":
        return "-"
    return f"{_num(node.running)} running, {_num(node.waiting)} waiting"


def _tokens(node: NodeStatus) -> str:
    return "-" if node.role != "head" else _num(node.tokens_per_s, "{:.1f}")


def sparkline(trend: Trend, history: History) -> str:
    """One character per grid point, scaled from 0 to the series' maximum; a blank where Prometheus had no value."""
    values = dict(trend.samples)
    top = max(values.values(), default=0.0)
    points = int((history.end - history.start) // history.step_s) + 1
    chars = []
    for i in range(points):
        value = values.get(history.start + i * history.step_s)
        if value is None:
            chars.append(" ")
        else:
            chars.append(SPARKS[0] if top <= 0 else SPARKS[min(len(SPARKS) - 1, int(value / top * len(SPARKS)))])
    return "".join(chars)


def trend_cell(trend: Trend, history: History, fmt: str) -> str:
    summary = trend.summary()
    if summary is None:
        return "no data"
    _, mean, top = summary
    return f"{sparkline(trend, history)} now {_num(trend.now, fmt)} avg {fmt.format(mean)} max {fmt.format(top)}"


def _history_cells(node: NodeStatus, history: History) -> tuple[str, str]:
    if node.role != "head":
        return "-", "-"
    found = history.replicas.get(node.host)
    if found is None:
        return "no data", "no data"
    return trend_cell(found.tokens_per_s, history, "{:.1f}"), trend_cell(found.requests, history, "{:.0f}")


def history_line(cluster: ClusterStatus) -> str:
    history = cluster.history
    if history is None:
        return f"history: none: {cluster.history_unavailable}"
    return (f"history: last {history.minutes} min from Prometheus at {history.source}, one point per "
            f"{history.step_s} s")


def status_table(cluster: ClusterStatus) -> Table:
    table = Table(show_edge=False, title=f"{cluster.repo}@{cluster.revision[:12]} (served as "
                                         f"{cluster.served_model_name})", title_justify="left")
    history = cluster.history
    columns = ["node", "replica", "engine", "revision", "health", "GPUs", "requests", "tokens/s", "rotation"]
    if history is not None:
        columns += [f"tokens/s, last {history.minutes} min", f"requests, last {history.minutes} min"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for node in cluster.nodes:
        ok_engine = node.engine == "active" or node.replica is None
        revision = Text((node.revision or "none")[:12],
                        "red" if node.replica and node.revision != cluster.revision else "")
        table.add_row(
            node.host, f"{node.replica} ({node.role})" if node.replica else "none (spare)",
            Text(node.engine, "green" if node.engine == "active" else "" if ok_engine else "bold red"), revision,
            Text(node.health or "-", "green" if node.health == "ok" else "bold red" if node.health else ""),
            gpu_cell(node), _requests(node), _tokens(node),
            Text(node.rotation or "-", "yellow" if node.rotation == "drained" else ""),
            *(_history_cells(node, history) if history is not None else ()))
    return table


def summary_lines(cluster: ClusterStatus) -> list[str]:
    lines = [history_line(cluster)]
    for gateway in cluster.gateways:
        drained = ", ".join(gateway.drained) or "none"
        certificate = f", certificate {gateway.certificate}" if gateway.certificate else ""
        lines.append(f"gateway {gateway.host}: nginx {gateway.nginx}, drained: {drained}{certificate}")
        lines += [f"WARNING {gateway.host}: {warning}" for warning in gateway.warnings]
    heads = [n for n in cluster.nodes if n.role == "head"]
    serving = [n for n in heads if not n.problems]
    if cluster.serving:
        lines.append(f"serving: {len(serving)} of {len(heads)} replicas")
        return lines
    lines.append(f"NOT SERVING: {len(serving)} of {len(heads)} replicas serve")
    lines += [f"  {n.host}: {p}" for n in cluster.nodes for p in n.problems]
    lines += [f"  {g.host}: {p}" for g in cluster.gateways for p in g.problems]
    return lines


def plain_lines(cluster: ClusterStatus) -> list[str]:
    """The screen as one line per node, for logs and pipes (--watch without a terminal)."""
    lines = []
    for n in cluster.nodes:
        history = ""
        if cluster.history is not None:
            tokens, requests = _history_cells(n, cluster.history)
            history = f" history_tokens/s={tokens!r} history_requests={requests!r}"
        lines.append(f"{n.host}: replica={n.replica or 'none'} role={n.role} engine={n.engine} "
                     f"revision={(n.revision or 'none')[:12]} health={n.health or '-'} gpus={gpu_cell(n)!r} "
                     f"requests={_requests(n)!r} tokens/s={_tokens(n)} rotation={n.rotation or '-'}{history}")
    return lines + summary_lines(cluster)


def _screen(cluster: ClusterStatus) -> Group:
    return Group(status_table(cluster), *(Text(line, _STYLES.get(line.split(" ", 1)[0], ""))
                                           for line in summary_lines(cluster)))


_STYLES = {"NOT": "bold red", "WARNING": "yellow"}


class _Reader:
    """Reads the cluster round after round, keeping each head's last /metrics sample for the next tokens/s."""

    def __init__(self, inventory: Any, plan: dict[str, Any], nodes: list[str],
                 gateways: dict[str, tuple[GatewayTarget, int]], hostvars: dict[str, dict[str, Any]],
                 history_minutes: int | None) -> None:
        self.inventory, self.plan, self.nodes, self.gateways = inventory, plan, nodes, gateways
        self.hostvars, self.history_minutes = hostvars, history_minutes
        self.previous: dict[str, EngineLoad] = {}

    def certificates(self) -> dict[str, tuple[str, str | None]]:
        # read from the controller with a verified handshake, as a client sees the gateway (enclave.gateway.cert)
        now = datetime.now(UTC)
        return {host: cert.status_of(target, warn, now) for host, (target, warn) in self.gateways.items()}

    def read(self, *, samples: int, cancel: threading.Event | None = None) -> ClusterStatus | None:
        found = read_answers(self.inventory, samples=samples, gap=SAMPLE_GAP_S, cancel=cancel)
        if found.cancelled:
            return None
        cluster = cluster_status(self.plan, self.nodes, list(self.gateways), found.answers, found.errors,
                                 self.previous, self.certificates())
        self.previous = {n.host: n.last_load for n in cluster.nodes if n.last_load is not None}
        if self.history_minutes is None:
            cluster.history_unavailable = "turned off (--no-history)"
        else:
            cluster.history, cluster.history_unavailable = history_or_reason(
                self.plan, self.hostvars, minutes=self.history_minutes, end=time.time())
        return cluster


def _pause(stop: threading.Event, seconds: float) -> None:
    """Sleep until `seconds` pass or `stop` is set, without stop.wait(): Event.wait() holds the Event's lock while
    it runs Python code, and a SIGINT handled there calls stop.set(), which takes the same lock: the process hung
    for good after Ctrl-C (a CI rehearsal saw --watch outlive SIGINT by 120 s). is_set() takes no lock."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def _watch(reader: _Reader, interval: float, as_json: bool) -> None:
    # Only the signal handler sets `stop` and nothing in this thread ever waits on it (see _pause): the runner's
    # thread polls is_set(), which takes no lock.
    stop = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    live = Live(console=console, auto_refresh=False) if console.is_terminal and not as_json else None
    try:
        if live is not None:
            live.start()
        while not stop.is_set():
            started = time.monotonic()
            # one sample per round: tokens/s comes from this round's and the last round's samples
            try:
                cluster = reader.read(samples=1, cancel=stop)
            except RunError as exc:  # a round where no host answered; the next one may
                err.print(f"{time.strftime('%H:%M:%S')} {exc}", highlight=False, soft_wrap=True)
                _pause(stop, interval)
                continue
            if cluster is None:
                break
            if as_json:
                console.print(json.dumps({"at": time.time(), **cluster.as_dict()}), soft_wrap=True, highlight=False)
            elif live is not None:
                live.update(Group(Text(time.strftime("%H:%M:%S") + f"  every {interval:g} s, Ctrl-C to stop"),
                                  _screen(cluster)), refresh=True)
            else:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                for line in plain_lines(cluster):
                    console.print(f"{stamp} {line}", highlight=False, soft_wrap=True)
            _pause(stop, interval - (time.monotonic() - started))
    finally:
        if live is not None:
            live.stop()
        signal.signal(signal.SIGINT, previous)


@reports_errors
def status(
    inventory: InventoryOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between rounds with --watch (at least 1).")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON (one object per round).")] = False,
    history: Annotated[bool, typer.Option(
        "--history/--no-history", help="Each replica's tokens/s and requests over the last minutes, from the "
        "monitoring host's Prometheus (when it answers).")] = True,
    history_minutes: Annotated[int, typer.Option(
        help=f"How many minutes of history (1 to {MAX_MINUTES}).")] = DEFAULT_MINUTES,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Per node: engine, weights revision, health, GPUs, requests and tokens/s; the gateway's rotation and certificate;
    each replica's recent load from Prometheus when monitoring answers.

    Exit 0 when every replica serves, 1 when something does not (a drained replica counts), 2 bad usage.
    """
    if interval < MIN_INTERVAL_S:
        raise UsageError(f"--interval {interval:g}: must be at least {MIN_INTERVAL_S:g} s")
    if not 1 <= history_minutes <= MAX_MINUTES:
        raise UsageError(f"--history-minutes {history_minutes}: must be 1 to {MAX_MINUTES}")
    path, inv, _ = open_inventory(inventory, vault_password_file, ask_vault_pass)
    plan = planfile.read(path)
    if plan is None:
        raise UsageError(f"no plan for {path}: run `enclave plan -i {path}` (or `enclave deploy`) first; the plan "
                         "names the model, its revision and which nodes run it")
    gateways = {host: (target_of(inv, path, host), cert.warn_days(inv.hostvars.get(host)))
                for host in inv.hosts("enclave_gateway")}
    reader = _Reader(path, plan, inv.hosts("enclave_nodes"), gateways, inv.hostvars,
                     history_minutes if history else None)
    if watch:
        _watch(reader, interval, as_json)
        raise typer.Exit(0)
    with err.status("reading the cluster (engines, weights, GPUs, gateway, Prometheus)"):
        cluster = reader.read(samples=2)
    if cluster is None:  # the run was cancelled (Ctrl-C reached ansible-playbook)
        raise typer.Exit(130)
    if as_json:
        console.print_json(json.dumps(cluster.as_dict()))
    else:
        console.print(_screen(cluster))
    raise typer.Exit(0 if cluster.serving else 1)
