"""The hub token never rides a command line, an environment variable or a log (issue #14, finding 2).

Ansible writes a task's `environment:` into the remote shell command (`/bin/sh -c 'HF_TOKEN=... python ...'`), so
a secret there shows in `ps` on both ends, in sudo's journal line and in -vvv output. The weights role hands the
token over in a 0600 file instead; these tests run its real fetch tasks with a local ansible-playbook at -vvv, a
stand-in for the hub client that records what it was given and what every process on the machine showed, and
look for the token everywhere but that file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from enclave.mirror import make_server, publish
from tests.unit.role_render import REPO, ROLES, run_play

TOKEN = "hf_unitFakeToken7c1e5d0b9a44f2"  # a made-up value the tests hunt for
REVISION = "0123456789abcdef0123456789abcdef01234567"

# Records argv, environment and the token file as the fetch sees them, and every process's command line and
# environment at that moment (the `ps` sample); exits 1 when a `fail` file sits beside it.
FAKE_CLIENT = """#!{python}
import json, os, stat, sys
from pathlib import Path
here = Path(sys.argv[0]).resolve().parent
token = {token!r}
seen = []
for proc in Path("/proc").iterdir():
    for part in ("cmdline", "environ"):
        try:
            data = (proc / part).read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if token in data:
            seen.append(proc.name + "/" + part + ": " + data.replace(chr(0), " ")[:300])
record = {{"argv": sys.argv, "environ": dict(os.environ), "processes_showing_token": seen}}
if "--token-file" in sys.argv:
    path = Path(sys.argv[sys.argv.index("--token-file") + 1])
    record["token_file"] = {{"path": str(path), "mode": oct(stat.S_IMODE(path.stat().st_mode)),
                            "content": path.read_text()}}
(here / "record.json").write_text(json.dumps(record))
Path(sys.argv[sys.argv.index("--expect-out") + 1]).write_text("{{}}")
if (here / "fail").exists():
    print(json.dumps({{"ok": False, "error": "HfHubHTTPError: 401 Client Error (the mirror said no)"}}))
    sys.exit(1)
