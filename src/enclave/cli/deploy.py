"""`enclave deploy`: converge every host of an inventory to the kit's state (playbooks/site.yml)."""

from __future__ import annotations

from typing import Annotated

import typer

from enclave.audit import audited
from enclave.cli.common import (
    AskVaultOpt,
    CheckOpt,
    DiffOpt,
    ExtraVarsOpt,
    InventoryOpt,
    LimitOpt,
    SkipTagsOpt,
    TagsOpt,
    VaultFileOpt,
    VerboseOpt,
    console,
    err,
    open_inventory,
    parse_extra_vars,
    reports_errors,
    split_list,
)
from enclave.cli.progress import run_with_progress
from enclave.cli.results import short_verify
from enclave.plan import planfile
from enclave.plan.decide import required_plan
from enclave.plan.facts import host_facts
from enclave.plan.settings import roles_run
from enclave.runner import PlaybookRequest
from enclave.runner.reads import gather


@reports_errors
@audited("deploy")
def deploy(
    inventory: InventoryOpt = None,
    check: CheckOpt = False,
    diff: DiffOpt = False,
    limit: LimitOpt = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    extra_vars: ExtraVarsOpt = None,
    verbose: VerboseOpt = 0,
    flush_cache: Annotated[bool, typer.Option(help="Gather facts afresh instead of using the cache.")] = False,
    vault_password_file: VaultFileOpt = None,
    ask_vault_pass: AskVaultOpt = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the host checks after a successful run.")]
    = False,
) -> None:
    """Deploy enclave onto the hosts of an inventory (rerun it for every change: it converges).

    Plans first (like `enclave plan`) and writes the plan file the playbooks read; no plan, no change to any host.
    After a successful run it runs the shipped checks on the hosts it touched (`enclave verify` without --deep);
    a failed check exits 1.
    """
    variables = parse_extra_vars(extra_vars)
    # -e counts: it is checked for typos and may carry the settings the run's roles cannot go without
    path, inv, vault = open_inventory(inventory, vault_password_file, ask_vault_pass, extra_vars=variables,
                                      required=roles_run(split_list(tags), split_list(skip_tags)))
    # Plan first, from every host's facts (not only --limit's): a deploy that cannot plan stops here.
    with err.status("reading host facts and planning"):
        raw = gather(path)
    document = required_plan(inv, {h: host_facts(h, facts) for h, facts in raw.items()})
    if check:
        variables.setdefault(planfile.PLAN_VAR, document)  # --check changes nothing, not even the plan file
    else:
        written, changed = planfile.write(path, document)
        if changed:
            console.print(f"plan written to {written}")
    request = PlaybookRequest(
        playbook="site.yml", inventory=path, check=check, diff=diff, limit=limit, tags=split_list(tags),
        skip_tags=split_list(skip_tags), extra_vars=variables, verbosity=verbose,
        flush_cache=flush_cache, vault_password_file=vault)
    result = run_with_progress(request, console, title="deploy" + (" --check" if check else ""))
    if result.exit_code != 0 or check or no_verify:
        raise typer.Exit(result.exit_code)
    # --limit: the hosts the run reached (the pattern may be anything Ansible accepts)
    touched = sorted(result.progress.hosts) if limit else None
    raise typer.Exit(short_verify(path, hosts=touched, tags=request.tags))
