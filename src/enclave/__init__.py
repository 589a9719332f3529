"""enclave: deploy open-weight LLMs onto a private GPU cluster; nothing leaves the network."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llm-enclave")
except PackageNotFoundError:  # running from a checkout without an install
    __version__ = "0+unknown"
