"""The warm-process worker: the process worker's pool and job, each run forked warm."""

from __future__ import annotations

import atexit
import contextlib
import cProfile
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import pkgutil
import runpy
import sys
import tempfile
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult
from pydantic import PrivateAttr

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.runner._control_channel import ControlChannel

PROFILE_ENV = "WARM_WORKER_PROFILE_DIR"
"""A directory: each run's child writes its cProfile statistics there (`<flow run id>.prof`)."""
PRELOAD_ENV = "WARM_WORKER_PRELOAD"
"""Comma-separated modules the fork server imports once; unset: every module of `flows`."""

ENGINE_MODULES = (
    # multiprocessing prepares each child by running the worker's main script again (as
    # `__mp_main__`): `prefect worker start` is Prefect's CLI script, whose import of
    # `prefect.cli` took 24 ms per run unless the fork server has it already
    "prefect.cli",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    # imported by the engine only when a run needs them (measured on a guarded rollback:
    # FastAPI's encoder alone, for a subflow's parameters, took 0.34 s)
    "fastapi.encoders",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.tls",
    "opentelemetry.metrics",
    "opentelemetry._logs",
    "pydantic.color",
    "rich._emoji_codes",
    "netrc",
)
SCHEDULED_EVENT = "prefect.flow-run.Scheduled"
SET_WORKING_DIRECTORY = frozenset(
    {
        "prefect.deployments.steps.set_working_directory",
        "prefect.deployments.steps.pull.set_working_directory",
    }
)


