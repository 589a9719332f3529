"""What the verbs that run the host checks share: which hosts `--limit` names, and the results shown as a table,
a count line or JSON (`enclave verify`, `enclave weights verify`, the short verify ending `enclave deploy`)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table
from rich.text import Text

from enclave.checks.results import CheckResult, as_json, summary
from enclave.checks.runner import CHECKS_DIR, run_checks
from enclave.cli.common import console, err, split_list
from enclave.errors import UsageError
from enclave.plan.inventory import Inventory

_STYLE = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "cyan"}


def results_table(results: list[CheckResult]) -> Table:
    table = Table(show_edge=False)
    for column in ("host", "concern", "check", "result", "why"):
        table.add_column(column, overflow="fold")
    order = {"failed": 0, "error": 0, "passed": 1, "skipped": 2}
    for r in sorted(results, key=lambda r: (r.host, order[r.outcome], r.concern, r.check)):
        table.add_row(r.host, r.concern, r.check, Text(r.outcome, _STYLE[r.outcome]), r.message)
    return table


def limit_hosts(inv: Inventory, limit: str | None) -> list[str] | None:
    """The hosts `--limit` names (hosts or groups), or None for all; an unknown name is bad usage."""
    if not limit:
        return None
    hosts = sorted({h for n in split_list([limit]) for h in (inv.hosts(n) if n in inv.groups else [n])})
    unknown = sorted(set(hosts) - set(inv.hosts()))
    if unknown:
        raise UsageError(f"--limit {limit}: no such host or group: {', '.join(unknown)}")
    return hosts


def report_results(results: list[CheckResult], as_json_output: bool) -> int:
    """Print the results as the table and a count line, or as the documented JSON; return the exit code."""
    counts = summary(results)
    if as_json_output:
        console.print_json(json.dumps(as_json(results)))
    else:
        console.print(results_table(results))
        console.print(f"{counts['passed']} passed, {counts['failed'] + counts['error']} failed, "
                      f"{counts['skipped']} skipped", highlight=False)
    return 1 if counts["failed"] or counts["error"] else 0


def check_modules_for_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    """The check files of the concerns a tagged run converged (`--tags base,nvidia`); all when no tag names one."""
    concerns = {p.stem.removeprefix("test_") for p in CHECKS_DIR.glob("test_*.py")}
    return tuple(f"test_{t}.py" for t in sorted(set(tags)) if t in concerns)


def short_verify(inventory: Path, *, hosts: list[str] | None, tags: tuple[str, ...] = ()) -> int:
    """The checks at the end of `enclave deploy`: no --deep, only the hosts and concerns the run touched.
    Prints one summary line and the failing checks; returns the exit code (0 all passed, 1 a check failed)."""
    modules = check_modules_for_tags(tags)
    with err.status("verifying the hosts (enclave verify, short form)"):
        results, _ = run_checks(inventory, hosts=hosts, modules=modules)
    counts = summary(results)
    bad = counts["failed"] + counts["error"]
    scope = f" on {', '.join(hosts)}" if hosts else ""
    what = f" ({', '.join(m.removeprefix('test_').removesuffix('.py') for m in modules)})" if modules else ""
    console.print(Text.assemble(("verify: ", "bold"), (f"{counts['passed']} passed, ", "green"),
                                (f"{bad} failed", "bold red" if bad else ""), f", {counts['skipped']} skipped{scope}"
                                f"{what}; `enclave verify` runs every check"))
    if bad:
        console.print(results_table([r for r in results if r.outcome in ("failed", "error")]))
    return 1 if bad else 0
