"""Monitoring helpers; signals.py is also an on-host tool (standard library only)."""