def preload_modules(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """What the fork server imports before it forks a run: the engine and the flows' modules."""
    named = environ.get(PRELOAD_ENV)
    if named is not None:
        modules = [m.strip() for m in named.split(",") if m.strip()]
    else:
        try:
            import flows
        except ImportError:
            modules = []
        else:
            modules = [f"flows.{m.name}" for m in pkgutil.iter_modules(flows.__path__)]
    return [*ENGINE_MODULES, __name__, *modules]


def fork_context() -> multiprocessing.context.ForkServerContext:
    """The fork server's context, its preload set (it starts on first use)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload_modules())
    return context


@dataclass(frozen=True)
class Preloaded:
    """What the fork server imported: each preloaded module's file, and the modification time
    of every source file it imported from outside the Python installation (the project's)."""

    modules: Mapping[str, str]
    sources: Mapping[str, int]

    def changed(self) -> list[str]:
        """The sources that changed on disk since the fork server imported them."""
        changed = []
        for path, mtime in self.sources.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    changed.append(path)
            except OSError:
                changed.append(path)
        return changed


def warm_up(context: multiprocessing.context.ForkServerContext) -> Preloaded:
    """Start the fork server, wait until it has imported its preload, and return what it
    imported (read by one child, forked from it)."""
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_report, args=(writer,), name="warm-worker-warm-up")
    child.start()
    writer.close()
    modules, sources = reader.recv()
    child.join()
    return Preloaded(modules, sources)


def _report(writer: multiprocessing.connection.Connection) -> None:
    """In a child of the fork server: what it has imported (see `Preloaded`)."""
    installed = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    project = set(preload_modules()) - {*ENGINE_MODULES, __name__}
    modules, sources = {}, {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not os.path.isfile(path):
            continue
        modules[name] = os.path.realpath(path)
        if not path.startswith(installed) or name in project:
            sources[path] = os.stat(path).st_mtime_ns
    writer.send((modules, sources))
    writer.close()


def preloaded_entrypoint(
    entrypoint: str | None, pull_steps: list[dict[str, Any]] | None, preloaded: Preloaded
) -> tuple[str, Path] | None:
    """The deployment's flow as a module the fork server imported, and the directory to run in.

    Only when that is certain to be the same code: the deployment's one pull step sets the
    working directory to a literal directory, its entrypoint is a file there
    (`flows/guarded_rollback.py:guarded_rollback`), and the fork server imported that very
    file as a module (`flows.guarded_rollback`). A run then skips the deployment read, the
    pull step and running its flow's file again: its engine imports the module (Prefect's
    `PREFECT__FLOW_ENTRYPOINT`). None: Prefect loads the flow as it always does.
    """
    if not entrypoint or ":" not in entrypoint or not pull_steps or len(pull_steps) != 1:
        return None
    if len(pull_steps[0]) != 1:
        return None
    [(step, inputs)] = pull_steps[0].items()
    if step not in SET_WORKING_DIRECTORY or not isinstance(inputs, dict):
        return None
    if set(inputs) != {"directory"}:
        return None
    directory = inputs["directory"]
    if not isinstance(directory, str) or "{{" in directory or not os.path.isabs(directory):
        return None
    path, _, function = entrypoint.rpartition(":")
    relative = Path(path)
    if relative.is_absolute() or relative.suffix != ".py" or ".." in relative.parts:
        return None
    module = ".".join(relative.with_suffix("").parts)
    imported = preloaded.modules.get(module)
    if imported is None or imported != os.path.realpath(Path(directory) / relative):
        return None
    return f"{module}:{function}", Path(directory)


def prefect_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables Prefect's settings are read from (`PREFECT_*`, not the engine's own
    `PREFECT__*` hand-offs such as the flow run id)."""
    return {
        key: value
        for key, value in environ.items()
        if key.startswith("PREFECT_") and not key.startswith("PREFECT__")
    }


def same_settings(
    env: Mapping[str, str], environ: Mapping[str, str], current: Mapping[str, str]
) -> bool:
    """Whether a run's environment `env` means the settings the fork server already has: it
    read them from `environ`, and `current` is how they export as variables (the worker puts
    those in every job's environment, spelt `1.0` where `environ` said `1`)."""
    wanted, had = prefect_settings(env), prefect_settings(environ)
    return set(had) <= set(wanted) and all(
        had.get(key) == value or current.get(key) == value for key, value in wanted.items()
    )


def run_engine(env: dict[str, str], cwd: str, settings_unchanged: bool) -> None:
    """In the forked child: what `python -m prefect.engine` does, with the run's environment.

    The engine's own `__main__` runs (reading `PREFECT__FLOW_RUN_ID`), under the fork
    server's settings, or under settings read afresh unless `settings_unchanged` (see
    `same_settings`). At the end the child shuts down the way an interpreter
    does (Prefect's log and event services drain, exit handlers run), since a forked child
    leaves by `os._exit`.
    """
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [sys.argv[0]]
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    code: int | str | None = 0
    profile_dir = env.get(PROFILE_ENV)
    profiler = cProfile.Profile() if profile_dir else None
    try:
        with contextlib.ExitStack() as stack:
            if profiler is not None:
                profiler.enable()
            if not settings_unchanged:  # reading them afresh costs 0.1-0.3 s
                stack.enter_context(
                    SettingsContext(profile=get_settings_context().profile, settings=Settings())
                )
            # runpy's note that prefect.engine is already imported: it is, by design
            warnings.filterwarnings(
                "ignore", "'prefect.engine' found in sys.modules", RuntimeWarning
            )
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        if profiler is not None and profile_dir:
            profiler.disable()
            profiler.dump_stats(Path(profile_dir) / f"{env.get('PREFECT__FLOW_RUN_ID')}.prof")
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    sys.exit(code)


class ForkedEngineStarter:
    """Starts a flow run as a child of the fork server (a runner `ProcessStarter`)."""

    def __init__(
        self,
        *,
        context: multiprocessing.context.ForkServerContext,
        cwd: Path,
        env: dict[str, str | None],
        control_channel: ControlChannel | None,
        settings: Mapping[str, str],
    ) -> None:
        self._context = context
        self._settings = settings
        self._cwd = cwd
        self._env = env
        self._control_channel = control_channel

    def environment(self, flow_run: FlowRun) -> dict[str, str]:
        """The run's environment, as the process worker's engine command has it.

        Prefect's settings are not exported into it as a fresh process needs them: the child
        inherits the fork server's, read from the worker's own environment and profile, and
        reads them again only when the job's environment changes a `PREFECT_*` variable.
        """
        env: dict[str, str | None] = {**os.environ, **self._env}
        env.update(
            {
                "PREFECT__FLOW_RUN_ID": str(flow_run.id),
                "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
            }
        )
        return {key: value for key, value in env.items() if value is not None}

    async def start(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        env = self.environment(flow_run)
        registered = False
        if self._control_channel is not None:
            with contextlib.suppress(RuntimeError):  # no loopback listener: kill-only cancel
                port, token = self._control_channel.register(flow_run.id)
                env["PREFECT__CONTROL_PORT"] = str(port)
                env["PREFECT__CONTROL_TOKEN"] = token
                registered = True
        handed_off = False
        try:
            child = self._context.Process(
                target=run_engine,
                args=(env, str(self._cwd), same_settings(env, os.environ, self._settings)),
                name=f"flow-run-{flow_run.id}",
            )
            await anyio.to_thread.run_sync(child.start)
            task_status.started(ProcessHandle(child))  # type: ignore[arg-type]
            handed_off = True
            await anyio.to_thread.run_sync(child.join, abandon_on_cancel=True)
        except BaseException:
            if registered and not handed_off and self._control_channel is not None:
                self._control_channel.unregister(flow_run.id)
            raise


class WarmProcessJobConfiguration(ProcessJobConfiguration):
    """The process worker's job, and where the run's deployment keeps its flow."""

    _entrypoint: str | None = PrivateAttr(default=None)
    _pull_steps: list[dict[str, Any]] | None = PrivateAttr(default=None)

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        super().prepare_for_flow_run(
            flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id
        )
        if deployment is not None:
            self._entrypoint = deployment.entrypoint
            self._pull_steps = deployment.pull_steps


class WarmProcessWorker(ProcessWorker):
    """The process worker's pool and job variables; each run forked from a warm parent."""

    type = "warm-process"
    job_configuration = WarmProcessJobConfiguration
    _description = (
        "Execute flow runs as children forked from a warm parent that has imported the"
        " flows once: a run starts in a fraction of a second, not the seconds a fresh"
        " Python process takes to import them."
    )
    _display_name = "Warm process"
    _documentation_url = "https://github.com/rollback-flows/rollback-flows"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fork_context = fork_context()
        self._preloaded = Preloaded({}, {})
        # the settings the fork server reads from this environment, as exported to jobs
        self._settings = get_current_settings().to_environment_variables(exclude_unset=True)
        self._told_changed: set[str] = set()
        self._wake_scope: anyio.CancelScope | None = None
        self._executors: FlowRunExecutorContext | None = None

    async def setup(self) -> None:
        await super().setup()
        self._preloaded = await anyio.to_thread.run_sync(warm_up, self._fork_context)
        # One runner executor context for every run (its client, cancellation observer and
        # control channel), not one per run: entering one costs 0.1-0.2 s. Without it (the
        # API unreachable at start) each run enters its own, as the process worker does.
        try:
            self._executors = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
        except Exception as exc:
            self._logger.warning("one executor context per run for now: %s", exc)
            self._executors = None
        assert self._runs_task_group is not None
        self._runs_task_group.start_soon(self._pick_up_on_scheduled_events)

    async def teardown(self, *exc_info: Any) -> None:
        if self._wake_scope is not None:
            self._wake_scope.cancel()
        self._executors = None
        await super().teardown(*exc_info)

    async def _pick_up_on_scheduled_events(self) -> None:
        """Between polls: a flow run scheduled anywhere makes the worker poll its pool now.

        The poll is Prefect's own (`get_and_submit_flow_runs`): it submits only runs of this
        pool that are due, never one already being submitted. Without the events stream
        (an old server, a proxy without websockets) the worker keeps polling on its interval.
        """
        events = EventFilter(event=EventNameFilter(name=[SCHEDULED_EVENT]))
        with anyio.CancelScope() as self._wake_scope:
            while True:
                try:
                    async with get_events_subscriber(filter=events) as subscriber:
                        async for _ in subscriber:
                            await self.get_and_submit_flow_runs()
                except Exception as exc:  # the polling loop still picks runs up
                    self._logger.warning("Events stream lost (%s); polling only for now", exc)
                    await anyio.sleep(5)

    def _code_changed(self, flow_run: FlowRun) -> bool:
        """Whether the fork server's code is no longer what is on disk (then a run starts in a
        fresh process, as with the process worker, and the SRE is told once per file)."""
        changed = self._preloaded.changed()
        if not changed:
            return False
        message = (
            "the flows' code changed on disk since this worker started (%s): this run starts in"
            " a fresh process, with the code as it is now; restart the worker to start runs"
            " warm again"
        )
        listed = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if changed[3:] else "")
        self.get_flow_run_logger(flow_run).warning(message, listed)
        if set(changed) - self._told_changed:
            self._logger.warning(message, listed)
            self._told_changed.update(changed)
        return True

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        if configuration._command_configured or self._code_changed(flow_run):
            return await super().run(flow_run, configuration, task_status)
        entry = preloaded_entrypoint(
            getattr(configuration, "_entrypoint", None),
            getattr(configuration, "_pull_steps", None),
            self._preloaded,
        )
        env = dict(configuration.env)
        if entry is not None:
            env["PREFECT__FLOW_ENTRYPOINT"] = entry[0]
            self.get_flow_run_logger(flow_run).info(
                "Flow %s already imported by the worker's fork server from %s, the pull"
                " step's directory: the run starts there without the pull step",
                entry[0],
                entry[1],
            )
        if task_status is None:
            task_status = anyio.TASK_STATUS_IGNORED
        working_dir_ctx = (
            contextlib.nullcontext(entry[1])
            if entry is not None
            else tempfile.TemporaryDirectory(suffix="prefect")
            if not configuration.working_dir
            else contextlib.nullcontext(configuration.working_dir)
        )
        execution: FlowRunExecutionResult | None = None
        with working_dir_ctx as working_dir, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            async with contextlib.AsyncExitStack() as per_run:
                ctx = self._executors
                if ctx is None:
                    ctx = await per_run.enter_async_context(FlowRunExecutorContext())
                starter = ForkedEngineStarter(
                    context=self._fork_context,
                    cwd=Path(working_dir).resolve(),
                    env=env,
                    control_channel=ctx.control_channel,
                    settings=self._settings,
                )
                executor = ctx.create_executor(
                    flow_run,
                    starter,
                    resolve_flow=load_flow_from_flow_run,
                    propose_submitting=False,
                )

                async def execute(
                    *, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
                ) -> None:
                    nonlocal execution
                    execution = await executor.submit(task_status=task_status)

                async with anyio.create_task_group() as group:
                    handle = await group.start(execute)
                    if handle.pid is None:
                        raise RuntimeError("Flow run process has no PID")
                    task_status.started(handle.pid)

        if execution is None or execution.status_code is None:
            raise RuntimeError("Failed to start flow run process.")
        return ProcessWorkerResult(
            status_code=execution.status_code, identifier=str(execution.handle.pid)
        )
