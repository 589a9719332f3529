"""The offline self-test (`enclave kit check`, run first by import): everything the roles will ask for with this
inventory is in the kit, before any host is touched. Packages are checked by name and then resolved, with their
dependencies, by apt itself against the kit's repository alone (a scratch APT root, nothing assumed installed)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from enclave.errors import UsageError
from enclave.kit import build, content

LOCK_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+) --hash=sha256:([0-9a-f]{64})$")


class KitIncomplete(UsageError):
    """The kit lacks something this inventory needs: exit 2, before any host is touched."""


def repo_packages(root: Path) -> set[str]:
    index = root / build.APT_DIR / "Packages"
    if not index.is_file():
        return set()
    return {line.split(":", 1)[1].strip() for line in index.read_text().splitlines() if line.startswith("Package:")}


def apt_simulate(root: Path, packages: list[str], scratch: Path) -> str | None:
    """apt's complaint when the packages cannot be installed from the kit's repository alone, else None."""
    for d in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
              "var/cache/apt/archives/partial", "var/lib/dpkg"):
        (scratch / d).mkdir(parents=True, exist_ok=True)
    (scratch / "var/lib/dpkg/status").write_text("")
    keyring = scratch / "kit.gpg"
    subprocess.run(["gpg", "--batch", "--yes", "--dearmor", "-o", str(keyring), str(root / build.APT_KEY)],
                   check=True, capture_output=True)
    (scratch / "etc/apt/sources.list").write_text(f"deb [signed-by={keyring}] file:{root / build.APT_DIR} ./\n")
    opts = ["-o", f"Dir={scratch}", "-o", f"Dir::State::status={scratch}/var/lib/dpkg/status",
            "-o", "Dir::Etc::trusted=/dev/null", "-o", "Dir::Etc::trustedparts=/dev/null",
            "-o", "Debug::NoLocking=1", "-o", "APT::Install-Recommends=false"]
    for argv in (["apt-get", *opts, "update"], ["apt-get", *opts, "--simulate", "install", *packages]):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        said = proc.stdout + proc.stderr
        if proc.returncode != 0 or "W: GPG error" in said or "NO_PUBKEY" in said:
            return " | ".join(line for line in said.splitlines() if line.startswith(("E:", "W:", " ")))[:600]
    return None


def lock_problems(root: Path, rel: str, files: dict[str, str], must_hold: list[str]) -> list[str]:
    """A lock the kit holds, each of its hashes a wheel of the kit, and the distributions it must pin."""
    lock = root / rel
    if not lock.is_file():
        return [f"{rel}: missing"]
    hashes = set(files.values())
    pinned, problems = set(), []
    for line in lock.read_text().splitlines():
        match = LOCK_LINE.match(line.strip())
        if match:
            pinned.add(_norm(match[1]))
            if match[3] not in hashes:
                problems.append(f"{rel}: {match[1]}=={match[2]} has no wheel with its sha256 in the kit")
    problems += [f"{rel}: does not pin {name}" for name in must_hold if _norm(name) not in pinned]
    return problems


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]


def problems(root: Path, document: dict[str, Any], plan: dict[str, Any], roles_dir: Path) -> list[str]:
    """One line per thing the inventory needs that the kit (whose verified manifest is `document`) lacks."""
    files = {f["path"]: f["sha256"] for f in document["files"]}
    found: list[str] = []
    # The roles' lists only: the check runs inside, where the controller has no hub client to ask for its version
    # (the kit's own lock names it).
    needed = [p for group in content.plan_packages(plan, roles_dir) for p in group]
    held = repo_packages(root)
    found += [f"package {name}: not in the kit's apt repository ({build.APT_DIR}/Packages)"
              for name in needed if name not in held]
    present = [name for name in needed if name in held]
    if present and not found:
        with tempfile.TemporaryDirectory(prefix="enclave-kit-apt-") as tmp:
            said = apt_simulate(root, present, Path(tmp))
        if said:
            found.append(f"{build.APT_DIR}: apt cannot install the packages from the kit alone: {said}")
    controller = ["llm-enclave", *(_requirement_name(r) for r in content.controller_requirements())]
    found += lock_problems(root, "wheels/controller/requirements.txt", files, controller)
    found += lock_problems(root, "wheels/hub-client/requirements.txt", files, [content.HUB_CLIENT])
    engine = content.engine_build(plan).name
    if not any(p.startswith(f"wheels/engine/{engine}/") for p in files):
        found.append(f"wheels/engine/{engine}: missing (the engine wheelhouse this plan's nodes install)")
    else:
        lock = f"wheels/engine/{engine}/requirements.txt"
        found += lock_problems(root, lock, files, ["vllm"])
        if content.has_gpus(plan) and (root / lock).is_file():
            found += [f"{lock}: {m[1]}=={m[2]} is a CPU-only build (the GPU nodes would run without their GPUs)"
                      for m in map(LOCK_LINE.match, (root / lock).read_text().splitlines())
                      if m and m[2].endswith("+cpu")]
    bundle = f"weights/{str(plan['repo']).replace('/', '--')}--{plan['revision']}/BUNDLE.json"
    if bundle not in files:
        found.append(f"{bundle}: missing (the plan's model at its pinned revision)")
    return found


def check(root: Path, document: dict[str, Any], plan: dict[str, Any], roles_dir: Path) -> None:
    found = problems(root, document, plan, roles_dir)
    if found:
        raise KitIncomplete(f"{root}: the kit lacks what this inventory needs: " + "; ".join(found[:20])
                            + (f"; and {len(found) - 20} more" if len(found) > 20 else ""))
