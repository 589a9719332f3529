"""`enclave weights fetch|sync|verify|status|info`: the weights phase on its own, and what is on the hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from enclave.audit import audited
from enclave.checks.runner import run_checks
from enclave.cli.common import (
    AskVaultOpt,
    ExtraVarsOpt,
    InventoryOpt,
    LimitOpt,
    VaultFileOpt,
    console,
    err,
    open_inventory,
    parse_extra_vars,
    reports_errors,
    resolve_inventory,
)
from enclave.cli.progress import run_with_progress
from enclave.cli.results import limit_hosts, report_results
from enclave.errors import UsageError
from enclave.plan import planfile
from enclave.revision import check_revision
from enclave.runner import PlaybookRequest
from enclave.runner.reads import weights_states

app = typer.Typer(help="Model weights: fetch once, spread over the private network, verify, report.",
                  no_args_is_help=True)

RevisionOpt = Annotated[str | None, typer.Option(
    "--revision", help="Stage this revision instead of the plan's (e.g. ahead of `enclave update`).")]


def _prepare(inventory: Path | None, revision: str | None, extra_vars: list[str] | None,
             vault: tuple[Path | None, bool]) -> tuple[Path, dict[str, Any]]:
    variables = parse_extra_vars(extra_vars)
    if revision is not None:
        check_revision(revision, "--revision")  # before the inventory is read: a typo costs nothing
    path, _, _ = open_inventory(inventory, *vault, extra_vars=variables, required=("weights",))
    if planfile.read(path) is None:
        raise UsageError(f"no plan for {path}: run `enclave plan -i {path}` (or `enclave deploy`) first; the plan "
                         "names the repository and revision to fetch")
    if revision is not None:
        variables["weights_revision"] = revision
    return path, variables


@app.command()
@reports_errors
@audited("weights fetch")
def fetch(inventory: InventoryOpt = None, revision: RevisionOpt = None, extra_vars: ExtraVarsOpt = None,
          vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Fetch the revision once to the staging host, check it against the source, write and sign its manifest."""
    path, variables = _prepare(inventory, revision, extra_vars, (vault_password_file, ask_vault_pass))
    request = PlaybookRequest(playbook="weights.yml", inventory=path, tags=("weights-stage",), extra_vars=variables)
    raise typer.Exit(run_with_progress(request, console, title="weights fetch").exit_code)


@app.command()
@reports_errors
@audited("weights sync")
def sync(inventory: InventoryOpt = None, revision: RevisionOpt = None, limit: LimitOpt = None,
         extra_vars: ExtraVarsOpt = None, vault_password_file: VaultFileOpt = None,
         ask_vault_pass: AskVaultOpt = False) -> None:
    """Fetch (if needed), spread to every node, verify, and activate: the weights phase of `enclave deploy`."""
    path, variables = _prepare(inventory, revision, extra_vars, (vault_password_file, ask_vault_pass))
    request = PlaybookRequest(playbook="weights.yml", inventory=path, limit=limit, extra_vars=variables)
    raise typer.Exit(run_with_progress(request, console, title="weights sync").exit_code)


