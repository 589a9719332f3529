"""Check engine argument lists with vLLM's own parser, in an engine venv on this machine."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from enclave.errors import EnclaveError

_SCRIPT = Path(__file__).with_name("vllm_argcheck.py")


def check_serve_args(venv: Path, argvs: Sequence[Sequence[str]]) -> list[str | None]:
    """For each `vllm serve ...` argument list (without `vllm`): None if vLLM accepts it, else its message."""
    proc = subprocess.run([str(venv / "bin" / "python"), "-I", str(_SCRIPT)], input=json.dumps(list(map(list, argvs))),
                          capture_output=True, text=True, check=False, timeout=600,
                          env={"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise EnclaveError(f"vLLM's argument check could not run in {venv}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
