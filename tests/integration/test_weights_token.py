"""The hub token on the real deploy path (issue #14, finding 2): a staging fetch at -vvv with a known fake token,
then the whole run directory, the staging host's journal and process samples taken on the controller and the
staging host during the fetch are searched for it. The sandbox's hub mirror does not check tokens; the client
sends it all the same, and the test only needs to know the value."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from enclave.runner import PlaybookRequest, run_playbook
from enclave.sandbox import Sandbox
from enclave.sandbox.spec import SandboxSpec

from .conftest import SANDBOX, STATE, ssh
from .test_weights import NODES, current, planned_revision, variant

TOKEN = "hf_enclaveLeakProbe5b1d9e0c7a2f"
# What the staging host's sampler greps for: the token, though not spelled out on the sampler's own command line.
TOKEN_RE = TOKEN[:-1] + f"[{TOKEN[-1]}]"
SAMPLE, RUNNING = "/tmp/enclave-token-sample", "/tmp/enclave-token-sampling"
SAMPLER = (f"rm -f {SAMPLE}; touch {RUNNING}; nohup sh -c 'while [ -e {RUNNING} ]; do echo tick; "
           f"grep -lE \"{TOKEN_RE}\" /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null; "
           f"grep -lE \"hubfetch[.]py\" /proc/[0-9]*/cmdline >/dev/null 2>&1 && echo fetching; "
           f"sleep 0.1; done' >{SAMPLE} 2>&1 </dev/null &")


def _throttle(spec: SandboxSpec, rate: str | None) -> None:
    """Slow what the staging host downloads, so the samples catch the fetch while it runs."""
    dev = spec.host("gateway").veth_host(spec.name)
    subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, check=False)
    if rate:
        subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "16kb",
                        "latency", "400ms"], check=True)


def _sample_controller(stop: threading.Event, hits: list[str], fetching: list[bool]) -> None:
    """The controller's /proc, which also shows the sandbox hosts' processes (nspawn shares the host's view)."""
    needle = TOKEN.encode()
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            for part in ("cmdline", "environ"):
                try:
                    data = (proc / part).read_bytes()
                except OSError:
                    continue
                if needle in data:
                    hits.append(f"{proc.name}/{part}: {data[:200]!r}")
                if part == "cmdline" and b"hubfetch.py" in data:
                    fetching.append(True)
        time.sleep(0.1)


@pytest.mark.usefixtures("deployed")
def test_a_fetch_at_vvv_leaves_the_token_nowhere(inventory: Path, tmp_path: Path) -> None:
    revision = variant(tmp_path, "integration-token", seed=4)  # not staged yet: a real fetch
    spec = Sandbox(SANDBOX, state_root=STATE).recorded_spec()
    assert spec is not None
    since = ssh(inventory, "gateway", "date +%s").stdout.strip()
    ssh(inventory, "gateway", SAMPLER)
    stop, hits, fetching = threading.Event(), [], []
    sampler = threading.Thread(target=_sample_controller, args=(stop, hits, fetching), daemon=True)
    _throttle(spec, "2mbit")
    sampler.start()
    try:
        result = run_playbook(PlaybookRequest(
            playbook="weights.yml", inventory=inventory, tags=("weights-stage",), verbosity=3,
            extra_vars={"weights_revision": revision, "weights_hf_token": TOKEN}), runs_dir=STATE / "runs")
    finally:
        stop.set()
        sampler.join(timeout=30)
        _throttle(spec, None)
        sample = ssh(inventory, "gateway", f"rm -f {RUNNING}; sleep 0.5; cat {SAMPLE}; rm -f {SAMPLE}").stdout
    assert result.exit_code == 0, f"the fetch failed: {result.progress.failures} (run dir {result.run_dir})"

    stdout = (result.run_dir / "artifacts" / "run" / "stdout").read_text()
    # Results carry their module arguments from -vvv on, whatever the strategy (mitogen's connection prints no
    # "ESTABLISH SSH CONNECTION"): the output a token in an argument would show up in.
    assert '"module_args"' in stdout, "the run was not at -vvv"
    leaks = [str(p) for p in result.run_dir.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaks == [], f"the token is in the run directory: {leaks}"

    lines = sample.splitlines()
    assert "fetching" in lines and fetching, "no process sample was taken while hubfetch ran"
    assert [line for line in lines if line not in ("tick", "fetching")] == [], f"staging host /proc showed it: {lines}"
    assert hits == [], f"a process on the controller (or a sandbox host) showed the token: {hits[:3]}"

    journal = ssh(inventory, "gateway", f"journalctl --no-pager -o cat --since @{since}").stdout
    assert journal.strip(), "the staging host's journal is empty for the run: nothing was checked"
    assert TOKEN not in journal, "the token is in the staging host's journal"
    for token_file in ("/srv/enclave/weights-fetch/hub-token", "/srv/enclave/weights-work/hub-token"):
        assert ssh(inventory, "gateway", f"test ! -e {token_file}", check=False).returncode == 0
    for host in NODES:  # staging only: the nodes stay where they were
        assert current(inventory, host) == planned_revision(inventory)