@app.command()
@reports_errors
def verify(inventory: InventoryOpt = None, limit: LimitOpt = None,
           deep: Annotated[bool, typer.Option(help="Rehash every file instead of trusting stamps.")] = False,
           as_json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
           vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Check `current` on every node against its signed manifest (the weights checks of `enclave verify`)."""
    path, inv, _ = open_inventory(inventory, vault_password_file, ask_vault_pass)
    with err.status("verifying the weights on the nodes"):
        results, _ = run_checks(path, hosts=limit_hosts(inv, limit), deep=deep, modules=("test_weights.py",))
    raise typer.Exit(report_results(results, as_json_output))


@app.command()
@reports_errors
def status(inventory: InventoryOpt = None, limit: LimitOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print each host's state as JSON.")] = False,
           vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """Per host: the current revision, the kept ones, and what the last transfer moved."""
    path, _, _ = open_inventory(inventory, vault_password_file, ask_vault_pass)
    with err.status("reading the weights state"):
        states, _ = weights_states(path, limit)
    if as_json:
        console.print_json(json.dumps(states))
        return
    table = Table(show_edge=False)
    for column in ("host", "current", "other revisions on disk", "last transfer"):
        table.add_column(column, overflow="fold")
    for host, state in sorted(states.items()):
        kept = ", ".join(r["revision"][:12] for r in state.get("revisions", []) if not r.get("current")) or "-"
        last = state.get("last_transfer") or {}
        moved = (f"{last.get('bytes_moved', 0)} bytes for {str(last.get('revision', '?'))[:12]} "
                 f"({last.get('missing_files', 0)} missing, {last.get('damaged_files', 0)} damaged files)"
                 if last else "-")
        table.add_row(host, (state.get("current") or "none")[:40], kept, moved)
    console.print(table)


@app.command()
@reports_errors
def info(inventory: InventoryOpt = None, revision: RevisionOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print the manifest summary as JSON.")] = False,
         vault_password_file: VaultFileOpt = None, ask_vault_pass: AskVaultOpt = False) -> None:
    """The staged revision as its manifest records it: repo, revision, size, files, license."""
    if revision is not None:
        check_revision(revision, "--revision")
    path, inv, _ = open_inventory(inventory, vault_password_file, ask_vault_pass)
    plan = planfile.read(path)
    wanted = revision or (plan or {}).get("revision")
    staging = inv.hosts("enclave_staging")
    if not staging:
        raise UsageError(f"{path}: no host in enclave_staging")
    with err.status("reading the staged manifest"):
        states, _ = weights_states(path, limit=staging[0])
    revisions = (states.get(staging[0]) or {}).get("revisions", [])
    match = next((r for r in revisions if r["revision"] == wanted), None) if wanted else None
    if match is None:
        have = ", ".join(r["revision"] for r in revisions) or "none"
        raise UsageError(f"{staging[0]} has not staged revision {wanted or '(no plan)'} (staged: {have}); "
                         "run `enclave weights fetch`")
    if as_json:
        console.print_json(json.dumps(match))
        return
    for key in ("repo", "revision", "source", "fetched_at", "files", "bytes", "license_sha256",
                "license_first_line", "signed"):
        console.print(f"{key.replace('_', ' ') + ':':<20}{match.get(key, match.get('manifest_error', '?'))}",
                      highlight=False, soft_wrap=True)


@app.command()
@reports_errors
def pack(
    repo: Annotated[str, typer.Option(help="Repository ORG/NAME.")],
    revision: Annotated[str, typer.Option(help="The revision to pack: a 40-hex commit id, as the hub names it.")],
    out: Annotated[Path, typer.Option(help="Directory to write the bundle into.")] = Path(),
    source: Annotated[Path | None, typer.Option(help="Pack this local folder instead of downloading.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub or mirror URL (default: HF_ENDPOINT or the hub).")] = None,
    split_gb: Annotated[float | None, typer.Option(help="Cut the files into parts of this many GB.")] = None,
    license_file: Annotated[Path | None, typer.Option(help="License text to place as LICENSE if the source lacks one.")]
    = None,
) -> None:
    """On a connected machine: write an air-gap bundle (files, LICENSE, MANIFEST.sha256, SHA256SUMS)."""
    from enclave.weights.bundle import pack as pack_bundle

    if split_gb is not None and split_gb <= 0:
        raise UsageError("--split-gb must be positive")
    made_out = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        made = pack_bundle(repo=repo, revision=revision, out_dir=out.resolve(), source_dir=source,
                           endpoint=endpoint, split_bytes=int(split_gb * 1e9) if split_gb else None,
                           license_file=license_file, report=lambda m: err.print(m, highlight=False))
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc} ({exc.filename or out})") from None
    finally:
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed pack leaves nothing, not even the --out it made
    layout = f"{made.parts} parts" if made.parts else "files"
    console.print(f"bundle {made.path}: {made.repo}@{made.revision}, {made.files} files, {made.bytes} bytes "
                  f"({layout}); carry it in and run `enclave weights import {made.path.name}`", highlight=False)


@app.command("import")
@reports_errors
@audited("weights import")
def import_bundle(
    bundle_dir: Annotated[Path, typer.Argument(help="The bundle directory `enclave weights pack` wrote.")],
    inventory: InventoryOpt = None,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
) -> None:
    """Inside the network: verify a bundle, copy it to the staging host and stage it there (no outside access)."""
    from enclave.weights.bundle import check as check_bundle

    path, _, _ = open_inventory(inventory, vault_password_file, ask_vault_pass)
    info, files = check_bundle(bundle_dir.resolve(), report=lambda m: err.print(m, highlight=False))
    variables = {"weights_import_src": str(files), "weights_repo": info["repo"], "weights_revision": info["revision"],
                 # the role's own import directory on the staging host (roles/weights/vars)
                 "weights_source": {"type": "local", "path": "{{ weights_import_dir }}"}}
    request = PlaybookRequest(playbook="weights-import.yml", inventory=path, extra_vars=variables)
    result = run_with_progress(request, console, title="weights import")
    if result.exit_code == 0:
        console.print(f"staged {info['repo']}@{info['revision']}; `enclave weights sync --revision "
                      f"{info['revision']}` spreads it to the nodes", highlight=False)
    raise typer.Exit(result.exit_code)


@app.command()
@reports_errors
def rekey(
    fingerprint: Annotated[str, typer.Option(
        "--fingerprint", help="The staging host's new key, as the refusal printed it (SHA256:...).",
        show_default=False)],
    inventory: InventoryOpt = None,
) -> None:
    """Trust a new signing key of the staging host: re-pin the weights signer after a rebuild or key change."""
    from enclave.weights import signer

    path = resolve_inventory(inventory)
    old = signer.read_pin(path)
    if old == fingerprint:
        console.print(f"weights signer {fingerprint} is already pinned in {signer.pin_path(path)}", highlight=False,
                      soft_wrap=True)
        return
    pinned = signer.write_pin(path, fingerprint, "accepted by enclave weights rekey")
    console.print(f"weights signer: {old or 'none'} -> {fingerprint}, pinned in {pinned}; the next `enclave "
                  "weights sync` (or deploy) re-stages the revision under the new key (rehashed, re-signed) and "
                  "gives the nodes that key", highlight=False, soft_wrap=True)
