"""A client of the gateway, as an application would be one: TLS verified against the kit's CA, a named key."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.errors import EnclaveError, UsageError

CHAT_PATH = "/v1/chat/completions"


class GatewayError(EnclaveError):
    """The gateway refused or failed the request (status and body say why)."""


@dataclass(frozen=True)
class GatewayTarget:
    address: str
    port: int
    ca: Path | None  # None: the system's trust store (an operator's own certificate)


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
