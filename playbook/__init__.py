"""Pure logic of the rollback playbook: typed results, configuration, errors; no I/O."""
