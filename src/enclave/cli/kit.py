"""`enclave kit build|verify|apply-delta`: the offline site kit (docs/runbooks/offline-site.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from enclave import paths
from enclave.audit import audited
from enclave.cli.common import (
    AskVaultOpt,
    InventoryOpt,
    VaultFileOpt,
    console,
    err,
    open_inventory,
    reports_errors,
    resolve_inventory,
)
from enclave.cli.progress import run_with_progress
from enclave.engine.wheelhouse import Wheelhouse
from enclave.errors import EnclaveError, UsageError
from enclave.kit import apt, build, check, content, delta, importer, verify, wheels
from enclave.kit.manifest import KitKey
from enclave.plan import planfile
from enclave.runner import PlaybookRequest

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
    endpoint: Annotated[str | None, typer.Option(help="Hub or mirror URL (default: HF_ENDPOINT or the hub).")]
    = None,
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
                                  weights_source=weights_source, endpoint=endpoint, engine_wheelhouse=engine,
                                  own_wheel=own, split_bytes=int(split_gb * 1e9) if split_gb else None)
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
@audited("kit import")
def import_cmd(kit: Annotated[Path, typer.Argument(help="The kit directory.")], inventory: InventoryOpt = None,
               serve_url: Annotated[str | None, typer.Option(
                   "--serve-url", help="Where the staging host serves the kit (default: http://STAGING:8090/kit).")]
               = None, pin: PinOpt = None, allowed_signers: SignersOpt = None,
               vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Verify and self-test the kit, point the inventory's roles at it (group_vars/all/enclave_kit.yml), then copy
    it to the staging host, check it there and serve it to the private network."""
    path, inv, vault = open_inventory(inventory, vault_password_file, ask_vault_pass)
    plan = planfile.read(path)
    if plan is None:
        raise UsageError(f"no plan for {path}: run `enclave plan -i {path}` first; the import follows the plan")
    kit = kit.resolve()
    if not (kit / "KIT.json").is_file():
        raise UsageError(f"{kit}: no KIT.json there; give the directory `enclave kit build` wrote")
    where = importer.staging_plan(kit, serve_url or importer.default_serve_url(inv), inv)
    signers = verify.signers_text(kit, pin=pin, allowed_signers=allowed_signers)
    document = verify.verify_kit(kit, signers, _report)
    check.check(kit, document, plan, paths.roles_dir())
    values = importer.settings(kit, document, plan, where, content.engine_build(plan).name)
    written = importer.write_settings(path, values)
    console.print(f"wrote {written}; staging: {where.describe()}", highlight=False)
    request = PlaybookRequest(playbook="kit.yml", inventory=path, vault_password_file=vault,
                              extra_vars={"offline_kit_open_firewall": True})
    result = run_with_progress(request, console, title="kit import")
    if result.exit_code == 0:
        console.print(f"kit {where.kit_id} served at {where.url}; `enclave deploy -i {path}` installs from it",
                      highlight=False)
    else:
        console.print(f"the staging failed; {written} already points at the kit, so rerun `enclave kit import` "
                      "(the copy resumes) or `enclave deploy`, which stages it first", highlight=False)
    raise typer.Exit(result.exit_code)
