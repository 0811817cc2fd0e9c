"""A Prefect worker whose flow runs start warm: forked from a parent that has imported them.

`prefect worker start --pool local --type warm-process` polls its pool like the `process`
worker and takes the same job variables (env, working_dir, stream_output, command), but a
flow run does not start a fresh `python -m prefect.engine`, which spends seconds importing
Prefect, the Kubernetes client, pandas and the flows before its first API call. Instead:

- At start the worker starts a fork server (`multiprocessing`'s `forkserver`): a separate,
  single-threaded Python process that imports the engine and the modules named in
  `WARM_WORKER_PRELOAD` once (default: every module of the `flows` package).
- Each flow run is a child forked from it, which runs exactly what `python -m prefect.engine`
  runs (the engine's own `__main__`, via `runpy`) with the run's environment, so pull steps,
  parameters, logs, pauses and results are Prefect's own.
- The run's lifecycle is Prefect's runner executor, as for the process worker: the child's
  pid is the run's infrastructure pid, a child that exits non-zero or is killed marks its run
  Crashed, a run set to Cancelling is terminated (SIGTERM through the control channel, then
  SIGKILL) and marked Cancelled, and the pool's and the worker's concurrency limits apply.
- When the deployment's one pull step changes into the directory whose file of the flow the
  fork server imported, the child imports the flow from there (Prefect's
  `PREFECT__FLOW_ENTRYPOINT`) instead of reading the deployment, running the pull step and
  running the flow's file again. When a source file the fork server imported has changed on
  disk since, runs start as fresh processes (the process worker's way), with the new code.
- A crash in one run is a crash of that child only; if the fork server itself dies, the next
  run starts a new one.
- Between polls (`PREFECT_WORKER_QUERY_SECONDS`) the worker listens to the server's events:
  a flow run scheduled in its pool is picked up at once, not at the next poll.

A job with its own `command` runs as the process worker would run it (a fresh process).
The worker registers itself with Prefect through the `prefect.collections` entry point.
"""

from __future__ import annotations

from warm_worker.worker import WarmProcessWorker

__all__ = ["WarmProcessWorker"]
