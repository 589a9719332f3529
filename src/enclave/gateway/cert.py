"""The gateway's TLS certificate as its clients see it: when it expires, and whether that is too soon.

`enclave verify`, `enclave status` and `enclave cert renew` read it the same way, with a TLS handshake from the
controller verified like any client's, so each reports the certificate nginx serves now (after a reload), not a
file beside it. The margin is one inventory setting, `enclave_cert_warn_days` (the enclave role's default), which
the monitoring role's expiry alert uses too.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from enclave.errors import EnclaveError
from enclave.gateway.client import GatewayTarget
from enclave.roles import role_data

WARN_DAYS_VAR = "enclave_cert_warn_days"
_DAY_S = 86400


class CertError(EnclaveError):
    """The gateway's certificate could not be read (no TLS, or it does not verify)."""


@dataclass(frozen=True)
class ServedCert:
    not_after: datetime  # UTC
    serial: str  # hex, as the certificate carries it
    subject: str


def warn_days(hostvars: dict[str, Any] | None = None) -> int:
    """The margin for this gateway: its inventory value, else the enclave role's default."""
    value = (hostvars or {}).get(WARN_DAYS_VAR, role_data("enclave")[WARN_DAYS_VAR])
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EnclaveError(f"{WARN_DAYS_VAR}: {value!r} is not a number of days") from None


def from_peer(peer: dict[str, Any]) -> ServedCert:
    """A verified peer certificate (ssl.SSLSocket.getpeercert()) as a ServedCert."""
    try:
        not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(peer["notAfter"]), UTC)
    except (KeyError, ValueError) as exc:
        raise CertError(f"the certificate carries no readable notAfter: {exc}") from None
    subject = ", ".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn)
    return ServedCert(not_after, str(peer.get("serialNumber", "")), subject)


def served(target: GatewayTarget, *, timeout: float = 10) -> ServedCert:
    """The certificate the gateway serves, read with a verified TLS handshake (the kit's CA, or the system's trust
    store for an operator's certificate)."""
    if target.ca is not None and not target.ca.is_file():
        raise CertError(f"no CA certificate at {target.ca}: the gateway role writes it there on deploy")
    context = ssl.create_default_context(cafile=str(target.ca) if target.ca else None)
    try:
        with socket.create_connection((target.address, target.port), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=target.address) as tls:
            peer = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        raise CertError(f"{target.address}:{target.port}: the certificate does not verify: "
                        f"{exc.verify_message}") from None
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"{target.address}:{target.port}: no TLS handshake: {exc}") from None
    if not peer:
        raise CertError(f"{target.address}:{target.port}: the handshake gave no certificate")
    return from_peer(peer)


def days_left(cert: ServedCert, now: datetime) -> float:
    return (cert.not_after - now).total_seconds() / _DAY_S


def describe(cert: ServedCert, now: datetime) -> str:
    """`valid until 2027-01-05 12:00 UTC (397 days)`, or `expired 2026-01-05 12:00 UTC (3 days ago)`."""
    when = cert.not_after.strftime("%Y-%m-%d %H:%M UTC")
    left = days_left(cert, now)
    if left <= 0:
        return f"expired {when} ({_span(-left)} ago)"
    return f"valid until {when} ({_span(left)})"


def _span(days: float) -> str:
    """Whole days, rounded down; under two days in hours, so a certificate with 20 hours left never reads `0 days`."""
    if days >= 2:
        return f"{int(days)} days"
    hours = int(days * 24)
    return f"{hours} hour{'' if hours == 1 else 's'}"


def problem(cert: ServedCert, now: datetime, warn: int) -> str | None:
    """What is wrong with the certificate's lifetime, or None when it has more than `warn` days left."""
    if days_left(cert, now) <= 0:
        return f"the TLS certificate {describe(cert, now)}: `enclave cert renew`"
    if days_left(cert, now) < warn:
        return (f"the TLS certificate expires within {warn} days ({describe(cert, now)}): "
                "`enclave cert renew`")
    return None


def status_of(target: GatewayTarget, warn: int, now: datetime) -> tuple[str, str | None]:
    """(what `enclave status` shows, a warning or None) for the certificate the gateway serves now."""
    try:
        cert = served(target)
    except CertError as exc:
        return f"unreadable ({exc})", f"cannot read the TLS certificate: {exc}"
    return describe(cert, now), problem(cert, now, warn)
