"""The sandbox's stand-in for the outside world of model weights: a hub-compatible mirror holding the generated tiny
model, and a wheelhouse with the huggingface_hub client the staging host fetches it with.

Both live in the controller's cache and are made once: the model is deterministic (so its commit id is stable across
machines and runs), and the wheelhouse is whatever pip resolves for the client version this controller runs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from enclave.engine.wheelhouse import requirements_lines
from enclave.errors import SandboxError
from enclave.hashing import sha256_file
from enclave.mirror.repo import publish
from enclave.sandbox import system
from enclave.sandbox.services import Daemon
from enclave.weights import TINY_MODEL_REPO, require_tiny_model_modules

HUB_PORT = 8809
WHEELS_PORT = 8810
HUB_CLIENT_DIST = "huggingface_hub"
_MODEL_FORMAT = "1"  # bump when the generator's output changes, so cached copies are remade


@dataclass(frozen=True)
class HubContent:
    root: Path  # mirror root served over the hub protocol
    repo: str
    revision: str  # the 40-hex commit the tiny model was published as
    wheels: Path  # directory served over plain HTTP; hub-client/ holds the staging host's client wheels
    client_lock_sha256: str  # of hub-client/requirements.txt: the pin the sandbox's inventory carries


def ensure(cache: Path, report: object = None) -> HubContent:
    say = report if callable(report) else (lambda _m: None)
    root = cache / "hub"
    revision = _ensure_model(cache, root, say)
    wheels = cache / "wheels"
    _ensure_client_wheels(wheels / "hub-client", say)
    lock = ensure_client_lock(wheels / "hub-client")
    return HubContent(root, TINY_MODEL_REPO, revision, wheels, sha256_file(lock))


def _ensure_model(cache: Path, root: Path, say: object) -> str:
    marker = cache / "tiny-model.json"
    recorded = json.loads(marker.read_text()) if marker.is_file() else {}
    org, name = TINY_MODEL_REPO.split("/")
    repo_dir = root / org / name
    if (recorded.get("format") == _MODEL_FORMAT and (repo_dir / "refs" / "main").is_file()
            and (repo_dir / recorded["revision"]).is_dir()):
        return str(recorded["revision"])
    require_tiny_model_modules()
    from enclave.sandbox.tinymodel import make_tiny_model  # numpy, safetensors, tokenizers: only when needed

    say(f"generating the sandbox's tiny model and publishing it as {TINY_MODEL_REPO} on the hub mirror")  # type: ignore[operator]
    source = cache / "tiny-model"
    shutil.rmtree(source, ignore_errors=True)
    make_tiny_model(source)
    revision = publish(root, TINY_MODEL_REPO, source)
    marker.write_text(json.dumps({"format": _MODEL_FORMAT, "revision": revision}))
    return revision


def _client_version() -> str:
    try:
        return metadata.version(HUB_CLIENT_DIST)
    except metadata.PackageNotFoundError as e:
        raise SandboxError("the sandbox serves the huggingface_hub client to its staging host and needs it here "
                           "to know which version: pip install 'llm-enclave[test]' (or huggingface_hub)") from e


def _ensure_client_wheels(dest: Path, say: object) -> None:
    version = _client_version()
    done = dest / ".complete"
    if done.is_file() and done.read_text().strip() == version:
        return
    say(f"downloading huggingface_hub {version} and its dependencies for the staging host")  # type: ignore[operator]
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    system.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                "--python-version", "3.11", "--dest", str(dest), f"{HUB_CLIENT_DIST}=={version}"])
    if not any(dest.glob("*.whl")):
        raise SandboxError(f"pip downloaded no wheels into {dest}")
    done.write_text(version + "\n")


def ensure_client_lock(wheels: Path) -> Path:
    """requirements.txt beside the client's wheels: every wheel as `name==version --hash=sha256:...`, what the
    staging host installs with `--require-hashes --no-deps`. Made from the wheels the sandbox downloaded itself
    (it is the connected machine here), so the digest it pins in the inventory is one it computed, not one the
    wheel server told it."""
    lock = wheels / "requirements.txt"
    text = ("# huggingface_hub for the staging host: pip install --no-deps --require-hashes -r requirements.txt\n"
            + "\n".join(requirements_lines(sorted(wheels.glob("*.whl")))) + "\n")
    if not (lock.is_file() and lock.read_text() == text):
        tmp = lock.with_name(f".{lock.name}.{os.getpid()}")  # the cache is shared: never a half-written lock
        tmp.write_text(text)
        tmp.replace(lock)
    return lock


def hub_server(content: HubContent, address: ipaddress.IPv4Address, logs: Path) -> Daemon:
    argv = (sys.executable, "-m", "enclave.mirror", "--root", str(content.root), "--bind", str(address),
            "--port", str(HUB_PORT))
    return Daemon("hub", argv, f"--root {content.root} --bind {address}", logs / "hub.log")


def wheels_server(content: HubContent, address: ipaddress.IPv4Address, logs: Path) -> Daemon:
    argv = (sys.executable, "-m", "http.server", "--bind", str(address), "--directory", str(content.wheels),
            str(WHEELS_PORT))
    return Daemon("wheels", argv, f"--bind {address} --directory {content.wheels}", logs / "wheels.log")
