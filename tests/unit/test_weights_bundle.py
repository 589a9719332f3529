"""Air-gap bundles: pack from a folder (whole or split into parts), check, and refuse a damaged one."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.errors import EnclaveError, UsageError
from enclave.hosttools.manifest import read_manifest
from enclave.sandbox.tinymodel import make_tiny_model
from enclave.weights import bundle

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    make_tiny_model(path)
    return path


@pytest.mark.parametrize("split", [None, 100_000])
def test_pack_then_check_round_trips(model: Path, tmp_path: Path, split: int | None) -> None:
    made = bundle.pack(repo="org/tiny", revision=REV, out_dir=tmp_path, source_dir=model, split_bytes=split)
    assert made.path.name == f"org--tiny--{REV}"
    assert (made.parts > 1) == bool(split)
    info, files = bundle.check(made.path, dest=tmp_path / "joined")
    assert info["revision"] == REV and info["files"] == made.files
    manifest = read_manifest(files)
    assert manifest.repo == "org/tiny" and manifest.source == f"local:{model}"
    for entry in manifest.entries:
        assert (files / entry.path).read_bytes() == (model / entry.path).read_bytes()


def test_a_damaged_part_is_refused(model: Path, tmp_path: Path) -> None:
    made = bundle.pack(repo="org/tiny", revision=REV, out_dir=tmp_path, source_dir=model, split_bytes=100_000)
    part = made.path / "bundle.tar.001"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(EnclaveError, match=r"bundle\.tar\.001: sha256 does not match SHA256SUMS"):
        bundle.check(made.path, dest=tmp_path / "joined")


def test_a_damaged_file_is_refused(model: Path, tmp_path: Path) -> None:
    made = bundle.pack(repo="org/tiny", revision=REV, out_dir=tmp_path, source_dir=model)
    shard = made.path / "files" / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(EnclaveError, match=r"model-00001-of-00002\.safetensors: sha256 mismatch"):
        bundle.check(made.path)


def test_a_source_without_license_cannot_be_packed(model: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_bytes((model / "config.json").read_bytes())
    with pytest.raises(UsageError, match=f"{source} has no LICENSE"):
        bundle.pack(repo="org/tiny", revision=REV, out_dir=tmp_path / "out", source_dir=source)
    assert list((tmp_path / "out").iterdir()) == []  # no .partial left behind
