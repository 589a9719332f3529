"""enclave_directories (playbooks/library): the base role's contract directories in one module run, run by a real
local ansible-playbook on a scratch tree."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

from tests.unit.role_render import run_play


def make(tmp: Path, directories: list[dict[str, str]], *args: str) -> tuple[dict[str, Any], str]:
    """Run the module once over `directories`: its result (failed or not) and ansible-playbook's output."""
    result = tmp / "result.json"
    result.unlink(missing_ok=True)
    tasks = [{"name": "Make them", "enclave_directories": {"directories": directories}, "register": "made",
              "ignore_errors": True},
             {"name": "Keep the result", "ansible.builtin.copy": {"content": "{{ made | to_json }}",
                                                                  "dest": str(result), "mode": "0600"},
              "check_mode": False}]
    proc = run_play(tmp, roles=[], groups={"enclave_nodes": {"n1": {}}}, extra={}, tasks=tasks, args=args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(result.read_text()), proc.stdout


def entry(path: Path, mode: str) -> dict[str, str]:
    return {"path": str(path), "owner": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name,
            "mode": mode}


def mode_of(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def test_missing_directories_and_their_parents_are_made_and_only_the_listed_new_ones_named(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    wanted = [entry(root / "srv" / "kit", "0755"), entry(root / "srv" / "kit" / "data" / "models", "0750"),
              entry(root / "etc", "0700")]
    result, _ = make(tmp_path, wanted)
    assert result["changed"] is True
    # etc existed (its mode was fixed), the parents made on the way (srv, data) are not on the list
    assert result["created"] == [str(root / "srv" / "kit"), str(root / "srv" / "kit" / "data" / "models")]
    assert mode_of(root / "srv") == "0755" and mode_of(root / "srv" / "kit" / "data") == "0750"
    assert mode_of(root / "srv" / "kit" / "data" / "models") == "0750" and mode_of(root / "etc") == "0700"

    again, _ = make(tmp_path, wanted)
    assert again["changed"] is False and again["created"] == []


def test_a_wrong_mode_is_fixed_and_shown_in_the_diff(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.mkdir(mode=0o777)
    target.chmod(0o777)
    result, out = make(tmp_path, [entry(target, "0750")], "--diff")
    assert result["changed"] is True and result["created"] == []
    assert mode_of(target) == "0750"
    assert '-    "mode": "0777"' in out and '+    "mode": "0750"' in out, out[-2000:]


def test_check_mode_names_what_it_would_make_and_makes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir"
    result, _ = make(tmp_path, [entry(target, "0750")], "--check")
    assert result["changed"] is True and result["created"] == [str(target)]
    assert not (tmp_path / "new").exists()


def test_a_file_in_the_way_fails_naming_it_and_nothing_after_it_is_made(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("not a directory")
    result, _ = make(tmp_path, [entry(blocker, "0750"), entry(tmp_path / "after", "0750")])
    assert result["failed"] is True
    assert result["msg"] == f"enclave_directories: {blocker} exists and is not a directory"
    assert not (tmp_path / "after").exists()
