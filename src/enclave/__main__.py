"""`python -m enclave` is the same as the `enclave` command."""

from enclave.cli import main

main()
