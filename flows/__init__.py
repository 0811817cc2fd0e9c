"""Prefect flows, one module per section of the rollback playbook."""
