"""Work pools of their own for a test, with deployments of prefect.yaml on them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import yaml
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from stack.config import REPO_DIR
from stack.local import StackState
from stack.prefect_worker import _prefect


@contextlib.contextmanager
def pool_with_deployment(
    state: StackState,
    pool: str,
    pool_type: str,
    flow_name: str,
    deployment: str,
    home: Path,
    tmp_path: Path,
    *pool_options: str,
) -> Iterator[str]:
    """Work pool `pool` (`prefect work-pool create --type pool_type`) with prefect.yaml's
    deployment `flow_name`/`deployment` deployed to it by `prefect deploy`, under the name
    `pool` (so the stack's own deployment stays as it is), the code's home being `home`.
    Yields the deployment's full name; both are deleted afterwards."""
    assert state.prefect_api_url is not None
    env = {
        "PREFECT_API_URL": state.prefect_api_url,
        "ROLLBACK_FLOWS_HOME": str(home),
        "ROLLBACK_FLOWS_WORK_POOL": pool,
    }
    _prefect("work-pool", "create", pool, "--type", pool_type, *pool_options, env=env)
    project = yaml.safe_load((REPO_DIR / "prefect.yaml").read_text())
    [entry] = [
        d for d in project["deployments"] if d["flow_name"] == flow_name and d["name"] == deployment
    ]
    project["deployments"] = [{**entry, "name": pool}]
    prefect_file = tmp_path / f"prefect-{pool}.yaml"
    prefect_file.write_text(yaml.safe_dump(project))
    _prefect("deploy", "--prefect-file", str(prefect_file), "--all", env=env)
    try:
        yield f"{flow_name}/{pool}"
    finally:
        with get_client(sync_client=True) as prefect, contextlib.suppress(ObjectNotFound):
            prefect.delete_deployment(prefect.read_deployment_by_name(f"{flow_name}/{pool}").id)
            prefect.delete_work_pool(pool)
