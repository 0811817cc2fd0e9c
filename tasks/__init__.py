"""Prefect tasks, one module per external system (Kubernetes, Istio, the registry, ...)."""
