"""The shipped host checks: a testinfra suite run by `enclave verify` (and by plain pytest) against an inventory.

One module per concern; each check names the host and the cause when it fails. Checks read the same settings
the roles used: the roles' defaults, overridden by the inventory's variables.
"""
