"""The gateway's controller-side helpers (the sandbox's client keys)."""
