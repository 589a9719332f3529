from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from enclave.hosttools import activation
from enclave.hosttools.activation import activate_revision, load_activations, switch_current
from enclave.hosttools.build import BuildResult, build_manifest
from enclave.hosttools.common import MANIFEST_NAME, SIGNATURE_NAME, STAMPS_NAME
from enclave.hosttools.errors import CheckFailed, InputError
from enclave.hosttools.manifest import parse_manifest, read_manifest, render_manifest
from enclave.hosttools.nodetool import main
from enclave.hosttools.signatures import sign_manifest
from enclave.hosttools.verify import verify_tree
from tests.required import skip_or_fail
from tests.unit.test_hosttools import install_copy

SYSTEM_PYTHON = Path("/usr/bin/python3")
FETCHED_AT = "2026-11-28T18:00:00Z"
LICENSE_TEXT = "\n  MIT License  \n\nCopyright (c) 2026 Example\n"
FILES = {
    "LICENSE": LICENSE_TEXT.encode(),
    "config.json": b'{"model_type": "llama"}\n',
    "model-00001-of-00002.safetensors": bytes(range(256)) * 400,
    "model-00002-of-00002.safetensors": bytes(reversed(range(256))) * 300,
    "tokenizer/tokenizer.json": b'{"version": "1.0"}\n',
}
AN_HOUR_NS = 3600 * 10**9


def age(root: Path) -> None:
    """Date every file an hour back, as if fetched earlier: the tool only stamps files that have settled."""
    old = time.time_ns() - AN_HOUR_NS
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(old, old))


