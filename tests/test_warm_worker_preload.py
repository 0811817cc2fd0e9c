"""What the warm worker's fork server imported, and when a run may use it as it is.

A real fork server (multiprocessing's `forkserver`) imports a package of the test's own on
disk; the tests then read what it reports, change the files, and ask whether a deployment's
flow is that very code.
"""

from __future__ import annotations

import multiprocessing.forkserver
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warm_worker.worker import (
    PRELOAD_ENV,
    Preloaded,
    fork_context,
    preloaded_entrypoint,
    same_settings,
    warm_up,
)

PACKAGE = "warm_preload_flows"


@dataclass(frozen=True)
class Served:
    home: Path
    preloaded: Preloaded


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A fork server that preloaded `warm_preload_flows.rollback` from a directory of its own."""
    home = tmp_path_factory.mktemp("home")
    (home / PACKAGE).mkdir()
    (home / PACKAGE / "__init__.py").write_text("")
    (home / PACKAGE / "helpers.py").write_text("WORD = 'first'\n")
    (home / PACKAGE / "rollback.py").write_text(
        f"from {PACKAGE}.helpers import WORD\n\ndef rollback():\n    return WORD\n"
    )
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    # the fork server finds modules on its own path (Python 3.11 ignores the parent's sys.path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PRELOAD_ENV, f"{PACKAGE}.rollback")
        env.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(home), os.getenv("PYTHONPATH")]))
        )
        try:
            yield Served(home, warm_up(fork_context()))
        finally:
            multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]


def pull(directory: Path | str) -> list[dict[str, object]]:
    return [{"prefect.deployments.steps.set_working_directory": {"directory": str(directory)}}]


def test_the_fork_server_reports_its_modules_and_the_project_sources_it_imported(
    served: Served,
) -> None:
    package = served.home / PACKAGE
    assert served.preloaded.modules[f"{PACKAGE}.rollback"] == str(
        (package / "rollback.py").resolve()
    )
    # the preloaded module and what it imported in turn, not the installed libraries
    assert {str(package / "rollback.py"), str(package / "helpers.py")} <= set(
        served.preloaded.sources
    )
    assert not [path for path in served.preloaded.sources if "site-packages" in path]
    assert "prefect.engine" in served.preloaded.modules
    assert served.preloaded.changed() == []


def test_a_deployment_whose_pull_step_holds_the_preloaded_file_runs_its_module(
    served: Served,
) -> None:
    entry = preloaded_entrypoint(
        f"{PACKAGE}/rollback.py:rollback", pull(served.home), served.preloaded
    )
    assert entry == (f"{PACKAGE}.rollback:rollback", served.home)


@pytest.mark.parametrize(
    ("entrypoint", "steps"),
    [
        # another directory holds another copy of the code
        (f"{PACKAGE}/rollback.py:rollback", pull("/elsewhere")),
        # a module the fork server did not import
        (f"{PACKAGE}/helpers2.py:rollback", "home"),
        # a directory known only when the step runs
        (f"{PACKAGE}/rollback.py:rollback", pull("{{ $ROLLBACK_FLOWS_HOME }}")),
        (f"{PACKAGE}/rollback.py:rollback", pull("relative/dir")),
        # pull steps that fetch code (git clone) or do more than change directory
        (
            f"{PACKAGE}/rollback.py:rollback",
            [{"prefect.deployments.steps.git_clone": {"repository": "https://x/y.git"}}],
        ),
        (
            f"{PACKAGE}/rollback.py:rollback",
            [*pull("home"), {"prefect.deployments.steps.run_shell_script": {"script": "make"}}],
        ),
        (f"{PACKAGE}/rollback.py:rollback", []),
        (f"{PACKAGE}/rollback.py:rollback", None),
        # entrypoints that are not a file of the directory
        (f"{PACKAGE}.rollback:rollback", "home"),
        (f"../{PACKAGE}/rollback.py:rollback", "home"),
        ("/abs/rollback.py:rollback", "home"),
        (None, "home"),
    ],
)
def test_any_other_deployment_loads_its_flow_as_prefect_does(
    served: Served, entrypoint: str | None, steps: object
) -> None:
    if steps == "home":
        steps = pull(served.home)
    assert preloaded_entrypoint(entrypoint, steps, served.preloaded) is None  # type: ignore[arg-type]


def test_an_edited_or_deleted_source_is_a_change_since_the_preload(
    served: Served, tmp_path: Path
) -> None:
    helpers = served.home / PACKAGE / "helpers.py"
    mtime, text = helpers.stat().st_mtime_ns, helpers.read_text()
    preloaded = Preloaded(served.preloaded.modules, dict(served.preloaded.sources))
    try:
        helpers.write_text("WORD = 'second'\n")
        os.utime(helpers, ns=(mtime + 10**9, mtime + 10**9))
        assert preloaded.changed() == [str(helpers)]
    finally:
        helpers.write_text(text)
        os.utime(helpers, ns=(mtime, mtime))
    assert preloaded.changed() == []
    gone = Preloaded({}, {str(tmp_path / "gone.py"): 1})
    assert gone.changed() == [str(tmp_path / "gone.py")]


WORKER = {"PREFECT_API_URL": "http://127.0.0.1:4200/api", "PREFECT_WORKER_QUERY_SECONDS": "1"}
EXPORTED = {
    "PREFECT_API_URL": "http://127.0.0.1:4200/api",
    "PREFECT_WORKER_QUERY_SECONDS": "1.0",
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "True",
}


def test_a_job_environment_with_the_workers_settings_as_exported_keeps_the_fork_servers() -> None:
    # what the worker puts in every job: its environment, its settings exported, the run's id
    job = {**WORKER, **EXPORTED, "PREFECT__FLOW_RUN_ID": "x", "ROLLBACK_FLOWS_SERVICES": "s"}
    assert same_settings(job, WORKER, EXPORTED)


@pytest.mark.parametrize(
    "job",
    [
        {**WORKER, "PREFECT_API_URL": "http://elsewhere/api"},  # a job of another server
        {**WORKER, "PREFECT_LOGGING_LEVEL": "DEBUG"},  # a setting of the job's own
        {"PREFECT_API_URL": WORKER["PREFECT_API_URL"]},  # one of the worker's removed
    ],
)
def test_a_job_environment_that_changes_a_setting_is_read_afresh(job: dict[str, str]) -> None:
    assert not same_settings(job, WORKER, EXPORTED)
