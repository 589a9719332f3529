"""The on-host tools: installed once on every host as `{{ enclave_tool_dir }}/hosttools/` (roles/enclave/tasks/
tools.yml, from the explicit list `enclave_host_tools`) and run there by path with the system python3; the controller
imports the same modules as enclave.hosttools.

    nodetool.py       the weights tool's command line (manifest, verify, sign, activate, space-check, status, ...);
                      its parts: errors, common, manifest, tree, build, stamps, verify, signatures, activation, space
    transfer.py       the relay between hosts and the resuming HTTP fetch
    hubfetch.py       the hub client's fetch (run with the staging host's hub-client venv, not the system python3)
    signals.py        the kit's own signals as node exporter textfile metrics (enclave-signals.service)
    accesslog.py      the gateway's access log: token accounting (imported by signals, sent alone by `script`)
    engine_status.py  what `enclave status` reads on a node (sent alone by `script`)
    run_sent.py       runs a tool from the controller's copy of the package, sent on stdin (`nodetool status`)

Rules, because the hosts have python3 but no enclave package:
- Standard library only (hubfetch.py also imports huggingface_hub, late, from the venv it runs with).
- Imports between these modules are relative, so the same files work as enclave.hosttools on the controller and as
  hosttools on a host.
- A tool run by path (`python3 .../hosttools/nodetool.py`) has no package, so its relative imports would fail: each
  such entry module names one first (PEP 366: when `__package__` is empty, put the folder's parent on sys.path and
  set `__package__` to the folder's name).
- engine_status.py and accesslog.py are sent as one file by Ansible's `script` module, and run_sent.py as
  `python3 -c`, without their siblings: they import nothing of this package (tests/unit/test_hosttools.py checks
  both rules).
"""
