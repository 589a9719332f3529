"""`enclave kit build|verify|apply-delta`: the offline site kit (docs/runbooks/offline-site.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from enclave import paths
from enclave.cli.common import InventoryOpt, console, err, reports_errors, resolve_inventory
from enclave.engine.wheelhouse import Wheelhouse
from enclave.errors import EnclaveError, UsageError
from enclave.kit import apt, build, check, content, delta, importer, verify, wheels
from enclave.kit.manifest import KitKey
from enclave.plan import planfile

app = typer.Typer(help="The offline site kit: build outside, verify and import inside.", no_args_is_help=True)

PinOpt = Annotated[str | None, typer.Option("--pin", help="The kit key's fingerprint (SHA256:...) to trust.")]
SignersOpt = Annotated[Path | None, typer.Option("--allowed-signers", help="An OpenSSH allowed_signers file.")]


def _report(message: str) -> None:
    err.print(f"[dim]kit:[/] {message}", highlight=False)


@app.command("build")
@reports_errors
def build_cmd(
    inventory: InventoryOpt = None,
    out: Annotated[Path, typer.Option("--out", help="New directory to build the kit into.")] = Path("kit"),
    since: Annotated[Path | None, typer.Option("--since", help="Old kit: write only the files that differ.")]
    = None,
    split_gb: Annotated[float | None, typer.Option("--split-gb", help="Cut the weights into parts this big.")]
    = None,
    key: Annotated[Path | None, typer.Option("--key", help="Kit signing key (made on first use).")] = None,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="Leave out the NVIDIA packages.")] = False,
    no_weights: Annotated[bool, typer.Option("--no-weights", help="Leave out the weights.")] = False,
    no_engine: Annotated[bool, typer.Option("--no-engine", help="Leave out the engine wheelhouse.")] = False,
    weights_source: Annotated[Path | None, typer.Option(
        "--weights-source", help="Pack the weights from this folder instead of the hub.")] = None,
) -> None:
    """Collect every package, wheel and the weights the inventory's roles need into one signed directory."""
    path = resolve_inventory(inventory)
    plan = planfile.read(path)
    if plan is None:
        raise UsageError(f"no plan for {path}: run `enclave plan -i {path}` first; the kit follows the plan")
    if split_gb is not None and split_gb <= 0:
        raise UsageError(f"--split-gb {split_gb}: must be positive")
    if out.exists():  # before hours of downloads, not after
        raise UsageError(f"--out {out}: exists; a kit is built into a new directory")
    if since is not None and not (since / "KIT.json").is_file():
        raise UsageError(f"--since {since}: no KIT.json there; give the directory of the old kit")
    engine = None
    if not no_engine:
        engine = Wheelhouse(paths.cache_dir() / "wheelhouse", content.engine_build(plan)).ensure(_report)
    source = wheels.checkout()
    if source is None:
        raise UsageError("kit build makes the controller's enclave wheel from a checkout of enclave; run it "
                         "from one (PYTHONPATH=CHECKOUT/src or pip install -e CHECKOUT)")
    with tempfile.TemporaryDirectory(prefix="enclave-kit-wheel-") as tmp:
        _report(f"building the enclave wheel from {source}")
        own = wheels.build_own_wheel(source, Path(tmp))
        wanted = content.for_plan(plan, paths.roles_dir(), gpu=not no_gpu, with_weights=not no_weights,
                                  weights_source=weights_source, engine_wheelhouse=engine, own_wheel=own,
                                  split_bytes=int(split_gb * 1e9) if split_gb else None)
        made = _build(wanted, out, key, since)
    console.print(f"kit at {made.path}; pin its key inside: --pin {made.fingerprint}", highlight=False)
    if not made.complete:
        raise EnclaveError("the kit is incomplete (KIT.json says complete: false); could not fetch: "
                           + ", ".join(made.document["missing"]) + " (GPU hosts need them; --no-gpu leaves "
                           "them out)")


