#!/usr/bin/env python3
"""What `enclave status` reads on a node, printed as one JSON object. Reads only; standard library only.

Run by the engine role's status task (`ansible.builtin.script`, from the controller's copy). The script module
sends this one file, without its siblings in hosttools/: it must stay self-contained, importing the standard
library only (tests/unit/test_hosttools.py checks). It gathers raw
answers: the unit's state, the `current` link, the engine's /health and /metrics (from the node itself, on its
private address), nvidia-smi's CSV. The controller parses them (enclave.status), where they are unit-tested.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

GPU_QUERY = "index,name,memory.used,memory.total,utilization.gpu"


def unit_state(unit: str) -> dict[str, str]:
    props = "LoadState,ActiveState,SubState,Result,UnitFileState,ActiveEnterTimestamp"
    proc = subprocess.run(["systemctl", "show", unit, f"--property={props}"], capture_output=True, text=True,
                          timeout=20, check=False)
    state = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0:
        state["error"] = proc.stderr.strip()[:300]
    return state


def current_revision(model_root: str) -> dict[str, str | None]:
    try:
        return {"current": str((Path(model_root) / "current").readlink())}
    except FileNotFoundError:
        return {"current": None}
    except OSError as exc:
        return {"current": None, "current_error": str(exc)}


def fetch(url: str, timeout: float) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - the node's own engine
            body = reply.read(4 * 1024 * 1024).decode("utf-8", "replace")
            return {"status": reply.status, "body": body}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": ""}
    except (OSError, ValueError) as exc:
        return {"error": str(getattr(exc, "reason", exc))[:300]}


def engine_http(url: str, samples: int, gap: float) -> dict[str, object]:
    health = fetch(f"{url}/health", 5)
    health.pop("body", None)
    pages = []
    for i in range(samples):
        if i:
            time.sleep(gap)
        at = time.time()
        page = fetch(f"{url}/metrics", 10)
        # only the engine's own series travel back; the page's comments and the process collectors stay here
        text = "\n".join(ln for ln in str(page.pop("body", "")).splitlines() if ln.startswith("vllm:"))
        pages.append({"at": at, "text": text, **page})
    return {"health": health, "metrics": pages}


def gpus() -> dict[str, object]:
    if shutil.which("nvidia-smi") is None:
        return {"absent": "nvidia-smi is not installed"}
    try:
        proc = subprocess.run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv"], capture_output=True,
                              text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "nvidia-smi did not answer within 30 s"}
    if proc.returncode != 0:
        return {"error": (proc.stdout + proc.stderr).strip()[:300] or f"nvidia-smi exited {proc.returncode}"}
    return {"csv": proc.stdout}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--unit", required=True)
    parser.add_argument("--model-root", required=True)
    parser.add_argument("--url", default="", help="the engine's base URL (replica heads only)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--gap", type=float, default=2.0)
    args = parser.parse_args(argv)
    report: dict[str, object] = {"engine": unit_state(args.unit), **current_revision(args.model_root),
                                 "gpus": gpus()}
    if args.url:
        report.update(engine_http(args.url.rstrip("/"), max(1, args.samples), max(0.0, args.gap)))
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