def make_model(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    age(root)
    return root


def build(root: Path, repo: str = "org/name", revision: str = "abc123") -> BuildResult:
    return build_manifest(root, repo=repo, revision=revision, source="test:local", fetched_at=FETCHED_AT)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = make_model(tmp_path / "model")
    build(root)
    return root


def flip_byte_keeping_stat(path: Path, offset: int = 1000) -> None:
    """Corrupt one byte in place and put the mtime back: size, mtime and inode then match the stamp (ctime moves)."""
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_ino == st.st_ino


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


# --- manifest build and show ------------------------------------------------------------------------------------


def test_build_and_show_round_trip(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (model / MANIFEST_NAME).read_text()
    assert text.startswith("# enclave-manifest: 1\n# repo: org/name\n# revision: abc123\n# source: test:local\n")
    assert "# license-first-line: MIT License\n" in text
    assert "# size: 19 tokenizer/tokenizer.json\n" in text

    code, shown = run_json(["manifest", "show", str(model)], capsys)
    assert code == 0
    assert shown == {
        "ok": True,
        "repo": "org/name",
        "revision": "abc123",
        "source": "test:local",
        "fetched_at": FETCHED_AT,
        "files": len(FILES),
        "bytes": sum(len(d) for d in FILES.values()),
        "license_sha256": hashlib.sha256(LICENSE_TEXT.encode()).hexdigest(),
        "license_first_line": "MIT License",
    }
    m = read_manifest(model)
    assert parse_manifest(render_manifest(m).encode()) == m
    assert [e.path for e in m.entries] == sorted(FILES)


def test_gnu_sha256sum_accepts_the_manifest(model: Path) -> None:
    proc = subprocess.run(["sha256sum", "--strict", "-c", MANIFEST_NAME], cwd=model, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": OK") == len(FILES)


def test_missing_license_is_refused_and_license_file_fixes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    root = make_model(tmp_path / "model", {k: v for k, v in FILES.items() if k != "LICENSE"})
    argv = ["manifest", "build", str(root), "--repo", "org/name", "--revision", "abc", "--source", "s"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "license must travel with them" in err and "--license-file" in err
    assert len(err.strip().splitlines()) == 1
    assert not (root / MANIFEST_NAME).exists()

    supplied = tmp_path / "mit.txt"
    supplied.write_text(LICENSE_TEXT)
    assert main([*argv, "--license-file", str(supplied)]) == 0
    assert (root / "LICENSE").read_text() == LICENSE_TEXT
    assert read_manifest(root).license_first_line == "MIT License"


def test_license_md_counts(tmp_path: Path) -> None:
    files = {("LICENSE.md" if k == "LICENSE" else k): v for k, v in FILES.items()}
    root = make_model(tmp_path / "model", files)
    assert build(root).license_file == "LICENSE.md"


def test_expect_json_mismatch_is_refused_without_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_model(tmp_path / "model")
    shard = "model-00001-of-00002.safetensors"
    good = hashlib.sha256(FILES[shard]).hexdigest()
    expect = tmp_path / "expect.json"
    argv = ["manifest", "build", str(root), "--repo", "org/name", "--revision", "abc", "--source", "s",
            "--expect-json", str(expect)]

    expect.write_text(json.dumps({shard: {"sha256": "0" * 64, "size": len(FILES[shard])}}))
    code, out = run_json(argv, capsys)
    assert code == 1
    assert shard in out["error"] and "0" * 64 in out["error"] and good in out["error"]
    assert not (root / MANIFEST_NAME).exists()

    expect.write_text(json.dumps({shard: {"sha256": good, "size": 5}}))
    code, out = run_json(argv, capsys)
    assert code == 1 and "expected 5 bytes" in out["error"]

    expect.write_text(json.dumps({shard: {"sha256": good.upper(), "size": len(FILES[shard])}, "config.json": {
        "size": len(FILES["config.json"])}}))
    assert run_json(argv, capsys)[0] == 0


@pytest.mark.parametrize("name", ["bad\nname.bin", "bad\\name.bin"])
def test_unlistable_paths_are_refused(tmp_path: Path, name: str) -> None:
    root = make_model(tmp_path / "model", {**FILES, name: b"x"})
    with pytest.raises(InputError, match="not allowed"):
        build(root)


def test_partial_downloads_block_a_manifest_and_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    root = make_model(tmp_path / "model", {**FILES, ".cache/x.safetensors.incomplete": b"abc", "y.partial": b"z"})
    with pytest.raises(InputError, match="partial download"):
        build(root)
    code, out = run_json(["partials", str(root)], capsys)
    assert code == 0
    assert out["partials"] == [{"path": ".cache/x.safetensors.incomplete", "size": 3}, {"path": "y.partial", "size": 1}]


# --- malformed manifests ----------------------------------------------------------------------------------------


def mutate(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


MALFORMED = {
    "unknown version": (lambda t: mutate(t, "enclave-manifest: 1", "enclave-manifest: 2"), 1),
    "not a manifest": (lambda t: "hello\n" + t, 1),
    "missing header": (lambda t: mutate(t, "# source: test:local\n", ""), 4),
    "size line without hash": (lambda t: mutate(t, "# size: 19 tokenizer/tokenizer.json\n",
                                                "# size: 19 tokenizer/tokenizer.json\n# size: 0 extra\n"), 15),
    "hash line without size": (lambda t: mutate(t, "# size: 19 tokenizer/tokenizer.json\n", ""), 18),
    "names out of order": (lambda t: mutate(t, "  config.json\n", "  config.jsom\n"), 16),
    "duplicate path": (lambda t: mutate(t, "  LICENSE\n", "  config.json\n"), 16),
    "bad hash line": (lambda t: t + "nonsense\n", 20),
    "escape": (lambda t: mutate(t, "  LICENSE\n", "  ../LICENSE\n"), 15),
    "files count": (lambda t: mutate(t, "# files: 5", "# files: 6"), 6),
    "bytes total": (lambda t: mutate(t, "# bytes: ", "# bytes: 1"), 7),
    "no final newline": (lambda t: t.rstrip("\n"), 19),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifests_name_the_line(model: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    change, line = MALFORMED[case]
    path = model / MANIFEST_NAME
    path.write_text(change(path.read_text()))
    with pytest.raises(InputError, match=rf"line {line}:"):
        read_manifest(model)
    assert main(["manifest", "show", str(model)]) == 2
    assert f"line {line}:" in capsys.readouterr().err


def test_non_utf8_manifest_names_the_line(model: Path) -> None:
    path = model / MANIFEST_NAME
    path.write_bytes(path.read_bytes().replace(b"test:local", b"test:\xff"))
    with pytest.raises(InputError, match="line 4: not valid UTF-8"):
        read_manifest(model)


# --- verify -----------------------------------------------------------------------------------------------------


def test_verify_reports_each_kind_of_damage(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (model / "config.json").unlink()
    (model / "notes.txt").write_text("not shipped")
    with (model / "tokenizer/tokenizer.json").open("ab") as f:
        f.write(b" ")
    flip_byte_keeping_stat(model / "model-00001-of-00002.safetensors")
    flip_byte_keeping_stat(model / "model-00002-of-00002.safetensors")  # only its ctime moved

    code, out = run_json(["verify", str(model), "--deep"], capsys)
    assert code == 1
    kinds = {p["path"]: p["kind"] for p in out["problems"]}
    assert kinds == {
        "config.json": "missing",
        "notes.txt": "extra",
        "tokenizer/tokenizer.json": "size",
        "model-00001-of-00002.safetensors": "sha256",
        "model-00002-of-00002.safetensors": "sha256",
    }
    size = next(p for p in out["problems"] if p["kind"] == "size")
    assert (size["expected"], size["actual"]) == (19, 20)

    assert main(["verify", str(model)]) == 1
    err = capsys.readouterr().err
    assert "config.json: missing" in err and "notes.txt: extra file" in err
    assert "expected 19 bytes, found 20" in err


def test_stamps_skip_rehash_until_a_file_changes(model: Path) -> None:
    first = verify_tree(model)  # build already stamped every file it hashed
    assert first.ok and first.files_hashed == 0 and first.files_from_stamps == len(FILES)
    (model / STAMPS_NAME).unlink()
    assert verify_tree(model).files_hashed == len(FILES)
    second = verify_tree(model)
    assert second.ok and second.files_hashed == 0 and second.bytes_hashed == 0

    shard = model / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))  # same size, new mtime
    third = verify_tree(model)
    assert third.files_hashed == 1 and third.bytes_hashed == len(data)
    assert [(p.path, p.kind) for p in third.problems] == [(shard.name, "sha256")]
    assert shard.name not in json.loads((model / STAMPS_NAME).read_text())


def test_a_same_size_edit_with_its_mtime_put_back_fails_the_stamp_verify(model: Path) -> None:
    assert verify_tree(model).files_from_stamps == len(FILES)
    shard = model / "model-00001-of-00002.safetensors"
    before = shard.stat()
    # ctime comes from the kernel's coarse clock (one tick, at most 10 ms): let one pass since the fixture's utime.
    time.sleep(0.05)
    flip_byte_keeping_stat(shard)
    after = shard.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns  # the one thing the edit could not put back

    report = verify_tree(model)  # not --deep: the stamp must not vouch for the edited file
    assert not report.ok and report.files_hashed == 1 and report.files_from_stamps == len(FILES) - 1
    assert [(p.path, p.kind) for p in report.problems] == [(shard.name, "sha256")]
    assert shard.name not in json.loads((model / STAMPS_NAME).read_text())
    deep = verify_tree(model, deep=True)
    assert deep.files_hashed == len(FILES)
    assert [(p.path, p.kind) for p in deep.problems] == [(shard.name, "sha256")]


def test_freshly_written_files_are_not_stamped(tmp_path: Path) -> None:
    root = tmp_path / "model"
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    build(root)
    # Written moments ago: a same-size rewrite could still keep this mtime, so nothing may be trusted yet.
    assert verify_tree(root).files_hashed == len(FILES)
    assert verify_tree(root).files_hashed == len(FILES)


def test_a_damaged_stamp_cache_is_ignored(model: Path) -> None:
    (model / STAMPS_NAME).write_text("{not json")
    report = verify_tree(model)
    assert report.ok and report.files_hashed == len(FILES)


# --- signatures -------------------------------------------------------------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "staging", "-f", str(key)], check=True)
    allowed = tmp_path / "keys" / "allowed_signers"
    allowed.write_text(f'staging@enclave namespaces="enclave-weights" {key.with_suffix(".pub").read_text()}')
    return key, allowed


def test_sign_and_verify_signature(model: Path, signer: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    key, allowed = signer
    check = ["verify-signature", str(model), "--allowed-signers", str(allowed), "--identity", "staging@enclave"]
    assert main(check) == 1  # not signed yet
    assert "no signature" in capsys.readouterr().err
    assert main(["sign", str(model), "--key", str(key)]) == 0
    assert (model / SIGNATURE_NAME).is_file()
    assert main(check) == 0
    assert main(["sign", str(model), "--key", str(key)]) == 0  # ssh-keygen alone would stop to ask about overwriting
    assert main(check) == 0
    assert main([*check[:-1], "someone-else"]) == 1
    capsys.readouterr()

    manifest = model / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace("# source: test:local", "# source: test:evil"))
    assert main(check) == 1
    assert "signature check failed" in capsys.readouterr().err


def test_rebuilding_removes_the_stale_signature(model: Path, signer: tuple[Path, Path]) -> None:
    sign_manifest(model, signer[0])
    assert build(model).removed_stale_signature
    assert not (model / SIGNATURE_NAME).exists()


# --- activate ---------------------------------------------------------------------------------------------------


def add_revision(model_dir: Path, revision: str) -> Path:
    root = make_model(model_dir / revision, {**FILES, "config.json": revision.encode()})
    build(root, revision=revision)
    return root


def target(link: Path) -> str:
    return str(link.readlink())


def test_current_is_never_missing_while_switching(tmp_path: Path) -> None:
    model_dir = tmp_path / "org--name"
    model_dir.mkdir()
    switch_current(model_dir, "r1")
    seen: set[str] = set()
    misses: list[OSError] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                seen.add(target(model_dir / "current"))
            except OSError as e:
                misses.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(100):
            switch_current(model_dir, f"r{i % 2}")
    finally:
        done.set()
        thread.join()
    assert misses == [] and seen <= {"r0", "r1"}
    assert sorted(p.name for p in model_dir.iterdir()) == ["current"]  # no temp links left behind


def test_activate_switches_atomically_and_keeps_k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "org--name"
    model_dir.mkdir()
    current = model_dir / "current"
    for rev in ("r1", "r2", "r3"):
        add_revision(model_dir, rev)
    legacy = model_dir / "legacy"
    legacy.mkdir()  # never activated by this tool: must never be touched

    assert activate_revision(model_dir, "r1", keep=2).previous is None
    assert target(current) == "r1"
    result = activate_revision(model_dir, "r2", keep=2)
    assert target(current) == "r2" and (result.previous, result.removed) == ("r1", [])

    code, out = run_json(["activate", str(model_dir), "r3", "--keep", "2"], capsys)
    assert code == 0 and target(current) == "r3"
    assert out["removed"] == ["r1"] and out["kept"] == ["r2", "r3"]
    assert not (model_dir / "r1").exists() and legacy.is_dir()

    back = activate_revision(model_dir, "r2", keep=2)  # rollback to a kept revision: no transfer, just a switch
    assert target(current) == "r2" and back.removed == [] and (model_dir / "r3").is_dir()
    again = activate_revision(model_dir, "r2", keep=1)
    assert again.removed == ["r3"] and target(current) == "r2"
    assert not activate_revision(model_dir, "r2", keep=1).changed
    assert sorted(p.name for p in model_dir.iterdir()) == [".enclave-activations.json", "current", "legacy", "r2"]


def test_activate_refuses_an_unverified_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "org--name"
    model_dir.mkdir()
    add_revision(model_dir, "good")
    bad = add_revision(model_dir, "bad")
    activate_revision(model_dir, "good", keep=3)
    (bad / "config.json").write_text("tampered")

    assert main(["activate", str(model_dir), "bad", "--keep", "3"]) == 1
    assert "refusing to activate" in capsys.readouterr().err
    assert target(model_dir / "current") == "good"
    with pytest.raises(InputError, match="does not exist"):
        activate_revision(model_dir, "absent", keep=3)
    with pytest.raises(InputError, match="plain directory name"):
        activate_revision(model_dir, "../good", keep=3)


def test_activate_refuses_a_revision_in_the_wrong_place(tmp_path: Path) -> None:
    model_dir = tmp_path / "other--model"
    model_dir.mkdir()
    add_revision(model_dir, "r1")
    with pytest.raises(CheckFailed, match="belongs in"):
        activate_revision(model_dir, "r1", keep=2)
    assert not (model_dir / "current").exists()


def test_activate_with_signers_trusts_only_a_signed_manifest(tmp_path: Path, signer: tuple[Path, Path],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    key, allowed = signer
    model_dir = tmp_path / "org--name"
    model_dir.mkdir()
    rev = add_revision(model_dir, "r1")
    trust = ["--allowed-signers", str(allowed), "--identity", "staging@enclave"]
    assert main(["activate", str(model_dir), "r1", "--keep", "2", *trust]) == 1
    assert "no signature" in capsys.readouterr().err and not (model_dir / "current").exists()
    assert main(["activate", str(model_dir), "r1", "--keep", "2", "--identity", "x"]) == 2
    sign_manifest(rev, key)
    assert main(["verify", str(rev), *trust]) == 0
    assert main(["activate", str(model_dir), "r1", "--keep", "2", *trust]) == 0
    assert target(model_dir / "current") == "r1"


def test_a_failed_prune_still_records_the_activation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "org--name"
    model_dir.mkdir()
    for rev in ("r1", "r2"):
        add_revision(model_dir, rev)
        activate_revision(model_dir, rev, keep=2)

    def refuse(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(activation.shutil, "rmtree", refuse)
    add_revision(model_dir, "r3")
    with pytest.raises(CheckFailed, match="could not remove old revision"):
        activate_revision(model_dir, "r3", keep=2)
    assert target(model_dir / "current") == "r3"
    assert load_activations(model_dir) == ["r1", "r2", "r3"]
    monkeypatch.undo()
    assert activate_revision(model_dir, "r3", keep=2).removed == ["r1"]


# --- space-check and the system python --------------------------------------------------------------------------


def test_space_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "not" / "yet" / "there"
    code, out = run_json(["space-check", str(target), "--need-bytes", "1000"], capsys)
    assert code == 0 and out["checked_at"] == str(tmp_path) and out["required_bytes"] == 1100

    free = shutil.disk_usage(tmp_path).free
    assert main(["space-check", str(target), "--need-bytes", str(free * 2)]) == 1
    err = capsys.readouterr().err
    assert "not enough space" in err and str(tmp_path) in err and "GB free" in err and "GB needed" in err


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify"]) == 2
    assert main(["activate", "/nowhere", "r1", "--keep", "0"]) == 2
    capsys.readouterr()


def test_cli_runs_on_the_system_python_with_stdlib_only(tmp_path: Path) -> None:
    if not SYSTEM_PYTHON.exists():
        skip_or_fail(f"needs the system python3 ({SYSTEM_PYTHON}), the interpreter nodes run nodetool with")
    root = make_model(tmp_path / "model")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    base = [str(SYSTEM_PYTHON), "-I", str(install_copy(tmp_path / "opt") / "nodetool.py")]
    build_cmd = [*base, "manifest", "build", str(root), "--repo", "org/name", "--revision", "abc", "--source", "x"]
    subprocess.run(build_cmd, env=env, check=True, capture_output=True)
    proc = subprocess.run([*base, "verify", str(root), "--json"], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files_from_stamps"] == len(FILES)
