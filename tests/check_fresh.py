"""Rehearse a fresh machine without one: `make check-fresh`.

A bare Debian 12 root (debootstrap minbase, cached) gets only the packages given on the command line (the Makefile
passes HOST_PACKAGES), then every tool tests/host_tools.py maps must be found in it. A tool this machine has only
because someone installed it by hand shows up here as missing, with the package that brings it.
Needs root, debootstrap and systemd-nspawn (both in HOST_PACKAGES), and the Debian mirror apt already uses.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from enclave.paths import cache_dir
from enclave.sandbox import system
from enclave.sandbox.image import SUITE, host_debian_mirror
from tests.host_tools import TOOL_PACKAGES

# The container shares this machine's network only to reach the Debian mirror; it boots nothing.
NSPAWN = ("systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--settings=no", "--link-journal=no",
          "--resolv-conf=copy-host")


def bare_root(mirror: str) -> Path:
    """A minbase root, built once and cached (its packages are Debian's 'required' set, nothing more)."""
    home = cache_dir() / "fresh-root" / SUITE
    root = home / "rootfs"
    if (home / "complete").is_file():
        return root
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"building a bare {SUITE} root with debootstrap from {mirror} (about a minute, once)", flush=True)
    system.run(["debootstrap", "--variant=minbase", SUITE, partial / "rootfs", mirror], timeout=1800)
    (partial / "complete").write_text(mirror + "\n")
    shutil.rmtree(home, ignore_errors=True)
    partial.rename(home)
    return root


def nspawn(root: Path, script: str, timeout: float = 1200) -> str:
    return system.run([*NSPAWN, f"--directory={root}", "/bin/sh", "-c", script], timeout=timeout).stdout


def main(packages: list[str]) -> int:
    if not packages:
        print("usage: python -m tests.check_fresh PACKAGE... (make check-fresh passes HOST_PACKAGES)")
        return 2
    started = time.monotonic()
    mirror = host_debian_mirror()
    with tempfile.TemporaryDirectory(prefix="enclave-fresh-") as work:
        root = Path(work) / "root"
        system.run(["cp", "-a", "--reflink=auto", bare_root(mirror), root])
        (root / "etc/apt/sources.list").write_text(f"deb {mirror} {SUITE} main\n")
        # Packages install their daemons' binaries; nothing may start inside the rehearsal.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        print(f"installing only HOST_PACKAGES into the bare root: {' '.join(packages)}", flush=True)
        nspawn(root, "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
               f"--no-install-recommends {' '.join(map(shlex.quote, packages))} >/dev/null")
        probe = " ".join(map(shlex.quote, sorted(TOOL_PACKAGES)))
        missing = nspawn(root, f'for t in {probe}; do command -v "$t" >/dev/null || echo "$t"; done').split()
    took = time.monotonic() - started
    if missing:
        for tool in missing:
            print(f"MISSING {tool}: a fresh machine with only HOST_PACKAGES lacks it "
                  f"(add the Debian package {TOOL_PACKAGES[tool]} to HOST_PACKAGES)")
        print(f"check-fresh: {len(missing)} of {len(TOOL_PACKAGES)} tools missing ({took:.0f} s)")
        return 1
    print(f"check-fresh: all {len(TOOL_PACKAGES)} tools the tests run are present in a bare {SUITE} root "
          f"with only HOST_PACKAGES ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
