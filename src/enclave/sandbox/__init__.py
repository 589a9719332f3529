"""A cluster of real hosts on this machine: systemd-nspawn nodes, each in its own network namespace on a bridge.

Making sandbox hosts needs no Ansible: this package only runs the host's own tools (debootstrap, ip,
systemd-nspawn, ssh-keygen, gpg, apt-get) and records what it made so `down` removes exactly that.
"""

from enclave.sandbox.cluster import Sandbox, SandboxStatus
from enclave.sandbox.spec import DEFAULT_NAME, SandboxSpec

__all__ = ["DEFAULT_NAME", "Sandbox", "SandboxSpec", "SandboxStatus"]
