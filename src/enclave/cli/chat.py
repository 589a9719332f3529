"""`enclave chat MESSAGE`: one chat completion through the gateway, the way a client application sends it.

A verb rather than a demo script: it reads what a client needs from the inventory (the gateway's address and
port, the kit's CA (`<inventory dir>/pki/ca.crt`, see enclave.inventory_layout), the plan's served model name),
and the key never appears on a command line: it comes from ENCLAVE_API_KEY or from a client named in the
inventory's gateway_api_keys.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from enclave.cli.common import InventoryOpt, console, err, reports_errors, resolve_inventory
from enclave.errors import UsageError
from enclave.gateway.client import answer_text, gateway_target
from enclave.gateway.client import chat as send_chat
from enclave.plan import planfile
from enclave.plan.inventory import Inventory
from enclave.runner.inventory import validate

KEY_ENV = "ENCLAVE_API_KEY"


def client_key(inv: Inventory, host: str, client: str | None) -> tuple[str, str]:
    """(key, who): the named client's key from the inventory, else ENCLAVE_API_KEY."""
    keys = (inv.hostvars.get(host) or {}).get("gateway_api_keys") or {}
    if client:
        key = keys.get(client) if isinstance(keys, dict) else None
        if not isinstance(key, str):  # a vaulted value reads as a mapping here: ask for the env instead
            names = ", ".join(sorted(keys)) if isinstance(keys, dict) else "none"
            raise UsageError(f"--client {client}: no readable key of that name in gateway_api_keys (clients: "
                             f"{names}); vaulted keys: pass it in {KEY_ENV} instead")
        return key, f"client {client}"
    key = os.environ.get(KEY_ENV, "")
    if not key:
        raise UsageError(f"no API key: set {KEY_ENV}, or name a client of gateway_api_keys with --client")
    return key, KEY_ENV


@reports_errors
def chat(
    message: Annotated[str, typer.Argument(help="What to ask the model.")],
    inventory: InventoryOpt = None,
    client: Annotated[str | None, typer.Option(help="Use this client's key from the inventory's gateway_api_keys.")]
    = None,
    model: Annotated[str | None, typer.Option(help="Model name to ask for (default: the plan's served name).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Longest answer, in tokens.")] = 64,
) -> None:
    """Send one chat completion through the gateway (TLS against the kit's CA) and print the answer."""
    path = resolve_inventory(inventory)
    inv = validate(path, reachable=False)
    plan = planfile.read(path) or {}
    served = model or plan.get("served_model_name")
    if not served:
        raise UsageError(f"no model name: no plan for {path} (run `enclave plan`), or pass --model")
    host, target = gateway_target(inv, path)
    key, who = client_key(inv, host, client)
    with err.status(f"asking {served} through {host} ({target.address}:{target.port})"):
        reply = send_chat(target, key, served, message, max_tokens=max_tokens)
    err.print(f"{host}: {served} answered ({who}; {reply.get('usage', {}).get('completion_tokens', '?')} tokens)",
              highlight=False)
    console.print(answer_text(reply), highlight=False, markup=False, soft_wrap=True)
