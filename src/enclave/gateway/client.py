"""A client of the gateway, as an application would be one: TLS verified against the kit's CA, a named key."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.errors import EnclaveError, UsageError
from enclave.inventory_layout import ca_cert
from enclave.plan.inventory import Inventory
from enclave.roles import role_data

CHAT_PATH = "/v1/chat/completions"


class GatewayError(EnclaveError):
    """The gateway refused or failed the request (status and body say why)."""


@dataclass(frozen=True)
class GatewayTarget:
    address: str
    port: int
    ca: Path | None  # None: the system's trust store (an operator's own certificate)


def gateway_target(inv: Inventory, inventory: Path) -> tuple[str, GatewayTarget]:
    """(host, target): the inventory's first gateway as a client reaches it."""
    gateways = inv.hosts("enclave_gateway")
    if not gateways:
        raise UsageError(f"{inventory}: no host in enclave_gateway")
    return gateways[0], target_of(inv, inventory, gateways[0])


def target_of(inv: Inventory, inventory: Path, host: str) -> GatewayTarget:
    """The gateway `host` as a client reaches it, with the CA that signs its certificate (None for an operator's
    own certificate: the system's trust store judges it)."""
    hostvars: dict[str, Any] = inv.hostvars.get(host) or {}
    own_cert = bool(hostvars.get("gateway_tls_cert_file"))
    ca_dir = hostvars.get("gateway_ca_dir")
    ca = Path(ca_dir) / "ca.crt" if isinstance(ca_dir, str) and "{{" not in ca_dir else ca_cert(inventory)
    port = int(hostvars.get("gateway_https_port", role_data("gateway")["gateway_https_port"]))
    return GatewayTarget(str(hostvars.get("ansible_host") or host), port, None if own_cert else ca)


def chat_body(model: str, message: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": message}], "max_tokens": max_tokens,
            "temperature": 0}


def answer_text(reply: dict[str, Any]) -> str:
    try:
        return str(reply["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        raise GatewayError(f"the answer has no choices[0].message.content: {json.dumps(reply)[:300]}") from None


def chat(target: GatewayTarget, key: str, model: str, message: str, *, max_tokens: int = 64,
         timeout: float = 300) -> dict[str, Any]:
    """One chat completion through the gateway; the whole JSON answer."""
    if target.ca is not None and not target.ca.is_file():
        raise UsageError(f"no CA certificate at {target.ca}: the gateway role writes it there on deploy")
    context = ssl.create_default_context(cafile=str(target.ca) if target.ca else None)
    conn = http.client.HTTPSConnection(target.address, target.port, context=context, timeout=timeout)
    try:
        conn.request("POST", CHAT_PATH, body=json.dumps(chat_body(model, message, max_tokens)),
                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
    except ssl.SSLError as exc:
        raise GatewayError(f"TLS with {target.address}:{target.port} failed: {exc}") from None
    except OSError as exc:
        raise GatewayError(f"cannot reach the gateway at {target.address}:{target.port}: {exc}") from None
    finally:
        conn.close()
    if reply.status != 200:
        raise GatewayError(f"{CHAT_PATH} answered HTTP {reply.status}: {data[:300].decode(errors='replace')}")
    try:
        return json.loads(data)
    except ValueError:
        raise GatewayError(f"the answer is not JSON: {data[:200]!r}") from None
