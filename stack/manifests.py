"""The rag-api Deployment manifest the demo, the benchmarks and the tests create."""

from __future__ import annotations

from typing import Any


def deployment_manifest(
    image: str,
    *,
    name: str = "rag-api",
    replicas: int = 3,
    container: str = "rag-api",
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Deployment of one container running `image`, its pods labelled `app: <name>`.

    `spec` adds or replaces fields of the Deployment's spec (strategy, revisionHistoryLimit,
    progressDeadlineSeconds, ...); `annotations` go on the Deployment itself.
    """
    labels = {"app": name}
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": container, "image": image}]},
            },
            **spec,
        },
    }
