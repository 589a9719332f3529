"""A source's checksums as the transfer tool reads them (hosttools/transfer.py's parse_sums), through the one line
reader the manifest module defines (hosttools/manifest.py's sums_line)."""

from __future__ import annotations

import hashlib

import pytest

from enclave.hosttools.errors import InputError as ManifestInputError
from enclave.hosttools.manifest import FileEntry, Manifest, parse_manifest, render_manifest, sums_line
from enclave.hosttools.transfer import InputError, TransferError, parse_sums

A = hashlib.sha256(b"a").hexdigest()
B = hashlib.sha256(b"bb").hexdigest()


def test_a_rendered_manifest_reads_back_as_sizes_and_hashes() -> None:
    manifest = Manifest(repo="org/name", revision="r1", source="x", fetched_at="2026-11-28T18:00:00Z",
                        license_sha256=A, license_first_line="MIT",
                        entries=(FileEntry("LICENSE", 1, A), FileEntry("dir/b.bin", 2, B)))
    assert parse_sums(render_manifest(manifest), "MANIFEST.sha256") == {
        "LICENSE": {"sha256": A, "size": 1}, "dir/b.bin": {"sha256": B, "size": 2}}


def test_sha256sum_text_and_binary_lines_both_count() -> None:
    text = f"# written by sha256sum\n{A}  a.txt\n{B} *b.bin\n\n"
    assert parse_sums(text, "SHA256SUMS") == {"a.txt": {"sha256": A}, "b.bin": {"sha256": B}}


@pytest.mark.parametrize(("text", "message"), [
    (f"{A}  a\nnot a sum\n", "SHA256SUMS line 2: not a sha256sum line"),
    ("# only comments\n", "SHA256SUMS lists no files"),
])
def test_a_malformed_sums_file_is_refused_naming_its_line(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_sums(text, "SHA256SUMS")


def test_a_path_leaving_the_directory_is_refused() -> None:
    with pytest.raises(TransferError, match="not a plain relative path"):
        parse_sums(f"{A}  ../etc/passwd\n", "SHA256SUMS")


def test_sums_line_kinds() -> None:
    assert sums_line("# size: 12 a b") == ("size", 12, "a b")
    assert sums_line(f"{A}  a") == ("sha256", A, "a")
    assert sums_line(f"{A} *a") == ("sha256", A, "a")
    assert sums_line("# size: 012 a") is None
    assert sums_line("# anything else") is None


def test_a_manifest_holds_text_mode_lines_only() -> None:
    # What sha256sum writes in binary mode is fine in a source's SHA256SUMS, never in a manifest the nodes trust.
    manifest = Manifest(repo="org/name", revision="r1", source="x", fetched_at="2026-11-28T18:00:00Z",
                        license_sha256=A, license_first_line="MIT", entries=(FileEntry("LICENSE", 1, A),))
    text = render_manifest(manifest).replace(f"{A}  LICENSE", f"{A} *LICENSE")
    with pytest.raises(ManifestInputError, match="expected '<sha256>  <path>'"):
        parse_manifest(text.encode())
