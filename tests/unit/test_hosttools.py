"""The on-host tools' folder (src/enclave/hosttools): what the enclave role installs is exactly the package, each tool
runs by path from the installed layout on a python3 without the enclave package, the tools sent alone import nothing
of the package, and the read-only tasks that send tools from the controller get the tools' own answers."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from enclave.hosttools import activation
from tests.unit.role_render import ROLES, run_play

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "enclave" / "hosttools"
ENCLAVE_VARS = yaml.safe_load((ROLES / "enclave" / "vars" / "main.yml").read_text())
LISTED = ENCLAVE_VARS["enclave_host_tools"]
# The tools the script module (or run_sent.py's `python3 -c`) sends as one file, without their siblings.
SENT_ALONE = ("engine_status.py", "accesslog.py", "run_sent.py")
# Each tool a playbook, a unit or a test runs by path, with a verb that does something: what its output holds, and
# the file it writes in the work directory.
ENTRY_TOOLS = {
    "nodetool.py": (["partials", "{tmp}", "--json"], '"partials": []', None),
    "transfer.py": (["expect-from-sums", "--dir", "{tmp}", "--expect-out", "{tmp}/expect.json", "--json"],
                    '"files": 0', "expect.json"),
    "signals.py": (["--out", "{tmp}", "--nft-table", "none"], "", "enclave.prom"),
    "accesslog.py": (["sums", "--log", "{tmp}/access.log", "--since", "0"], '"clients": {}', None),
    "engine_status.py": (["--help"], "usage:", None),
    "hubfetch.py": (["--help"], "usage:", None),
}
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def install_copy(root: Path) -> Path:
    """The tools as roles/enclave/tasks/tools.yml lays them out on a host: ROOT/tools/hosttools/<listed files>."""
    folder = root / "tools" / "hosttools"
    folder.mkdir(parents=True)
    for name in LISTED:
        shutil.copy2(PACKAGE / name, folder / name)
    return folder


def bare_run(args: list[str], cwd: Path, stdin: str | None = None,
             tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """python3 -I (no PYTHONPATH, no user site, not the script's folder first), outside the checkout: as on a host,
    where no enclave package can be imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([PYTHON, "-I", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import in `path`: level > 0 for a relative one."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def test_the_installed_list_is_every_file_of_the_package() -> None:
    assert sorted(LISTED) == sorted(p.name for p in PACKAGE.glob("*.py"))


def test_the_role_installs_the_package_itself() -> None:
    # Where tools.yml's `src: hosttools/...` and the read-only tasks find the files: the package, not a copy of it.
    assert (ROLES / "enclave" / "files" / "hosttools").resolve() == PACKAGE


@pytest.mark.parametrize("name", SENT_ALONE)
def test_a_tool_sent_alone_imports_only_the_standard_library(name: str) -> None:
    found = imports_of(PACKAGE / name)
    assert [m for level, m in found if level] == [], f"{name} imports a sibling, which is not sent with it"
    assert [m for _, m in found if m.split(".")[0] not in sys.stdlib_module_names] == []


def test_every_tool_imports_the_standard_library_and_its_siblings_only() -> None:
    # hubfetch.py runs with the hub client's venv and imports huggingface_hub (late: --help works without it).
    allowed = set(sys.stdlib_module_names) | {"huggingface_hub"}
    outside = {f"{p.name}: {m}" for p in PACKAGE.glob("*.py") for level, m in imports_of(p)
               if not level and m.split(".")[0] not in allowed}
    assert outside == set()


def test_the_rule_checker_catches_a_sibling_import(tmp_path: Path) -> None:
    (tmp_path / "tool.py").write_text("import json\nfrom .common import human\nfrom . import accesslog\n")
    assert [m for level, m in imports_of(tmp_path / "tool.py") if level] == ["common", ""]


@pytest.mark.parametrize("name", sorted(ENTRY_TOOLS))
def test_each_tool_runs_by_path_from_the_installed_layout(name: str, tmp_path: Path) -> None:
    folder = install_copy(tmp_path / "opt")
    work = tmp_path / "work"
    work.mkdir()
    (work / "access.log").touch()
    args, expected, written = ENTRY_TOOLS[name]
    proc = bare_run([str(folder / name), *(a.format(tmp=work) for a in args)], cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert written is None or (work / written).is_file()
    help_proc = bare_run([str(folder / name), "--help"], cwd=work)
    assert help_proc.returncode == 0 and "usage:" in help_proc.stdout, help_proc.stderr


def test_the_installed_nodetool_reports_a_check_failure_with_its_exit_code(tmp_path: Path) -> None:
    folder = install_copy(tmp_path / "opt")
    proc = bare_run([str(folder / "nodetool.py"), "verify", str(tmp_path / "nowhere"), "--json"], cwd=tmp_path)
    assert proc.returncode == 2 and "no manifest at" in json.loads(proc.stdout)["error"]


def sources() -> str:
    return json.dumps({name: (PACKAGE / name).read_text() for name in LISTED})


def test_run_sent_runs_a_tool_from_the_sources_on_stdin_and_leaves_nothing(tmp_path: Path) -> None:
    model = tmp_path / "org--name"
    (model / "r1").mkdir(parents=True)
    (model / "current").symlink_to("r1")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = (PACKAGE / "run_sent.py").read_text()
    proc = bare_run(["-c", code, "nodetool.py", "status", str(model), "--json"], cwd=tmp_path, stdin=sources(),
                    tmpdir=tmp)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": True, **activation.model_status(model)}
    assert list(tmp.iterdir()) == [], "the sent package was left on the host"


def test_run_sent_passes_the_tools_exit_code_on(tmp_path: Path) -> None:
    code = (PACKAGE / "run_sent.py").read_text()
    proc = bare_run(["-c", code, "nodetool.py", "verify", str(tmp_path / "nowhere")], cwd=tmp_path, stdin=sources())
    assert proc.returncode == 2 and "no manifest at" in proc.stderr


def test_the_weights_status_task_answers_from_the_controllers_copy(tmp_path: Path) -> None:
    """weights/tasks/status.yml through Ansible: the package travels on stdin, nothing is installed on the host."""
    models = tmp_path / "models"
    (models / "org--name" / "r1").mkdir(parents=True)
    (models / "org--name" / "current").symlink_to("r1")
    report = {"name": "Keep the report", "ansible.builtin.copy": {
        "content": "{{ weights_status.stdout }}", "dest": str(tmp_path / "report.json"), "mode": "0600"}}
    proc = run_play(tmp_path, roles=["weights"], groups={"enclave_nodes": {"n1": {}}},
                    extra={"enclave_models_dir": str(models), "weights_repo": "org/name",
                           "enclave_opt_dir": str(tmp_path / "opt")},
                    task_files=("weights/tasks/status.yml",), tasks=[report])
    assert proc.returncode == 0, proc.stdout[-3000:]
    status = json.loads((tmp_path / "report.json").read_text())
    assert status["current"] == "r1" and status["revisions"][0]["revision"] == "r1"
    assert not (tmp_path / "opt").exists()


def install_with_the_role(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """roles/enclave/tasks/tools.yml run by Ansible on this machine, with enclave_opt_dir under tmp."""
    return run_play(tmp, roles=[], groups={"hosts": {"here": {}}}, task_files=("enclave/tasks/tools.yml",),
                    extra={"enclave_opt_dir": str(tmp / "opt")}, args=args)


def recap_changed(proc: subprocess.CompletedProcess[str]) -> int:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return int(re.findall(r"^here\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.MULTILINE)[-1])


@pytest.mark.skipif(os.geteuid() != 0, reason="the role installs the tools owned by root")
def test_the_role_installs_every_tool_in_one_task_and_rewrites_only_what_differs(tmp_path: Path) -> None:
    folder = tmp_path / "opt" / "tools" / "hosttools"
    assert recap_changed(install_with_the_role(tmp_path)) == 2  # the folders, then the files
    assert sorted(p.name for p in folder.parent.iterdir()) == ["hosttools"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(LISTED)  # no __pycache__ or other stray file
    for name in LISTED:
        assert (folder / name).read_bytes() == (PACKAGE / name).read_bytes(), name
        assert (folder / name).stat().st_mode & 0o7777 == 0o755, name
    untouched = {name: (folder / name).stat().st_ino for name in LISTED}

    assert recap_changed(install_with_the_role(tmp_path)) == 0

    (folder / "common.py").write_text("# edited on the host\n")
    (folder / "tree.py").chmod(0o600)
    checked = install_with_the_role(tmp_path, "--check", "--diff")
    assert recap_changed(checked) == 1
    assert "+# edited on the host" not in checked.stdout and "-# edited on the host" in checked.stdout
    assert (folder / "common.py").read_text() == "# edited on the host\n", "check mode wrote a file"
    assert (folder / "tree.py").stat().st_mode & 0o777 == 0o600, "check mode changed a mode"

    assert recap_changed(install_with_the_role(tmp_path)) == 1
    assert (folder / "common.py").read_bytes() == (PACKAGE / "common.py").read_bytes()
    assert (folder / "tree.py").stat().st_mode & 0o777 == 0o755
    replaced = {name for name in LISTED if (folder / name).stat().st_ino != untouched[name]}
    assert replaced == {"common.py"}, "files already right were rewritten"
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [], "a temporary file was left"
