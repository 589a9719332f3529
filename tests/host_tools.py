"""The host tools the tests and the controller run, and the Debian package each comes from.

Every tool named here must come from a package in the Makefile's HOST_PACKAGES (the one install list that
`make test` installs on a fresh machine): tests/unit/test_host_packages.py derives the tools the code runs and
fails when one is unmapped or its package is missing from that list, so a tool installed by hand on a developer's
machine cannot make CI on a new machine red.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
    # the on-host status probe (src/enclave/hosttools/engine_status.py) reads the engine's unit
    "systemctl": "systemd",
}

# Tools only the on-host tools (src/enclave/hosttools) run, on a cluster host, never on this machine: the role that
# puts each on the host, for the reader. engine_status.py looks nvidia-smi up before it runs it (no GPU, no call).
ON_HOST_ONLY: dict[str, str] = {
    "nvidia-smi": "the nvidia role (GPU nodes)",
}
HOSTTOOLS_DIR = "src/enclave/hosttools/"

# Files (not programs) the unit tests load, with their Debian package: the gateway's njs module (the gateway role's
# gateway_njs_module; tests/unit/test_host_packages.py holds both to the role and to HOST_PACKAGES).
FILE_PACKAGES: dict[str, str] = {
    "/usr/lib/nginx/modules/ngx_http_js_module.so": "libnginx-mod-http-js",
}
NJS_MODULE = next(iter(FILE_PACKAGES))


def require_njs() -> str:
    """nginx's njs module, or a failure naming the package that brings it (never a skip)."""
    if not Path(NJS_MODULE).is_file():
        pytest.fail(f"{NJS_MODULE} is missing: install the Debian package {FILE_PACKAGES[NJS_MODULE]} "
                    "(make host-packages)")
    return NJS_MODULE


def require_tool(tool: str) -> str:
    """The tool's path; a missing tool fails the test with the package that brings it (never a skip)."""
    path = shutil.which(tool)
    if path is None:
        package = TOOL_PACKAGES.get(tool, "?")
        pytest.fail(f"{tool} is missing: install the Debian package {package} (make host-packages)")
    return path
