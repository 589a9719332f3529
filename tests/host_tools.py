"""The host tools the tests and the controller run, and the Debian package each comes from.

Every tool named here must come from a package in the Makefile's HOST_PACKAGES (the one install list that
`make test` installs on a fresh machine): tests/unit/test_host_packages.py derives the tools the code runs and
fails when one is unmapped or its package is missing from that list, so a tool installed by hand on a developer's
machine cannot make CI on a new machine red.
"""

from __future__ import annotations

import shutil

import pytest

from enclave.sandbox.system import TOOL_PACKAGES as SANDBOX_TOOL_PACKAGES

# Tools from the venv (pip), not from apt: `make venv` installs them.
VENV_TOOLS = frozenset({"ansible-inventory", "ansible-playbook"})

TOOL_PACKAGES: dict[str, str] = {
    **SANDBOX_TOOL_PACKAGES,
    # unit tests run the real validators and servers
    "nginx": "nginx",
    "nft": "nftables",
    "systemd-analyze": "systemd",
    "openssl": "openssl",
    "sha256sum": "coreutils",
    "cp": "coreutils",
    "dpkg-query": "dpkg",
    # the monitoring role's rendered rules and configuration (tests/unit/test_monitoring_rules.py)
    "promtool": "prometheus",
    # a real Prometheus on loopback: the status history's reader (tests/unit/local_prometheus.py) and the
    # dashboards' queries (tests/unit/test_monitoring_dashboards.py)
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    # integration tests: traffic shaping, process checks, SSH into sandbox hosts
    "tc": "iproute2",
    "pgrep": "procps",
    "ssh": "openssh-client",
    # the controller side of the roles (delegate_to: localhost): the gateway's CA, `weights import`
    "rsync": "rsync",
    # the offline site kit: which packages this machine's apt can fetch (enclave.kit.apt.unavailable)
    "apt-cache": "apt",
    # the audit trail records the inventory's commit (enclave.audit; without git it records none)
    "git": "git",
}


def require_tool(tool: str) -> str:
    """The tool's path; a missing tool fails the test with the package that brings it (never a skip)."""
    path = shutil.which(tool)
    if path is None:
        package = TOOL_PACKAGES.get(tool, "?")
        pytest.fail(f"{tool} is missing: install the Debian package {package} (make host-packages)")
    return path