print(json.dumps({{"ok": True, "files": 1, "bytes_total": 5, "bytes_downloaded": 5, "seconds": 0.1}}))
"""
# Stands in for systemd-run, which needs a running systemd: records its own arguments, then runs the command after
# `--` with only the --setenv values (as a transient unit would; as the caller, not the unit's User=).
FAKE_SYSTEMD_RUN = """#!{python}
import json, os, sys
from pathlib import Path
split = sys.argv.index("--")
options, command = sys.argv[1:split], sys.argv[split + 1:]
Path({record!r}).write_text(json.dumps(options))
env = {{"PATH": os.environ["PATH"]}}
env.update(o.removeprefix("--setenv=").split("=", 1) for o in options if o.startswith("--setenv="))
os.execve(command[0], command, env)
"""


def _fetch(tmp: Path, *, token: str, fail: bool = False) -> tuple[Any, dict[str, Any], Path]:
    """Run fetch_hf.yml at -vvv against the stand-in client: (process, what the client recorded, token file)."""
    opt, root = tmp / "opt", tmp / "srv"
    bin_dir, run_dir = opt / "hub-client" / "bin", tmp / "fake-bin"
    bin_dir.mkdir(parents=True)
    run_dir.mkdir()
    (root / "weights-work").mkdir(parents=True, mode=0o700)  # stage.yml makes it before the fetch
    (tmp / "models" / "org--name" / REVISION).mkdir(parents=True)  # and the revision directory
    for path, text in ((bin_dir / "python", FAKE_CLIENT.format(python=sys.executable, token=TOKEN)),
                       (run_dir / "systemd-run", FAKE_SYSTEMD_RUN.format(python=sys.executable,
                                                                         record=str(tmp / "systemd-run.json")))):
        path.write_text(text)
        path.chmod(0o755)
    if fail:
        (bin_dir / "fail").write_text("")
    proc = run_play(tmp, roles=["weights"], groups={"enclave_staging": {"staging": {}}},
                    task_files=("weights/tasks/fetch_hf.yml",), args=("-vvv",),
                    env={"PATH": f"{run_dir}:{os.environ['PATH']}"},
                    extra={"enclave_opt_dir": str(opt), "enclave_root": str(root),
                           "enclave_models_dir": str(tmp / "models"), "enclave_group": "root",
                           # an unprivileged user this machine has; the role makes its own on a staging host
                           "weights_fetch_user": "nobody", "weights_fetch_group": "nogroup",
                           "weights_source": {"type": "hf", "endpoint": "http://127.0.0.1:9"},
                           "weights_repo": "org/name", "weights_revision": REVISION, "weights_hf_token": token})
    record = json.loads((bin_dir / "record.json").read_text())
    record["systemd_run"] = json.loads((tmp / "systemd-run.json").read_text())
    return proc, record, root / "weights-fetch" / "hub-token"


def _assert_token_nowhere_but_its_file(proc: Any, record: dict[str, Any], token_file: Path) -> None:
    assert TOKEN not in proc.stdout + proc.stderr, "the token is in ansible-playbook -vvv output"
    assert TOKEN not in json.dumps(record["argv"]), "the token is on the fetch's command line"
    assert [k for k, v in record["environ"].items() if TOKEN in v] == [], "the token is in the fetch's environment"
    assert record["processes_showing_token"] == [], "a process showed the token in /proc during the fetch"
    assert record["token_file"] == {"path": str(token_file), "mode": "0o600", "content": TOKEN}
    assert not token_file.exists(), "the token file outlived the fetch"


def test_the_token_reaches_the_fetch_only_in_a_0600_file_removed_afterwards(tmp_path: Path) -> None:
    proc, record, token_file = _fetch(tmp_path, token=TOKEN)
    assert proc.returncode == 0, proc.stdout[-3000:]
    _assert_token_nowhere_but_its_file(proc, record, token_file)
    assert record["environ"]["HF_ENDPOINT"] == "http://127.0.0.1:9"  # the non-secret settings still arrive
    assert "--property=User=nobody" in record["systemd_run"]  # run as the fetch user, in its own unit
    assert TOKEN not in json.dumps(record["systemd_run"])


def test_the_token_file_is_removed_when_the_fetch_fails(tmp_path: Path) -> None:
    proc, record, token_file = _fetch(tmp_path, token=TOKEN, fail=True)
    assert proc.returncode != 0
    assert "fetching org/name@" in proc.stdout and "the mirror said no" in proc.stdout
    _assert_token_nowhere_but_its_file(proc, record, token_file)


def test_without_a_token_no_token_file_is_passed(tmp_path: Path) -> None:
    proc, record, _ = _fetch(tmp_path, token="")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "--token-file" not in record["argv"] and "token_file" not in record
    assert "HF_TOKEN" not in record["environ"]


# --- static: no role hands a secret to `environment:` -------------------------------------------------------------

SECRET_NAME = re.compile(r"token|passw(or)?d|secret|api_?key|credential|private_key", re.IGNORECASE)
JINJA_NAME = re.compile(r"\b[a-z_][a-z0-9_]*\b")
PATH_SUFFIXES = ("_file", "_path", "_dir")


def _role_variables() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(ROLES.glob("*/*/main.yml")):
        if path.parent.name in ("defaults", "vars"):
            found.update(yaml.safe_load(path.read_text()) or {})
    return found


def _environments(node: Any, where: str) -> list[tuple[str, Any]]:
    """Every `environment:` value in a parsed playbook or task file, with the file it came from."""
    if isinstance(node, dict):
        found = [(where, node["environment"])] if "environment" in node else []
        return found + [e for v in node.values() for e in _environments(v, where)]
    if isinstance(node, list):
        return [e for v in node for e in _environments(v, where)]
    return []


def _secret_references(value: str) -> list[str]:
    names = [n for expr in re.findall(r"{{(.*?)}}", value, re.S) for n in JINJA_NAME.findall(expr)]
    return [n for n in names if SECRET_NAME.search(n) and not n.endswith(PATH_SUFFIXES)]


def test_no_playbook_or_role_passes_a_secret_through_environment() -> None:
    variables = _role_variables()
    problems: list[str] = []
    files = sorted((REPO / "playbooks").rglob("*.yml"))
    environments = [e for f in files for e in _environments(yaml.safe_load(f.read_text()), str(f.relative_to(REPO)))]
    # The hub fetch's environment reaches it through systemd-run's --setenv arguments: a command line, so the same rule.
    environments.append(("weights/vars/main.yml weights_hf_environment (systemd-run --setenv)",
                         variables["weights_hf_environment"]))
    assert environments, "found no `environment:` at all: the scan is looking in the wrong place"
    for where, env in environments:
        if isinstance(env, str):
            ref = re.fullmatch(r"{{\s*([a-z_][a-z0-9_]*)\s*}}", env.strip())
            if ref is None or not isinstance(variables.get(ref.group(1)), dict):
                problems.append(f"{where}: environment {env!r} is not a role variable holding a mapping")
                continue
            env = variables[ref.group(1)]
        for key, value in env.items():
            text = str(value)
            if SECRET_NAME.search(key) and "{{" in text:
                problems.append(f"{where}: {key} takes a computed value in environment: {text}")
            problems += [f"{where}: {key} carries the secret {name}" for name in _secret_references(text)]
    assert problems == []


def test_the_task_that_writes_the_token_file_logs_nothing() -> None:
    # Its arguments hold the token itself: no_log keeps them out of every callback, -vvv and the runner's events.
    tasks = yaml.safe_load((ROLES / "weights" / "tasks" / "fetch_hf.yml").read_text())
    block = next(t for t in tasks if "block" in t)
    copy = next(t for t in block["block"] if "ansible.builtin.copy" in t)
    assert copy["ansible.builtin.copy"]["mode"] == "0600" and copy["no_log"] is True


# --- hubfetch: the token file is what authenticates ---------------------------------------------------------------


def test_hubfetch_authenticates_with_the_token_file_alone(tmp_path: Path) -> None:
    """The real client against the kit's mirror with a token required: hubfetch gets through with --token-file
    and an environment without HF_TOKEN, and is refused without the file."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}\n')
    (source / "LICENSE").write_text("MIT License\n")
    commit = publish(tmp_path / "mirror", "org/name", source)
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").chmod(0o600)
    server = make_server(tmp_path / "mirror", bind="127.0.0.1", port=0, token=TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_UPDATE_CHECK="1", NO_PROXY="127.0.0.1")
    hubfetch = [sys.executable, str(REPO / "src/enclave/hosttools/hubfetch.py"), "--json", "--repo", "org/name",
                "--revision", commit, "--expect-out", str(tmp_path / "expect.json")]
    try:
        refused = subprocess.run([*hubfetch, "--dest", str(tmp_path / "a")], env=env, capture_output=True,
                                 text=True, timeout=120, check=False)
        fetched = subprocess.run([*hubfetch, "--dest", str(tmp_path / "b"), "--token-file", str(tmp_path / "token")],
                                 env=env, capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert refused.returncode == 1 and "401" in refused.stdout, refused.stdout + refused.stderr
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert json.loads(fetched.stdout)["files"] == 2
    assert (tmp_path / "b" / "config.json").read_text() == '{"model_type": "llama"}\n'
