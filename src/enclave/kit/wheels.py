"""Hash-locked wheelhouses for the kit: `pip download` into a directory, then requirements.txt with one
`name==version --hash=sha256:...` line per wheel, which `pip install --no-index --find-links DIR --require-hashes
-r requirements.txt` installs and nothing else (the same lock format as the engine wheelhouse and hub client)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from enclave.engine.wheelhouse import requirements_lines
from enclave.errors import EnclaveError

LOCK = "requirements.txt"


def download(dest: Path, requirements: Sequence[str], *, pip_args: Sequence[str] = (),
             local_wheels: Sequence[Path] = ()) -> Path:
    """Wheels for the requirements (binary only: the inside builds nothing), plus local wheels; the lock."""
    dest.mkdir(parents=True, exist_ok=True)
    if requirements:
        argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--progress-bar", "off",
                "--dest", str(dest), *pip_args, *requirements]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise EnclaveError(f"{dest.name}: pip download {' '.join(requirements)} failed "
                               f"(exit {proc.returncode}): {tail}")
    for wheel in local_wheels:
        (dest / wheel.name).write_bytes(wheel.read_bytes())
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise EnclaveError(f"{dest.name}: no wheels to lock")
    lock = dest / LOCK
    lock.write_text(f"# {dest.name}: pip install --no-index --find-links . --require-hashes -r {LOCK}\n"
                    + "\n".join(requirements_lines(wheels)) + "\n")
    return lock


def checkout() -> Path | None:
    """The checkout this enclave runs from, when it does (an installed wheel cannot rebuild itself)."""
    top = Path(__file__).resolve().parents[3]
    return top if (top / "pyproject.toml").is_file() and (top / "playbooks" / "site.yml").is_file() else None


def build_own_wheel(source: Path, dest: Path, *, isolated: bool = True) -> Path:
    """The enclave wheel from a checkout (it is not on PyPI): `pip wheel --no-deps`. isolated=False builds with
    this environment's hatchling instead of fetching it."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(dest), str(source)]
    if not isolated:
        argv.insert(5, "--no-build-isolation")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800, stdin=subprocess.DEVNULL)
    built = sorted(dest.glob("llm_enclave-*.whl"))
    if proc.returncode != 0 or not built:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise EnclaveError(f"controller wheelhouse: building the enclave wheel from {source} failed: {tail}")
    return built[-1]
