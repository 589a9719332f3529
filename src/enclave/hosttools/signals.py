#!/usr/bin/env python3
"""The kit's own signals as node exporter textfile metrics, rewritten by `enclave-signals.timer` on every host.

Installed with the other on-host tools as hosttools/ on every host (python3, no enclave package: standard library
only, see __init__.py) and run by path from enclave-signals.service.

    signals.py --out DIR [--nft-table enclave] [--model-dir DIR --nodetool PATH --allowed-signers FILE
               --identity ID] [--drained-file FILE] [--cert FILE] [--access-log FILE --access-state FILE]

What it reads, each part only when its option is given (a node has weights, the gateway the drained list and the
certificate): the firewall's named counters (`nft -j list counters table inet TABLE`), the served model's active
revision, whether its manifest's signature verifies (`nodetool.py verify-signature`) and when its files were last
verified (the stamp cache's time), free space under the models directory, the replicas drained at the gateway, the
gateway certificate's notAfter and, from the gateway's access log read since the last run (accesslog.py, its
sibling), the requests and tokens per client and model. A source that cannot be read sets
`enclave_signals_error{source=...} 1` and the others are still written. The file is written to a temporary name
(not `*.prom`, which the collector would read half-written) and renamed over `enclave.prom`, so the node exporter
sees the old or the new file, never half.
Exit 0 when the file was written, 2 on bad usage or when it could not be written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

if not __package__:
    # Run by path, as on the hosts: no package, so the relative imports below would fail. See __init__.py.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = Path(__file__).resolve().parent.name

from . import accesslog
from .common import STAMPS_NAME

OUT_NAME = "enclave.prom"
Runner = Callable[[list[str]], subprocess.CompletedProcess]


@dataclass
class Metric:
    name: str
    kind: str  # gauge or counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The Prometheus text exposition format: HELP and TYPE once per name, then its samples."""
    lines = []
    for metric in metrics:
        if not metric.samples:
            continue
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
        for labels, value in metric.samples:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{metric.name}{{{inner}}} {_number(value)}" if inner else f"{metric.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def parse_nft_counters(text: str, table: str) -> dict[str, tuple[int, int]]:
    """{counter name: (packets, bytes)} of the named counters in `nft -j list counters` output for `table`."""
    data = json.loads(text)
    found = {}
    for item in data.get("nftables", []):
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and counter.get("table") == table:
            found[str(counter["name"])] = (int(counter.get("packets", 0)), int(counter.get("bytes", 0)))
    if not found:
        raise ValueError(f"no counters of table {table} in nft's output")
    return found


def firewall_metrics(counters: dict[str, tuple[int, int]]) -> list[Metric]:
    packets = Metric("enclave_firewall_packets_total", "counter",
                     "Packets counted by the enclave nftables table's named counters (egress_public, dropped_*).")
    octets = Metric("enclave_firewall_bytes_total", "counter", "Bytes counted by the enclave table's named counters.")
    for name, (n_packets, n_bytes) in sorted(counters.items()):
        packets.samples.append(({"counter": name}, n_packets))
        octets.samples.append(({"counter": name}, n_bytes))
    return [packets, octets]


def parse_drained(text: str) -> list[str]:
    """The replica heads in the gateway's drained list (one per line; `#` lines are the header)."""
    return sorted({line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")})


def drained_metrics(hosts: list[str]) -> list[Metric]:
    count = Metric("enclave_gateway_drained_replicas", "gauge", "Replicas taken out of the gateway's rotation.")
    count.samples.append(({}, len(hosts)))
    each = Metric("enclave_gateway_replica_drained", "gauge", "1 for each replica head drained at the gateway.")
    each.samples += [({"replica_host": host}, 1) for host in hosts]
    return [count, each]


def cert_not_after(path: Path) -> float:
    """The certificate's notAfter as a Unix time (CPython's own PEM decoder: no openssl binary needed)."""
    decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return float(ssl.cert_time_to_seconds(decoded["notAfter"]))


def cert_metrics(not_after: float) -> list[Metric]:
    metric = Metric("enclave_gateway_tls_cert_not_after_timestamp_seconds", "gauge",
                    "When the gateway's TLS certificate expires (Unix time).")
    metric.samples.append(({}, not_after))
    return [metric]


def usage_metrics(tally: accesslog.Tally) -> list[Metric]:
    """The gateway's running totals per client and model. Labels are client, model, kind and status: none of
    them a label Prometheus's scrape targets carry (host, replica, job, instance)."""
    tokens = Metric("enclave_gateway_tokens_total", "counter",
                    "Tokens vLLM reported for the gateway's requests, per client, model and kind (prompt, completion).")
    tokens.samples += [({"client": c, "model": m, "kind": k}, n) for (c, m, k), n in sorted(tally.tokens.items())]
    requests = Metric("enclave_gateway_requests_total", "counter",
                      "Requests the gateway answered, per client, model and HTTP status.")
    requests.samples += [({"client": c, "model": m, "status": s}, n) for (c, m, s), n in sorted(tally.requests.items())]
    return [tokens, requests]


def weights_metrics(model_dir: Path, signature_ok: bool | None) -> list[Metric]:
    """The active revision (as a label), its signature check (None: not checked) and last verification time."""
    model = model_dir.name
    current = model_dir / "current"
    revision = str(current.readlink()) if current.is_symlink() else ""
    labels = {"model": model, "revision": Path(revision).name}
    active = Metric("enclave_weights_active_revision_info", "gauge", "The revision `current` points at (label).")
    active.samples.append((labels, 1 if revision else 0))
    metrics = [active]
    if signature_ok is not None:
        ok = Metric("enclave_weights_signature_ok", "gauge", "1 when the active manifest's signature verifies.")
        ok.samples.append((labels, 1 if signature_ok else 0))
        metrics.append(ok)
    stamps = model_dir / Path(revision).name / STAMPS_NAME if revision else None
    if stamps is not None and stamps.is_file():
        verified = Metric("enclave_weights_last_verified_timestamp_seconds", "gauge",
                          "When the active revision's files were last verified (the stamp cache's time).")
        verified.samples.append((labels, stamps.stat().st_mtime))
        metrics.append(verified)
    free = Metric("enclave_models_disk_free_bytes", "gauge", "Free bytes under the models directory.")
    stat = os.statvfs(model_dir if model_dir.exists() else model_dir.parent)
    free.samples.append(({"path": str(model_dir.parent)}, stat.f_bavail * stat.f_frsize))
    metrics.append(free)
    return metrics


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def collect(args: argparse.Namespace, run: Runner = _run, now: Callable[[], float] = time.time) -> list[Metric]:
    """Every metric the options ask for; a failed source becomes enclave_signals_error{source} 1."""
    metrics: list[Metric] = []
    errors = Metric("enclave_signals_error", "gauge", "1 when a source of the kit's signals could not be read.")

    def attempt(source: str, read: Callable[[], list[Metric]]) -> None:
        try:
            metrics.extend(read())
            errors.samples.append(({"source": source}, 0))
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            print(f"signals: {source}: {exc}", file=sys.stderr)
            errors.samples.append(({"source": source}, 1))

    def nft() -> list[Metric]:
        proc = run(["nft", "-j", "list", "counters", "table", "inet", args.nft_table])
        if proc.returncode != 0:
            raise ValueError(f"nft exited {proc.returncode}: {proc.stderr.strip()}")
        return firewall_metrics(parse_nft_counters(proc.stdout, args.nft_table))

    def weights() -> list[Metric]:
        ok = None
        current = Path(args.model_dir) / "current"
        if args.nodetool and current.is_symlink():
            proc = run([sys.executable, args.nodetool, "verify-signature", str(current.resolve()),
                        "--allowed-signers", args.allowed_signers, "--identity", args.identity])
            ok = proc.returncode == 0
        return weights_metrics(Path(args.model_dir), ok)

    if args.nft_table:
        attempt("nft", nft)
    if args.model_dir:
        attempt("weights", weights)
    if args.drained_file:
        attempt("drained", lambda: drained_metrics(
            parse_drained(Path(args.drained_file).read_text()) if Path(args.drained_file).exists() else []))
    if args.cert:
        attempt("cert", lambda: cert_metrics(cert_not_after(Path(args.cert))))
    if args.access_log:
        attempt("usage", lambda: usage_metrics(accesslog.read_new(Path(args.access_log), Path(args.access_state))))
    last = Metric("enclave_signals_last_run_timestamp_seconds", "gauge", "When these signals were written.")
    # Truncated to the millisecond, not rounded: rounding could stamp a moment that has not happened yet.
    last.samples.append(({}, math.floor(now() * 1000) / 1000))
    return [*metrics, errors, last]


def write_atomic(directory: Path, text: str) -> Path:
    path = directory / OUT_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{OUT_NAME}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            os.fchmod(handle.fileno(), 0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="signals.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the node exporter's textfile directory")
    p.add_argument("--nft-table", default="", help="the kit's nftables table (inet family)")
    p.add_argument("--model-dir", default="", help="the served model's directory (holds `current`)")
    p.add_argument("--nodetool", default="", help="the weights tool, to verify the active manifest's signature")
    p.add_argument("--allowed-signers", default="")
    p.add_argument("--identity", default="")
    p.add_argument("--drained-file", default="", help="the gateway's drained list")
    p.add_argument("--cert", default="", help="the gateway's TLS certificate (PEM)")
    p.add_argument("--access-log", default="", help="the gateway's access log (enclave log_format)")
    p.add_argument("--access-state", default="", help="where the access log's read offset and totals are kept")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.nodetool and not (args.allowed_signers and args.identity):
        print("signals: --nodetool needs --allowed-signers and --identity", file=sys.stderr)
        return 2
    if bool(args.access_log) != bool(args.access_state):
        print("signals: --access-log and --access-state go together", file=sys.stderr)
        return 2
    out = Path(args.out)
    if not out.is_dir():
        print(f"signals: --out {out}: no such directory", file=sys.stderr)
        return 2
    try:
        write_atomic(out, render(collect(args)))
    except OSError as exc:
        print(f"signals: cannot write {out / OUT_NAME}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
