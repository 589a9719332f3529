"""weights: air-gap bundles, the sandbox's tiny model, the signer pin; the on-host tools (manifests, hashing,
transfer) are in enclave.hosttools."""

from __future__ import annotations

from importlib.util import find_spec

from enclave.errors import UsageError

# The sandbox's tiny model's repository id. Here, not in tinymodel.py, so that naming it (the sandbox, the CLI)
# does not import numpy, safetensors and tokenizers: those come only with the `sandbox` extra (pyproject.toml).
TINY_MODEL_REPO = "enclave-sandbox/tiny-llama"
TINY_MODEL_MODULES = ("numpy", "safetensors", "tokenizers")


def require_tiny_model_modules() -> None:
    """Before the sandbox makes its tiny model: one line naming the extra instead of an ImportError's traceback.
    find_spec looks the modules up without importing them, so the check costs nothing when they are there."""
    missing = [name for name in TINY_MODEL_MODULES if find_spec(name) is None]
    if missing:
        raise UsageError(f"the sandbox's tiny model needs {', '.join(missing)}: "
                         "pip install 'llm-enclave[sandbox]'")
