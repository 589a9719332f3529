#!/usr/bin/env python3
"""The gateway's access log (nginx's `enclave` log_format, one JSON record per request): its token accounting.

Runs on the gateway, without the enclave package: imported by signals.py from the installed hosttools/, and sent
alone by the gateway role's `script` task (`enclave usage`), without its siblings. So it must stay self-contained,
importing the standard library only (tests/unit/test_hosttools.py checks). Two readers:

- `Tally` + `read_new`: the records appended since the last read (offset and inode kept in a state file; a log
  rotated since is finished from its `.1` first), added to running totals that only grow, for the usage counters
  the monitoring role's signals tool exports (enclave_gateway_tokens_total, enclave_gateway_requests_total).
- `sums` (`accesslog.py sums --log FILE --since UNIX_TIME`): per client and model, the requests and tokens of the
  records in a window, over the log and its rotated copies (`.1`, `.N.gz`), as JSON for `enclave usage`.

A record holds the client's name, never its key or the prompt (nginx.conf.j2's log_format).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("prompt", "completion")
_ROTATED = re.compile(r"\.([0-9]+)(\.gz)?$")


@dataclass(frozen=True)
class Record:
    when: float  # Unix time the request ended
    client: str
    model: str
    status: str
    prompt_tokens: int
    completion_tokens: int


def parse(line: str) -> Record | None:
    """One log line as a Record; None for a line that is not a complete record of this format."""
    try:
        raw = json.loads(line)
        when = dt.datetime.fromisoformat(str(raw["time"])).timestamp()
        return Record(when=when, client=str(raw.get("client") or ""), model=str(raw.get("model") or ""),
                      status=str(raw.get("status", "")), prompt_tokens=max(0, int(raw.get("prompt_tokens") or 0)),
                      completion_tokens=max(0, int(raw.get("completion_tokens") or 0)))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


@dataclass
class Tally:
    """Running totals: tokens[(client, model, kind)] and requests[(client, model, status)]."""

    tokens: dict[tuple[str, str, str], int] = field(default_factory=dict)
    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        for kind, count in zip(KINDS, (record.prompt_tokens, record.completion_tokens), strict=True):
            key = (record.client, record.model, kind)
            self.tokens[key] = self.tokens.get(key, 0) + count
        key = (record.client, record.model, record.status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"tokens": [[*k, v] for k, v in sorted(self.tokens.items())],
                "requests": [[*k, v] for k, v in sorted(self.requests.items())]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        return cls(tokens={(str(a), str(b), str(c)): int(v) for a, b, c, v in data.get("tokens", [])},
                   requests={(str(a), str(b), str(c)): int(v) for a, b, c, v in data.get("requests", [])})


def _complete_lines(handle: Any, offset: int) -> Iterator[tuple[bytes, int]]:
    """Each whole line from `offset` on with the offset after it, read as a stream (a first read of a large log
    holds one line at a time); a line nginx is still writing waits for the next read."""
    handle.seek(offset)
    for line in handle:
        if not line.endswith(b"\n"):
            return
        offset += len(line)
        yield line, offset


def read_new(log: Path, state_file: Path) -> Tally:
    """The running totals with the records appended since the last call added; the state file is rewritten."""
    try:
        state = json.loads(state_file.read_text())
        tally, inode, offset = Tally.from_json(state), int(state["inode"]), int(state["offset"])
    except (OSError, ValueError, KeyError, TypeError):
        tally, inode, offset = Tally(), -1, 0  # first read (or a state lost): count the log from its start

    def count(handle: Any, start: int) -> int:
        end = start
        for line, after in _complete_lines(handle, start):
            record = parse(line.decode("utf-8", "replace"))
            if record is not None:
                tally.add(record)
            end = after
        return end

    current = log.stat()
    if current.st_ino != inode and inode != -1:
        # Rotated since the last read: the rest of the old file is now `.1` (Debian's logrotate, delaycompress).
        old = log.with_name(log.name + ".1")
        if old.exists() and old.stat().st_ino == inode:
            with old.open("rb") as handle:
                count(handle, offset)
        offset = 0
    elif current.st_size < offset:
        offset = 0  # truncated in place (copytruncate)
    with log.open("rb") as handle:
        offset = count(handle, offset)
    _write_atomic(state_file, json.dumps({"inode": current.st_ino, "offset": offset, **tally.to_json()}))
    return tally


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_files(log: Path, since: float) -> list[Path]:
    """The log and its rotated copies that may hold records at or after `since` (a file last written before it
    holds none), oldest first."""
    rotated = sorted((p for p in log.parent.glob(log.name + ".*") if _ROTATED.search(p.name[len(log.name):])),
                     key=lambda p: -int(_ROTATED.search(p.name[len(log.name):]).group(1)))  # type: ignore[union-attr]
    return [p for p in [*rotated, log] if p.exists() and p.stat().st_mtime >= since]


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        yield from handle


def records(paths: Iterable[Path], since: float) -> Iterator[Record]:
    for path in paths:
        for line in _lines(path):
            record = parse(line)
            if record is not None and record.when >= since:
                yield record


def sums(paths: Iterable[Path], since: float) -> dict[str, Any]:
    """{"clients": {client: {model: {requests, prompt_tokens, completion_tokens}}}, "records": n, "first": t,
    "last": t} of the records at or after `since`."""
    clients: dict[str, dict[str, dict[str, int]]] = {}
    count, first, last = 0, None, None
    for record in records(paths, since):
        row = clients.setdefault(record.client, {}).setdefault(
            record.model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        row["requests"] += 1
        row["prompt_tokens"] += record.prompt_tokens
        row["completion_tokens"] += record.completion_tokens
        count += 1
        first = record.when if first is None else min(first, record.when)
        last = record.when if last is None else max(last, record.when)
    return {"clients": clients, "records": count, "first": first, "last": last}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="accesslog.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sums", help="per client and model: requests and tokens since a time, as JSON")
    s.add_argument("--log", required=True, help="the gateway's access log")
    s.add_argument("--since", type=float, default=0.0, help="Unix time: only records from then on")
    args = p.parse_args(argv)
    log = Path(args.log)
    if not log.exists():
        print(f"accesslog: {log}: no such file (has the gateway served a request?)", file=sys.stderr)
        return 2
    print(json.dumps(sums(log_files(log, args.since), args.since), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
