"""Deciding before acting: inventory validation (and, later, model profiles and parallelism). Pure over data;
it never runs a playbook."""
