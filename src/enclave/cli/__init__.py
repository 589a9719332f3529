"""The `enclave` command line. Verbs live in one module each; this module only assembles them."""

from __future__ import annotations

from typing import Annotated

import typer

from enclave import __version__
from enclave.cli import audit as audit_cmd
from enclave.cli import bundle as bundle_cmd
from enclave.cli import cert as cert_cmd
from enclave.cli import chat as chat_cmd
from enclave.cli import deploy as deploy_cmd
from enclave.cli import drain as drain_cmd
from enclave.cli import keys as keys_cmd
from enclave.cli import kit as kit_cmd
from enclave.cli import logs as logs_cmd
from enclave.cli import mirror as mirror_cmd
from enclave.cli import plan as plan_cmd
from enclave.cli import sandbox as sandbox_cmd
from enclave.cli import status as status_cmd
from enclave.cli import teardown as teardown_cmd
from enclave.cli import update as update_cmd
from enclave.cli import usage as usage_cmd
from enclave.cli import verify as verify_cmd
from enclave.cli import weights as weights_cmd
from enclave.cli.common import debug_mode

app = typer.Typer(
    name="enclave",
    help="Deploy open-weight LLMs onto a private GPU cluster; nothing leaves the network.",
    no_args_is_help=True,
    # Locals in a traceback may hold API keys or tokens: never show them.
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"enclave {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Deploy open-weight LLMs onto a private GPU cluster; nothing leaves the network."""
    debug_mode["on"] = debug


app.command("plan")(plan_cmd.plan)
app.command("deploy")(deploy_cmd.deploy)
app.command("verify")(verify_cmd.verify)
app.command("status")(status_cmd.status)
app.command("chat")(chat_cmd.chat)
app.command("logs")(logs_cmd.logs)
app.command("drain")(drain_cmd.drain)
app.command("undrain")(drain_cmd.undrain)
app.command("bundle")(bundle_cmd.bundle)
app.command("teardown")(teardown_cmd.teardown)
app.command("update")(update_cmd.update)
app.command("rollback")(update_cmd.rollback)
app.command("audit")(audit_cmd.audit)
app.command("usage")(usage_cmd.usage)
app.add_typer(sandbox_cmd.app, name="sandbox")
app.add_typer(weights_cmd.app, name="weights")
app.add_typer(mirror_cmd.app, name="mirror")
app.add_typer(kit_cmd.app, name="kit")
app.add_typer(cert_cmd.app, name="cert")
app.add_typer(keys_cmd.app, name="keys")


def main() -> None:
    app()