def _build(wanted: build.KitContent, out: Path, key: Path | None, since: Path | None) -> build.BuiltKit:
    return build.build(wanted, out.resolve(), key=KitKey(key or paths.state_dir() / "kit" / "kit-key"),
                       apt_key=apt.SigningKey(paths.state_dir() / "kit" / "apt-key",
                                              uid="enclave kit packages <kit@enclave.invalid>"),
                       report=_report, since=since.resolve() if since else None)


@app.command("verify")
@reports_errors
def verify_cmd(kit: Annotated[Path, typer.Argument(help="The kit directory.")], pin: PinOpt = None,
               allowed_signers: SignersOpt = None) -> None:
    """Check the kit's signature and the size and sha256 of every file it lists."""
    signers = verify.signers_text(kit, pin=pin, allowed_signers=allowed_signers)
    document = verify.verify_kit(kit, signers, _report)
    state = "complete" if document["complete"] else "INCOMPLETE, missing " + ", ".join(document["missing"])
    console.print(f"{kit}: signature good, {len(document['files'])} files match; {state}", highlight=False)


@app.command("apply-delta")
@reports_errors
def apply_delta_cmd(old: Annotated[Path, typer.Argument(help="The kit the delta was built against.")],
                    delta_kit: Annotated[Path, typer.Argument(metavar="DELTA", help="The delta kit.")],
                    out: Annotated[Path, typer.Option("--out", help="New directory for the full kit.")],
                    pin: PinOpt = None, allowed_signers: SignersOpt = None) -> None:
    """Rebuild the full new kit from the old kit and a delta (`kit build --since`), checking every file."""
    signers = verify.signers_text(delta_kit, pin=pin, allowed_signers=allowed_signers)
    document = delta.apply(old, delta_kit, out, signers, _report)
    console.print(f"{out}: {len(document['files'])} files, verified", highlight=False)


@app.command("check")
@reports_errors
def check_cmd(kit: Annotated[Path, typer.Argument(help="The kit directory.")], inventory: InventoryOpt = None,
              pin: PinOpt = None, allowed_signers: SignersOpt = None) -> None:
    """Verify the kit, then check it holds every package and wheel this inventory's roles will ask for."""
    path = resolve_inventory(inventory)
    plan = planfile.read(path)
    if plan is None:
        raise UsageError(f"no plan for {path}: run `enclave plan -i {path}` first; the check follows the plan")
    signers = verify.signers_text(kit, pin=pin, allowed_signers=allowed_signers)
    document = verify.verify_kit(kit, signers, _report)
    _report("checking the kit against what the roles will ask for")
    check.check(kit, document, plan, paths.roles_dir())
    console.print(f"{kit}: holds every package and wheel {path} needs", highlight=False)


@app.command("import")
@reports_errors
def import_cmd(kit: Annotated[Path, typer.Argument(help="The kit directory.")], inventory: InventoryOpt = None,
               serve_url: Annotated[str, typer.Option(
                   "--serve-url", help="Where the staging host will serve the kit, e.g. http://10.0.0.5:8090/kit")]
               = "", pin: PinOpt = None, allowed_signers: SignersOpt = None) -> None:
    """Verify and self-test the kit, then point the inventory's roles at it (group_vars/all/enclave_kit.yml)."""
    path = resolve_inventory(inventory)
    plan = planfile.read(path)
    if plan is None:
        raise UsageError(f"no plan for {path}: run `enclave plan -i {path}` first; the import follows the plan")
    if not serve_url:
        raise UsageError("--serve-url: give the URL the staging host will serve the kit at")
    signers = verify.signers_text(kit, pin=pin, allowed_signers=allowed_signers)
    document = verify.verify_kit(kit, signers, _report)
    check.check(kit, document, plan, paths.roles_dir())
    where = importer.staging_plan(kit, serve_url)
    values = importer.settings(kit, document, plan, where, content.engine_build(plan).name)
    written = importer.write_settings(path, values)
    console.print(f"wrote {written}", highlight=False)
    console.print(f"staging is not automated yet: {where.describe()} (docs/runbooks/offline-site.md)",
                  highlight=False)
