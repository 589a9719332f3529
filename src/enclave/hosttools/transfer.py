#!/usr/bin/env python3
"""The on-host transfer tool: a pipelined relay for fan-out, and a resuming HTTP fetch.

Installed with nodetool.py as hosttools/ on staging and GPU hosts (python3, standard library only: see
__init__.py) and run as `python3 .../hosttools/transfer.py VERB ...`.

    transfer relay-receive --listen ADDR:PORT --dest DIR --want FILE [--forward HOST:PORT] [--accept-from ADDR]
    transfer relay-send --to HOST:PORT --source DIR --files FILE
    transfer http-fetch --url BASE_URL --dest DIR --expect-out FILE

The relay is a chain: staging sends one tar stream (POSIX pax, the format GNU tar and every archiver reads) to the
first node, which forwards every byte to the next while it writes the files it wants, and so on. Each node's NIC
carries each byte in once and out once, so placing a model on N nodes takes about as long as on one (plus one
buffer's delay per hop), where N nodes pulling from staging at once share staging's one uplink. Nothing here is
trusted: every node verifies what it got against the signed manifest before activation.

A receiver acknowledges by closing its upstream socket only after it has written its files and its own downstream
has closed, so `relay-send` returning 0 means the whole chain finished.

The HTTP fetch reads BASE_URL/MANIFEST.sha256 (or SHA256SUMS), then each listed file, resuming a partial file with a
Range request, and writes the expected sizes and hashes for `nodetool manifest build --expect-json`.

Every verb takes `--json`. Exit codes: 0 done, 1 the transfer failed, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

if not __package__:
    # Run by path, as on the hosts: no package, so the relative import below would fail. See __init__.py.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = Path(__file__).resolve().parent.name

from .manifest import sums_line

CHUNK = 4 * 1024 * 1024
CONNECT_PATIENCE_S = 120.0  # the next hop is started by the same Ansible task; allow for a slow host
IO_TIMEOUT_S = 600.0  # a stalled peer fails the relay instead of hanging it forever


class TransferError(Exception):
    exit_code = 1


class InputError(TransferError):
    exit_code = 2


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def safe_rel(name: str) -> str:
    """A member name that stays inside the destination: relative, no '..', no empty or odd parts."""
    path = PurePosixPath(name)
    if (not name or path.is_absolute() or any(p in ("", ".", "..") for p in name.split("/"))
            or any(ord(c) < 32 for c in name)):
        raise TransferError(f"refusing path {name!r} from the relay stream: not a plain relative path")
    return str(path)


def read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read file list {path}: {e.strerror}") from e
    names = json.loads(text) if text.lstrip().startswith("[") else text.splitlines()
    return [safe_rel(str(n)) for n in names if str(n).strip()]


# ---------------------------------------------------------------------------------------------------------------
# Relay


@dataclass
class RelayReport:
    role: str
    bytes_streamed: int = 0  # bytes of the tar stream that passed through this host
    bytes_written: int = 0  # bytes of files this host wrote for itself
    files_written: int = 0
    forwarded_to: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["bytes_per_second"] = int(self.bytes_streamed / self.seconds) if self.seconds > 0 else None
        return data


class _Tee:
    """A read-only file over the upstream socket that forwards every byte it reads to the next hop."""

    def __init__(self, upstream: socket.socket, downstream: socket.socket | None) -> None:
        self.upstream = upstream
        self.downstream = downstream
        self.count = 0

    def read(self, size: int = CHUNK) -> bytes:
        data = self.upstream.recv(min(size if size > 0 else CHUNK, CHUNK))
        if data:
            self.count += len(data)
            if self.downstream is not None:
                self.downstream.sendall(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def connect(target: tuple[str, int], patience: float = CONNECT_PATIENCE_S) -> socket.socket:
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            sock = socket.create_connection(target, timeout=IO_TIMEOUT_S)
        except OSError as e:
            if time.monotonic() + delay > deadline:
                raise TransferError(f"cannot connect to {target[0]}:{target[1]} within {patience:.0f} s: "
                                    f"{e.strerror or e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock


def accept_one(listen: tuple[str, int], accept_from: str | None, patience: float) -> socket.socket:
    server = socket.socket(socket.AF_INET6 if ":" in listen[0] else socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(listen)
    except OSError as e:
        raise TransferError(f"cannot listen on {listen[0]}:{listen[1]}: {e.strerror}") from e
    server.listen(4)
    deadline = time.monotonic() + patience
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransferError(f"no sender connected to {listen[0]}:{listen[1]} within {patience:.0f} s")
            server.settimeout(left)
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            if accept_from and peer[0] != accept_from:
                conn.close()  # only the planned upstream may feed this host
                continue
            conn.settimeout(IO_TIMEOUT_S)
            return conn
    finally:
        server.close()


def _write_member(stream: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> int:
    source = stream.extractfile(member)
    if source is None:
        raise TransferError(f"{member.name}: not a regular file in the relay stream")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise TransferError(f"{target} exists and is not a regular file; not overwriting it")
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
        out.flush()
        os.fsync(out.fileno())
    target.chmod(0o644)
    os.utime(target, (member.mtime, member.mtime))
    return member.size


def relay_receive(listen: tuple[str, int], dest: Path, want: set[str], forward: tuple[str, int] | None,
                  accept_from: str | None, patience: float) -> RelayReport:
    report = RelayReport(role="receiver")
    upstream = accept_one(listen, accept_from, patience)
    started = time.monotonic()
    downstream = None
    try:
        if forward:
            downstream = connect(forward)
            report.forwarded_to = f"{forward[0]}:{forward[1]}"
        tee = _Tee(upstream, downstream)
        with tarfile.open(fileobj=tee, mode="r|", bufsize=CHUNK) as stream:  # type: ignore[call-overload]
            for member in stream:
                rel = safe_rel(member.name)
                if not member.isfile():
                    raise TransferError(f"{rel}: only regular files travel in the relay stream")
                if rel in want:
                    report.bytes_written += _write_member(stream, member, dest / rel)
                    report.files_written += 1
        tee.drain()  # the end-of-archive padding belongs downstream too
        report.bytes_streamed = tee.count
        if downstream is not None:
            downstream.shutdown(socket.SHUT_WR)
            while downstream.recv(65536):  # the next hop closes once it and everything after it is done
                pass
    finally:
        if downstream is not None:
            downstream.close()
        upstream.close()
    report.seconds = time.monotonic() - started
    return report


class _SocketWriter:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        self.count += len(data)
        return len(data)


def relay_send(target: tuple[str, int], source: Path, files: list[str]) -> RelayReport:
    report = RelayReport(role="sender", forwarded_to=f"{target[0]}:{target[1]}")
    for rel in files:
        if not (source / rel).is_file():
            raise InputError(f"{source / rel} is not a regular file; cannot send it")
    sock = connect(target)
    started = time.monotonic()
    try:
        writer = _SocketWriter(sock)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          bufsize=CHUNK) as stream:
            for rel in files:
                info = stream.gettarinfo(str(source / rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with (source / rel).open("rb") as f:
                    stream.addfile(info, f)
                report.files_written += 1
                report.bytes_written += info.size
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
        report.bytes_streamed = writer.count
    finally:
        sock.close()
    report.seconds = time.monotonic() - started
    return report


# ---------------------------------------------------------------------------------------------------------------
# HTTP source


@dataclass
class FetchReport:
    files: int = 0
    bytes_total: int = 0
    bytes_downloaded: int = 0
    files_skipped: int = 0
    files_resumed: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def parse_sums(text: str, where: str) -> dict[str, dict[str, Any]]:
    """sha256sum lines (`HASH  PATH`), optionally with `# size: N PATH` lines as MANIFEST.sha256 carries them."""
    sizes: dict[str, int] = {}
    entries: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parsed = sums_line(line)
        if parsed is not None and parsed[0] == "size":
            sizes[safe_rel(parsed[2])] = int(parsed[1])
        elif parsed is not None:
            entries[safe_rel(parsed[2])] = {"sha256": parsed[1]}
        elif line.strip() and not line.startswith("#"):
            raise InputError(f"{where} line {number}: not a sha256sum line: {line[:80]!r}")
    if not entries:
        raise InputError(f"{where} lists no files")
    for rel, entry in entries.items():
        if rel in sizes:
            entry["size"] = sizes[rel]
    return entries


def _open(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http(s) checked by the caller
    try:
        return urllib.request.urlopen(request, timeout=60)  # noqa: S310
    except urllib.error.HTTPError as e:
        raise TransferError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise TransferError(f"{url}: {e.reason}") from e


def http_fetch(base_url: str, dest: Path, expect_out: Path) -> FetchReport:
    if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        raise InputError(f"{base_url!r} is not an http(s) URL")
    base = base_url.rstrip("/") + "/"
    report = FetchReport()
    started = time.monotonic()
    sums = None
    for name in ("MANIFEST.sha256", "SHA256SUMS"):
        try:
            with _open(base + name) as response:
                sums = parse_sums(response.read().decode("utf-8"), base + name)
            break
        except TransferError:
            continue
    if sums is None:
        raise TransferError(f"{base} serves neither MANIFEST.sha256 nor SHA256SUMS; an http source needs one")
    dest.mkdir(parents=True, exist_ok=True)
    for rel, entry in sorted(sums.items()):
        report.files += 1
        report.bytes_downloaded += _fetch_one(base + urllib.parse.quote(rel), dest / rel, entry, report)
        report.bytes_total += (dest / rel).stat().st_size
    expect_out.write_text(json.dumps(sums, indent=1, sort_keys=True))
    report.seconds = time.monotonic() - started
    return report


def _fetch_one(url: str, target: Path, entry: dict[str, Any], report: FetchReport) -> int:
    size = entry.get("size")
    have = target.stat().st_size if target.is_file() else 0
    if size is not None and have == size:
        report.files_skipped += 1  # complete; the manifest build hashes it
        return 0
    if size is not None and have > size:
        target.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open(url, headers) as response:
        resumed = have and response.status == 206
        if have and not resumed:
            have = 0  # the server ignored the range: start over
        if resumed:
            report.files_resumed += 1
        moved = 0
        with target.open("ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                moved += len(chunk)
    if size is not None and target.stat().st_size != size:
        raise TransferError(f"{url}: got {target.stat().st_size} bytes, the manifest says {size}")
    return moved


def expect_from_sums(directory: Path, expect_out: Path) -> dict[str, Any]:
    """Expectations from the checksums that came with a local source (an imported bundle's SHA256SUMS, or the
    MANIFEST.sha256 of a copy of a staged revision); an empty set when the source has none."""
    for name in ("MANIFEST.sha256", "SHA256SUMS"):
        path = directory / name
        if path.is_file():
            sums = parse_sums(path.read_text(encoding="utf-8"), str(path))
            expect_out.write_text(json.dumps(sums, indent=1, sort_keys=True))
            return {"from": str(path), "files": len(sums)}
    expect_out.write_text("{}")
    return {"from": None, "files": 0}


# ---------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enclave-transfer", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("relay-receive", help="receive one relay stream, keep the wanted files, forward the rest")
    p.add_argument("--listen", type=address, required=True)
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--want", type=Path, required=True, help="file listing the paths this host needs (JSON or lines)")
    p.add_argument("--forward", type=address, help="the next hop, HOST:PORT")
    p.add_argument("--accept-from", help="accept the stream only from this address")
    p.add_argument("--patience", type=float, default=600.0, help="seconds to wait for the sender (default 600)")
    p = verbs.add_parser("relay-send", help="send files to the first hop of a relay chain")
    p.add_argument("--to", type=address, required=True)
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--files", type=Path, required=True, help="file listing the paths to send (JSON or lines)")
    p = verbs.add_parser("http-fetch", help="fetch a model from a plain file server that serves a manifest")
    p.add_argument("--url", required=True)
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--expect-out", type=Path, required=True)
    p = verbs.add_parser("expect-from-sums", help="expectations from DIR/MANIFEST.sha256 or DIR/SHA256SUMS")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--expect-out", type=Path, required=True)
    for sub in verbs.choices.values():
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.verb == "relay-receive":
        if not args.dest.is_dir():
            raise InputError(f"{args.dest} is not a directory")
        return relay_receive(args.listen, args.dest, set(read_list(args.want)), args.forward, args.accept_from,
                             args.patience).to_json()
    if args.verb == "relay-send":
        return relay_send(args.to, args.source, read_list(args.files)).to_json()
    if args.verb == "expect-from-sums":
        return expect_from_sums(args.dir, args.expect_out)
    return http_fetch(args.url, args.dest, args.expect_out).to_json()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data, code = run(args), 0
    except (TransferError, OSError, tarfile.TarError) as e:
        code = getattr(e, "exit_code", 1)
        data = {"error": f"{e}"}
        print(f"enclave-transfer: error: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": code == 0, **data}))
    elif code == 0:
        print(" ".join(f"{k}={v}" for k, v in data.items()))
    return code


if __name__ == "__main__":
    sys.exit(main())
