"""The GPU smoke check (`make gpu-check`): the kit's GPU path, run on the machine itself. docs/runbooks/gpu-check.md.

On a GPU node (as root, no network needed; from a checkout with its .venv):

    .venv/bin/python -m tests.gpu.gpu_check [--out DIR]

1. Runs the kit's facts module (playbooks/library/enclave_host_facts.py, as Ansible would run it) and parses its
   nvidia-smi output with the kit's parser; writes the raw outputs to DIR, ready to become recorded fixtures.
2. Preflight and the plan for this host as a one-node cluster (the default model profile and the check's model).
3. The shipped nvidia checks of `enclave verify` against this machine (testinfra's local backend).
4. With a vLLM CUDA wheelhouse in ENCLAVE_GPU_CHECK_WHEELHOUSE: installs it as the engine role does, generates the
   kit's random-weight model at its ~1B shape, starts vLLM with the argv and environment the engine role renders
   for this host's plan (loopback as the private network), waits for /health, sends a completion, reads /metrics,
   stops the engine. Without one, the report says this part was skipped and why.

Prints a short report; exits 0 when everything it could check passed, 1 otherwise. Without a GPU it prints one
line saying it was skipped and exits 0, so it is harmless wherever it runs. Bounded by BUDGET_S; it leaves no
process running and removes its work directory (the venv and the model); DIR keeps the recorded outputs and the
engine's log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave import paths
from enclave.checks.runner import run_local_checks
from enclave.plan.facts import HostFacts, host_facts
from enclave.plan.parallelism import ParallelismPlan, PlanRefused, node_hardware, plan_document, plan_parallelism
from enclave.plan.preflight import Finding, HostSettings, preflight
from enclave.plan.profiles import EngineSettings, ModelProfile, load_profile
from enclave.status.metrics import engine_load, tokens_per_second
from tests.engine.venv import install_command
from tests.unit.engine_render import exec_start_argv, render, role_vars

SKIP_LINE = "gpu-check: skipped: no NVIDIA GPU on this machine (none on the PCI bus and no nvidia-smi)"
WHEELHOUSE_ENV = "ENCLAVE_GPU_CHECK_WHEELHOUSE"
BUDGET_S = 600  # the whole check, vLLM included
STOP_S = 30  # kept back for stopping the engine
HOST = "gpu-check"  # this machine's name in the plan
MODEL_REVISION = "0" * 40  # the generated model has no hub commit; the plan needs 40 hex
FACTS_MODULE = paths.playbooks_dir() / "library" / "enclave_host_facts.py"
# What systemd gives a service before its Environment= and EnvironmentFile= lines.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The check's private network is the loopback: the engine binds 127.0.0.1 and its NCCL/Gloo traffic stays on lo.
LOOPBACK = "127.0.0.0/8"
LOOPBACK_FACTS = {"interfaces": ["lo"], "lo": {"device": "lo", "ipv4": {"address": "127.0.0.1"}}}
# Only meaningful once `enclave deploy` has run on the node: reported, not counted.
DEPLOY_ONLY_CHECKS = {"driver_branch_pin"}
PROMPT = "The lighthouse keeper climbed the stairs every evening"
COMPLETION_TOKENS = 512


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def fail(self, line: str) -> None:
        self.lines.append(line)
        self.failures.append(line.strip())


def read_facts(models_dir: str = "/srv/enclave/models") -> dict[str, Any]:
    """The facts module's `enclave_host`, run the way Ansible runs a module: a JSON file of its arguments."""
    with tempfile.TemporaryDirectory(prefix="enclave-gpu-facts-") as tmp:
        args = Path(tmp) / "args.json"
        args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"models_dir": models_dir}}))
        proc = subprocess.run([sys.executable, str(FACTS_MODULE), str(args)], capture_output=True, text=True,
                              timeout=120, check=False, env={**os.environ, "LC_ALL": "C"})
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode != 0 or result.get("failed"):
        raise RuntimeError(f"the facts module failed (exit {proc.returncode}): "
                           f"{result.get('msg') or proc.stderr.strip()[-300:]}")
    return result["ansible_facts"]["enclave_host"]


def has_gpu(raw: dict[str, Any]) -> bool:
    smi = raw.get("nvidia_smi") or {}
    return bool((raw.get("pci") or {}).get("gpus")) or any((smi.get(k) or {}).get("present") for k in smi)


