"""`enclave sandbox up|down|status`: a cluster of real hosts on this machine."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from enclave.cli.common import console, err, reports_errors
from enclave.errors import UsageError
from enclave.sandbox import DEFAULT_NAME, Sandbox, SandboxStatus
from enclave.weights import require_tiny_model_modules

app = typer.Typer(help="A local cluster of real hosts (systemd-nspawn nodes) to deploy to.", no_args_is_help=True)

NameOpt = Annotated[str, typer.Option("--name", help="Sandbox name; several can run side by side.")]


def _report(message: str) -> None:
    err.print(f"[dim]sandbox:[/] {message}", highlight=False)


def _subnet(value: str | None) -> ipaddress.IPv4Network | None:
    if value is None:
        return None
    try:
        return ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise UsageError(f"--subnet {value!r}: {exc}") from None


def status_table(status: SandboxStatus) -> Table:
    table = Table(title=f"sandbox {status.name} ({status.network})", title_justify="left", show_edge=False)
    for column in ("host", "address", "groups", "pid", "node", "ssh"):
        table.add_column(column)
    for host in status.hosts:
        table.add_row(host.name, host.address, ", ".join(host.groups), str(host.pid or "-"),
                      Text("running", "green") if host.running else Text("stopped", "red"),
                      Text("ok", "green") if host.ssh else Text("no", "red"))
    for name, alive in sorted(status.services.items()):
        table.add_row(f"({name})", "controller", "serves the nodes", "-",
                      Text("running", "green") if alive else Text("stopped", "red"), "")
    return table


@app.command()
@reports_errors
def up(
    nodes: Annotated[int | None, typer.Option("--nodes", "-n", help="Inference nodes (default 2).")] = None,
    name: NameOpt = DEFAULT_NAME,
    subnet: Annotated[str | None, typer.Option(help="Private IPv4 network for the sandbox, e.g. 10.77.0.0/24.")]
    = None,
    offline_kit: Annotated[bool | None, typer.Option(
        "--offline-kit/--sandbox-sources",
        help="Serve the nodes no packages, wheels or weights (they install from a kit that `enclave kit import` "
             "stages), or the sandbox's own again. Default: as the sandbox was.")] = None,
) -> None:
    """Create or resume the sandbox: a gateway/staging host and N inference nodes. Idempotent."""
    require_tiny_model_modules()  # before any host is made: the `sandbox` extra is what a plain install lacks
    status = Sandbox(name).up(nodes=nodes, subnet=_subnet(subnet), offline_kit=offline_kit, report=_report)
    console.print(status_table(status))
    console.print(f"inventory: {status.inventory}", highlight=False)
    if name == DEFAULT_NAME:
        console.print("next: enclave deploy", highlight=False)
    else:
        console.print(f"next: enclave deploy -i {status.inventory}", highlight=False)
    raise typer.Exit(0 if status.healthy else 1)


@app.command()
@reports_errors
def down(name: NameOpt = DEFAULT_NAME) -> None:
    """Stop the sandbox and remove everything it created (nodes, namespaces, links, services, state)."""
    done = Sandbox(name).down(report=_report)
    removed = (f"nodes stopped: {', '.join(done.nodes_stopped) or 'none'}; "
               f"services stopped: {', '.join(done.services_stopped) or 'none'}; "
               f"namespaces removed: {len(done.netns_deleted)}; links removed: {len(done.links_deleted)}")
    console.print(f"sandbox {name} is down. {removed}", highlight=False)
    if done.state_removed:
        console.print(f"removed {done.state_removed} (the base image stays cached)", highlight=False)


@app.command()
@reports_errors
def status(name: NameOpt = DEFAULT_NAME) -> None:
    """Show the sandbox's hosts and services. Exit 0 when everything runs, 1 otherwise."""
    current = Sandbox(name).status()
    if not current.exists:
        console.print(f"sandbox {name} is not up (enclave sandbox up creates it)", highlight=False)
        raise typer.Exit(1)
    console.print(status_table(current))
    console.print(f"inventory: {current.inventory or '-'}", highlight=False)
    raise typer.Exit(0 if current.healthy else 1)
