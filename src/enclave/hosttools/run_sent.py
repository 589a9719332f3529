#!/usr/bin/env python3
"""Run one tool of this package from the controller's copy, sent on stdin, without installing anything.

A read-only task that must answer from a host whose installed tools are older or missing (`nodetool status`,
weights/tasks/status.yml) cannot use the `script` module: it sends one file, and nodetool needs its siblings. This
file is sent instead, as `python3 -c`, with every file of the package as JSON `{name: text}` on stdin:

    python3 -c "$(cat run_sent.py)" TOOL.py ARGS... < sources.json

It writes them into a private temporary directory as hosttools/ (removed afterwards, as `script` removes its copy)
and runs TOOL.py there by path, with ARGS; its output and exit code are the tool's. Standard library only, and
nothing of this package: it runs before the package is there.
"""

from __future__ import annotations

import json
import runpy
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("run_sent: usage: run_sent.py TOOL.py [ARGS...] < sources.json")
    sources = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="enclave-hosttools-") as tmp:
        folder = Path(tmp) / "hosttools"
        folder.mkdir()
        for name, text in sources.items():
            if "/" in name or not name.endswith(".py"):
                raise SystemExit(f"run_sent: {name!r} is not a file name of the package")
            (folder / name).write_text(text, encoding="utf-8")
        tool = folder / Path(argv[0]).name
        sys.argv = [str(tool), *argv[1:]]
        runpy.run_path(str(tool), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