def record(raw: dict[str, Any], out: Path) -> list[Path]:
    """The raw outputs: facts.json (the shape `enclave plan --facts` reads) and nvidia-smi's own text, named as
    tests/unit/fixtures/nvidia-smi names its recordings."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "facts.json"]
    written[0].write_text(json.dumps({HOST: raw}, indent=2, sort_keys=True) + "\n")
    smi = raw.get("nvidia_smi") or {}
    for key, name in (("query", "nvidia-smi-query-csv.txt"), ("summary", "nvidia-smi-default-table.txt")):
        run = smi.get(key) or {}
        if run.get("present"):
            (out / name).write_text(run.get("stdout", "") + run.get("stderr", ""))
            written.append(out / name)
    return written


def describe_gpus(facts: HostFacts) -> str:
    if not facts.gpus:
        return f"GPUs: {facts.pci_gpus} on the PCI bus, none seen by nvidia-smi"
    memory = f"{facts.gpu_memory_mib:,} MiB" if facts.gpu_memory_mib else "memory unknown"
    cuda = facts.smi.cuda_version if facts.smi else None
    return (f"GPUs: {len(facts.gpus)} x {facts.gpu_model}, {memory} each; driver {facts.driver_version or '?'}"
            f"{f', CUDA {cuda}' if cuda else ''}; {facts.nvswitches} NVSwitch(es)")


def describe_plan(plan: ParallelismPlan) -> str:
    """'1 replica: DP8 + EP', '2 replicas: TP8 x PP2' (the words of docs/planning.md's table)."""
    parts = []
    for r in plan.replicas:
        sizes = [f"{n}{s}" for n, s in (("TP", r.tensor_parallel), ("DP", r.data_parallel)) if s > 1]
        sizes += [f"PP{r.pipeline_parallel}"] if r.pipeline_parallel > 1 else []
        parts.append((" x ".join(sizes) or "TP1") + (" + EP" if r.expert_parallel else ""))
    count = len(plan.replicas)
    return f"{count} replica{'s' if count != 1 else ''}: {', '.join(sorted(set(parts)))}"


def host_settings(raw: dict[str, Any]) -> HostSettings:
    """This machine as an engine node whose private network is that of its first address (loopback if none)."""
    addresses = [a for nic in raw.get("interfaces") or [] for a in nic.get("addresses", [])]
    return HostSettings(private_network=addresses[0] if addresses else LOOPBACK, groups=("enclave_nodes",))


def check_profile(hardware_class: str) -> ModelProfile:
    """The generated ~1B model as a profile for this host's hardware class: the kit's own plan and engine flags,
    plus a context the model has."""
    return ModelProfile(name="gpu-check-1b", repo="enclave-sandbox/gpu-check-1b", size_gb=2.0, min_gpu_memory_gb=0,
                        served_model_name="gpu-check-1b", readiness_timeout_s=BUDGET_S, parallelism="tensor",
                        engine=EngineSettings(("--max-model-len", "2048")),
                        hardware={hardware_class: EngineSettings()})


def host_report(raw: dict[str, Any], report: Report) -> tuple[HostFacts, dict[str, Any] | None]:
    """GPUs, preflight and plans for this host; the check model's plan document, if it can be planned."""
    facts = host_facts(HOST, raw)
    report.add(describe_gpus(facts))
    if facts.smi is not None and facts.smi.failure is not None:
        report.fail(f"nvidia-smi: {facts.smi.failure.message} ({facts.smi.failure.hint})")
    elif not facts.gpus:
        report.fail("nvidia-smi shows no GPU" if facts.smi else
                    "nvidia-smi is not installed: install the driver first (enclave deploy --tags provision)")
    default = load_profile("deepseek-v4-flash")
    findings = preflight({HOST: facts}, {HOST: host_settings(raw)}, default)
    problems = [f for f in findings if f.severity in ("error", "warning")]
    report.add("preflight: " + ("no errors or warnings" if not problems else
                                "; ".join(_finding(f) for f in problems)))
    # A GPU-side error fails the check; disk or capacity for a 160 GB model say nothing about the GPU path.
    for finding in findings:
        if finding.severity == "error" and finding.check in ("gpu", "driver", "kernel-module", "fabricmanager",
                                                             "reboot"):
            report.failures.append(_finding(finding))
    document = None
    try:
        node = node_hardware(facts)
        for profile in (default, load_profile("deepseek-v4-pro")):
            report.add(f"plan ({profile.name}, this host alone): {_plan_or_refusal(node, profile)}")
        check = check_profile(node.hardware_class)
        plan = plan_parallelism([node], check)
        report.add(f"plan ({check.name}, the check's model): {describe_plan(plan)}, hardware class "
                   f"{plan.hardware_class}")
        document = plan_document(check, MODEL_REVISION, plan)
    except PlanRefused as exc:
        report.fail(f"plan: {exc}")
    return facts, document


def _plan_or_refusal(node: Any, profile: ModelProfile) -> str:
    try:
        return describe_plan(plan_parallelism([node], profile))
    except PlanRefused as exc:
        return f"refused: {str(exc).split('. ')[0]}"


def _finding(finding: Finding) -> str:
    return f"{finding.severity} {finding.check}: {finding.message}"


def nvidia_checks(report: Report, run: Callable[..., Any] = run_local_checks) -> None:
    results, _ = run(("test_nvidia.py",), timeout=120)
    said = []
    for result in results:
        said.append(f"{result.check} {result.outcome}" + (f" ({result.message})" if result.message else ""))
        if result.outcome in ("failed", "error") and result.check not in DEPLOY_ONLY_CHECKS:
            report.failures.append(f"nvidia check {result.check}: {result.message}")
    report.add("nvidia checks (enclave verify's, local): " + ("; ".join(said) or "none ran"))


def engine_launch(document: dict[str, Any], *, vllm: Path, model_dir: Path, home: Path,
                  api_key: str) -> tuple[list[str], dict[str, str]]:
    """The engine's argv and environment exactly as the engine role renders them for this host (its unit's
    ExecStart and its EnvironmentFile), with the paths of this check: its venv's vllm, the generated model."""
    variables = role_vars(document, HOST, [HOST], network=LOOPBACK, facts={HOST: LOOPBACK_FACTS})
    argv = exec_start_argv(render("enclave-engine.service.j2", variables))
    if argv[0] != f"{variables['engine_venv']}/bin/vllm" or argv[2] != variables["engine_model_dir"]:
        raise RuntimeError(f"the engine unit's ExecStart changed shape: {argv[:3]}")
    argv = [str(vllm), argv[1], str(model_dir), *argv[3:]]
    env = {"PATH": SYSTEMD_PATH, "HOME": str(home), **env_file(render("engine.env.j2", variables)),
           "VLLM_API_KEY": api_key}  # the role's key file: an EnvironmentFile, never the command line
    return argv, env


def env_file(text: str) -> dict[str, str]:
    """KEY="value" lines as systemd reads them (the quoting systemd_env_value writes)."""
    values = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, quoted = line.partition("=")
        inner, out, i = quoted[1:-1], [], 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
            else:
                out.append(inner[i])
                i += 1
        values[key.strip()] = "".join(out)
    return values


def serve_check(document: dict[str, Any], wheelhouse: Path, work: Path, out: Path, deadline: float,
                report: Report) -> None:
    bundle = json.loads((wheelhouse / "bundle.json").read_text())
    if bundle.get("kind") != "cuda":
        report.add(f"vLLM: skipped: {wheelhouse} holds a {bundle.get('kind')} build, not a cuda one "
                   "(enclave bundle --kind cuda)")
        return
    if _port_taken(int(document["port"])):
        report.fail(f"vLLM: port {document['port']} on 127.0.0.1 is taken (an engine already runs here?)")
        return
    venv, model, home = work / "venv", work / "model", work / "home"
    started = time.monotonic()
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable  # as the engine role
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    install = subprocess.run(install_command(venv / "bin" / "pip", str(wheelhouse)), capture_output=True,
                             text=True, check=False, timeout=max(60, deadline - time.monotonic()))
    if install.returncode != 0:
        report.fail("vLLM: installing the wheelhouse failed: " + (install.stdout + install.stderr).strip()[-300:])
        return
    installed = time.monotonic()
    from enclave.sandbox.tinymodel import ONE_B, make_tiny_model  # numpy and friends: only on this path

    make_tiny_model(model, shape=ONE_B)
    made = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    api_key = os.urandom(24).hex()
    argv, env = engine_launch(document, vllm=venv / "bin" / "vllm", model_dir=model, home=home, api_key=api_key)
    log = out / "engine.log"
    base = f"http://127.0.0.1:{document['port']}"
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, cwd=home, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            launched = time.monotonic()
            ready = _wait_ready(base, proc, deadline - STOP_S)
            if ready is None:
                report.fail(f"vLLM: not ready within the budget (exit {proc.poll()}); see {log}")
                return
            version = _get(f"{base}/version", None) or "{}"
            before = engine_load(_get(f"{base}/metrics", None) or "", time.time())
            tokens, elapsed = _complete(base, api_key, document["served_model_name"])
            after = engine_load(_get(f"{base}/metrics", None) or "", time.time())
            engine_rate = tokens_per_second(before, after)
            report.add(f"vLLM {json.loads(version).get('version', bundle.get('installed_version'))} "
                       f"({bundle.get('name', wheelhouse.name)}): install {installed - started:.0f} s, model "
                       f"{made - installed:.0f} s, ready {ready - launched:.0f} s after start")
            report.add(f"completion: {tokens} tokens in {elapsed:.2f} s = {tokens / elapsed:,.0f} tokens/s"
                       + (f" (engine counters: {engine_rate:,.0f} tokens/s)" if engine_rate else "")
                       + f"; /metrics generation_tokens_total {after.generated_tokens}")
            if not tokens or after.generated_tokens is None:
                report.failures.append("vLLM: the completion or /metrics came back empty")
        finally:
            if not _stop(proc):
                report.fail(f"vLLM: processes of the engine (process group {proc.pid}) are still running")


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _get(url: str, key: str | None) -> str | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback, our own URL
            return answer.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def _wait_ready(base: str, proc: subprocess.Popen[bytes], until: float) -> float | None:
    while time.monotonic() < until and proc.poll() is None:
        if _get(f"{base}/health", None) is not None:
            return time.monotonic()
        time.sleep(2)
    return None


def _complete(base: str, key: str, model: str) -> tuple[int, float]:
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": COMPLETION_TOKENS, "temperature": 0,
                       "ignore_eos": True}).encode()
    request = urllib.request.Request(f"{base}/v1/completions", data=body, method="POST",  # noqa: S310
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback
        data = json.loads(answer.read())
    return int(data["usage"]["completion_tokens"]), time.monotonic() - started


def _stop(proc: subprocess.Popen[bytes]) -> bool:
    """The engine and everything it started (its own session): TERM, then KILL what is left after STOP_S.
    True when nothing of the group is left."""
    for sig, grace in ((signal.SIGTERM, STOP_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return True
        until = time.monotonic() + grace
        while time.monotonic() < until and _group_alive(proc):
            time.sleep(0.5)
        if not _group_alive(proc):
            return True
    return False


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reap the engine's main process once it exits
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def run(out: Path, *, wheelhouse: str | None, read: Callable[[], dict[str, Any]] = read_facts,
        checks: Callable[..., Any] = run_local_checks) -> tuple[int, list[str]]:
    """The check; returns its exit status and the report's lines (a single skip line without a GPU)."""
    deadline = time.monotonic() + BUDGET_S
    raw = read()
    if not has_gpu(raw):
        return 0, [SKIP_LINE]
    report = Report([f"gpu-check on {socket.gethostname()} (outputs in {out})"])
    written = record(raw, out)
    _, document = host_report(raw, report)
    report.add("recorded: " + ", ".join(p.name for p in written))
    nvidia_checks(report, checks)
    if not wheelhouse:
        report.add(f"vLLM: skipped: {WHEELHOUSE_ENV} is not set (a directory made by `enclave bundle --kind cuda`)")
    elif not (Path(wheelhouse) / "bundle.json").is_file():
        report.add(f"vLLM: skipped: {WHEELHOUSE_ENV}={wheelhouse} has no bundle.json (not a wheelhouse)")
    elif document is None:
        report.add("vLLM: skipped: no plan for this host (above)")
    else:
        work = Path(tempfile.mkdtemp(prefix="enclave-gpu-check-", dir=os.environ.get("TMPDIR", "/var/tmp")))
        try:
            serve_check(document, Path(wheelhouse), work, out, deadline, report)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report.add("result: " + ("passed" if not report.failures else f"FAILED: {'; '.join(report.failures)}"))
    return (1 if report.failures else 0), report.lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.gpu.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where the recorded outputs and the engine log go "
                                                 "(default: a new directory under /tmp)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="enclave-gpu-check-out-"))
    try:
        status, lines = run(out, wheelhouse=os.environ.get(WHEELHOUSE_ENV))
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"gpu-check: FAILED: {exc}")
        return 1
    print("\n".join(lines))
    if lines == [SKIP_LINE] and args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
