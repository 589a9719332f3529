"""`enclave status`: one read of every engine and the gateway, parsed into one cluster view.

`probe` holds what the hosts answer (raw texts), `metrics` and `gpus` parse them (pure), `cluster` folds the
answers and the plan into per-node rows, `collect` runs the read-only playbook that gathers them.
"""
