"""`enclave bundle`: build the engine wheelhouse on a connected machine, for nodes that have no way out."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from enclave import paths
from enclave.cli.common import console, err, reports_errors
from enclave.engine.build import KINDS, VLLM_VERSION, EngineBuild
from enclave.engine.wheelhouse import Wheelhouse
from enclave.errors import EnclaveError, UsageError
from enclave.hashing import sha256_file


def _report(message: str) -> None:
    err.print(f"[dim]bundle:[/] {message}", highlight=False)


@reports_errors
def bundle(
    kind: Annotated[str, typer.Option("--kind", help=f"Engine build: {' or '.join(KINDS)} (cpu: the sandbox's).")]
    = "cuda",
    version: Annotated[str, typer.Option("--vllm-version", help="vLLM release to pin.")] = VLLM_VERSION,
    python: Annotated[str, typer.Option("--python", help="The nodes' Python (major.minor).")] = "3.11",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Also copy the wheelhouse into this directory (to carry into an air gap).")] = None,
    pip_arg: Annotated[list[str] | None, typer.Option(
        "--pip-arg", help="Extra pip download option, e.g. --pip-arg=--extra-index-url=URL. Repeatable.")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Download again even if the cache is complete.")]
    = False,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash every wheel against SHA256SUMS.")] = False,
) -> None:
    """Download the pinned vLLM and every dependency as wheels, with a hash-locked requirements.txt.

    Cached under ~/.cache/enclave/wheelhouse and reused when complete. Serve the directory inside the network,
    set engine_wheelhouse_url to its URL and engine_wheelhouse_lock_sha256 to the digest printed last.
    """
    build = EngineBuild(kind=kind, version=version, python=python)
    house = Wheelhouse(paths.cache_dir() / "wheelhouse", build)
    if house.ready() and not rebuild:
        _report(f"reusing the complete wheelhouse at {house.path}")
    path = house.ensure(_report, pip_args=tuple(pip_arg or ()), rebuild=rebuild)
    if verify:
        problems = house.verify()
        if problems:
            raise EnclaveError(f"{path}: " + "; ".join(problems[:10]) + " (rebuild with --rebuild)")
        _report("every wheel matches SHA256SUMS")
    if output is not None:
        dest = output.expanduser().resolve() / build.name
        if dest.exists():
            raise UsageError(f"--output: {dest} already exists; remove it or choose another directory")
        shutil.copytree(path, dest)
        path = dest
    info = house.info()
    console.print(f"{build.name}: {info['wheels']} wheels, {int(info['bytes']) / 1e9:.2f} GB at {path}",
                  highlight=False)
    console.print(f"nodes install vllm {build.installed_version} from it: set engine_wheelhouse_url to the URL "
                  "that serves this directory, and pin its lock (the server could swap a wheel and the lock "
                  "together):", highlight=False)
    console.print(f"engine_wheelhouse_lock_sha256: {sha256_file(path / 'requirements.txt')}", highlight=False,
                  soft_wrap=True)  # one line, to copy into the inventory
