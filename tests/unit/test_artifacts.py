from __future__ import annotations

import json
from pathlib import Path

from enclave.runner import artifacts


def test_new_run_dirs_are_private_and_sorted(tmp_path: Path) -> None:
    first = artifacts.new_run_dir(tmp_path, "site")
    second = artifacts.new_run_dir(tmp_path, "site")
    assert first.stat().st_mode & 0o077 == 0
    assert artifacts.run_dirs(tmp_path)[-1] in (first, second)
    assert len(artifacts.run_dirs(tmp_path)) == 2


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for stamp in range(30):
        (tmp_path / f"202601{stamp:02d}-000000-site-x").mkdir()
    removed = artifacts.prune(tmp_path, keep=20)
    assert len(removed) == 10
    kept = [p.name for p in artifacts.run_dirs(tmp_path)]
    assert kept[0] == "20260110-000000-site-x" and len(kept) == 20


def test_scrub_removes_the_recorded_environment(tmp_path: Path) -> None:
    record = tmp_path / "artifacts" / "run" / "command"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"command": ["ansible-playbook", "site.yml"], "cwd": "/x",
                                  "env": {"HF_TOKEN": "hf_secret"}}))
    artifacts.scrub_command_record(tmp_path)
    text = record.read_text()
    assert "hf_secret" not in text
    assert json.loads(text) == {"command": ["ansible-playbook", "site.yml"], "cwd": "/x"}
