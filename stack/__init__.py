"""The local stack: a real Kubernetes control plane with KWOK, Prometheus, Alertmanager, the rag-api simulator and Prefect, all on loopback."""
