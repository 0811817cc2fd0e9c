"""The Prefect UI of the session's stack in a real browser (Debian's Chromium, by Playwright).

Everything is checked on the rendered page, as an SRE sees it: a rollback run of the
`kubernetes-rollback/default` deployment on the worker with its state, its task runs and its
markdown report; every deployment of prefect.yaml; the custom-run form with each parameter's
title and description. Screenshots go to test-output/ui/ (their paths are printed).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import build_history, use_services
from kubernetes import client
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.kubernetes_rollback import kubernetes_rollback
from playbook.services import SERVICES_ENV
from stack.config import REPO_DIR
from stack.local import StackState
from tasks.kubernetes import (
    read_rollout,
    undo_deployment,
    wait_for_rollout,
)

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium reaches for Google's services, and this
# machine's closed network refuses them.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT_DIR = REPO_DIR / "test-output" / "ui"
DEPLOYMENT = "kubernetes-rollback/default"
# What the UI may take to render a page once the stack is up: the page's actions and every
# expect() (Playwright's own default for expect is 5 s, which a loaded CI machine exceeded when
# the Task Runs tab fetched its list).
RENDER_TIMEOUT_MS = 30_000
expect.set_options(timeout=RENDER_TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; never a browser downloaded by `playwright install`."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)  # no screenshot of an earlier run stays
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser page; no request leaves loopback (the UI's analytics library fetches
    its remote config even with analytics off: refused here at once). A failed test leaves a
    screenshot of the page as it was."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(RENDER_TIMEOUT_MS)
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    page = context.new_page()
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        screenshot(page, f"failed-{request.node.name}")
    context.close()


@pytest.fixture
def ui(page: Page, local_stack: StackState) -> str:
    """The base URL of the UI a browser lands on at the server's root, once it has rendered
    its dashboard."""
    assert local_stack.prefect_api_url is not None
    root = local_stack.prefect_api_url.removesuffix("/api")
    page.goto(root)
    api_url = page.request.get(f"{root}/ui-settings").json()["api_url"]
    expect(
        page.get_by_role("navigation", name="breadcrumb"),
        f"the UI at {root} renders its dashboard (its /ui-settings send it to {api_url})",
    ).to_have_text("Dashboard")
    # Prefect 3.9 serves two UIs (/ and /v2) and redirects / to the default one.
    landed = page.url.split("?")[0]
    return landed.removesuffix("/dashboard").rstrip("/")


def screenshot(page: Page, name: str) -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def docstring_args(fn: Callable[..., Any]) -> dict[str, str]:
    """The Google-style `Args:` of `fn`'s docstring: parameter → its description."""
    args: dict[str, str] = {}
    current = None
    in_args = False
    for line in inspect.cleandoc(fn.__doc__ or "").splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if not line.strip() or not line.startswith(" "):
            if line.strip():  # the next section
                break
            continue
        entry = re.match(r"^ {4}(\w+)(?: \(.*\))?: (.*)$", line)
        if entry:
            current = entry.group(1)
            args[current] = entry.group(2).strip()
        elif current:
            args[current] += " " + line.strip()
    return args


def test_a_rollback_run_shows_its_state_task_runs_and_report(
    ui: str,
    page: Page,
    local_stack: StackState,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SRE opens the run of a rollback started on the worker: Completed, its task runs,
    and the markdown report rendered on the artifact's page."""
    use_services(monkeypatch, tmp_path, namespace)
    build_history(client.AppsV1Api(kube_api), namespace, ["v1.2.3", "v1.2.4"])
    # The run executes on the stack's worker; its services file (rag-api in this test's
    # namespace) goes with the run as a job variable.
    # Playwright's sync API runs an event loop in this thread: without _sync, Prefect would
    # hand back a coroutine.
    run: FlowRun = run_deployment(  # type: ignore[call-arg, assignment]
        DEPLOYMENT,
        parameters={"service": "rag-api"},
        job_variables={"env": {SERVICES_ENV: os.environ[SERVICES_ENV]}},
        timeout=180,
        poll_interval=1,
        _sync=True,
    )
    assert run.state is not None and run.state.is_final(), f"{run.name} is {run.state_name}"
    print(f"flow run {run.name}: {run.state_name} {run.state.message or ''}")

    page.goto(f"{ui}/runs/flow-run/{run.id}")
    header = page.get_by_text(run.name, exact=True).first
    expect(header).to_be_visible()
    # The run's final state, shown once the worker finished it.
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    task_runs = page.get_by_text(re.compile(r"^\d+ Task runs?$")).first
    expect(task_runs).to_be_visible()
    count = int(task_runs.inner_text().split()[0])

    page.get_by_role("tab", name="Task Runs").click()
    # Procedure 2's steps, each listed by its task run's name (the task's and a suffix) ...
    for task in (read_rollout, undo_deployment, wait_for_rollout):
        expect(page.get_by_text(re.compile(rf"^{re.escape(task.name)}-\w+$"))).to_be_visible()
    # ... and every task run of the run Completed.
    expect(page.get_by_text(f"({count} Completed)", exact=True)).to_be_visible()
    expect(page.get_by_text("Items per page")).to_be_visible()
    screenshot(page, "rollback-run")

    page.get_by_role("tab", name="Artifacts").click()
    report_key = "kubernetes-rollback-rag-api"
    card = page.get_by_role("link").filter(has_text=report_key)
    expect(card).to_be_visible()
    expect(card).to_contain_text("MARKDOWN", ignore_case=True)
    card.click()

    # The artifact page renders the markdown: headings and tables, not "# ..." source text.
    expect(page).to_have_url(re.compile(r"/artifacts/artifact/"))
    title = f"kubernetes_rollback: rag-api in {namespace}"
    expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
    expect(page.get_by_text(f"# {title}")).to_be_hidden()  # the source is on the Raw tab
    for section in ("Steps", "Pods"):
        expect(page.get_by_role("heading", level=2, name=section)).to_be_visible()
    outcome = "rolled back from revision 2 to revision 1 (now revision 3)"
    summary = page.get_by_role("row").filter(
        has=page.get_by_role("cell", name="outcome", exact=True)
    )
    expect(summary.get_by_role("cell").last).to_have_text(outcome)
    for field, value in (("from", "v1.2.4 (revision 2)"), ("to", "v1.2.3 (revision 1")):
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=field, exact=True))
        expect(row.get_by_role("cell").last).to_contain_text(value)
    pods = page.get_by_role("row").filter(has_text=re.compile(r"^rag-api-"))
    expect(pods).to_have_count(3)
    for i in range(3):
        expect(pods.nth(i)).to_contain_text("Running")
    screenshot(page, "rollback-report-artifact")

    # The link `make demo` prints (the server's root UI, Prefect's V1) shows the same run.
    assert local_stack.prefect_api_url is not None
    page.goto(f"{local_stack.prefect_api_url.removesuffix('/api')}/runs/flow-run/{run.id}")
    expect(page.get_by_text(run.name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    expect(page.get_by_text("Something went wrong")).to_be_hidden()
    screenshot(page, "rollback-run-v1")


def test_the_deployments_page_lists_every_deployment_of_prefect_yaml(ui: str, page: Page) -> None:
    deployments = yaml.safe_load((REPO_DIR / "prefect.yaml").read_text())["deployments"]
    expected = [(d["flow_name"], d["name"]) for d in deployments]

    page.get_by_role("link", name="Deployments", exact=True).first.click()
    expect(page.get_by_text(f"{len(expected)} Deployments", exact=True)).to_be_visible()
    # the list shows 10 a page: all of them on one
    page.wait_for_url("**/deployments?*limit=*")
    page.goto(re.sub(r"limit=\d+", "limit=50", page.url))
    expect(page.get_by_text(f"{len(expected)} Deployments", exact=True)).to_be_visible()
    for flow_name, name in expected:
        row = (
            page.get_by_role("row")
            .filter(has=page.get_by_text(flow_name, exact=True))
            .filter(has=page.get_by_role("link", name=name, exact=True))
        )
        expect(row, f"deployment {flow_name}/{name}").to_have_count(1)
    screenshot(page, "deployments")


def test_the_custom_run_form_shows_each_parameter_with_title_and_description(
    ui: str, page: Page
) -> None:
    """The form an SRE fills in to start a rollback by hand: every parameter of the flow,
    titled by its name, described by the flow's docstring."""
    name = DEPLOYMENT.split("/")[1]
    descriptions = docstring_args(kubernetes_rollback.fn)
    parameters = inspect.signature(kubernetes_rollback.fn).parameters
    assert set(descriptions) == set(parameters), "the flow's docstring documents every parameter"

    # straight to the deployment's page (the list's navigation is the test above; under load
    # the list re-rendered while its link was being clicked)
    with get_client(sync_client=True) as prefect:
        deployment = prefect.read_deployment_by_name(DEPLOYMENT)
    page.goto(f"{ui}/deployments/deployment/{deployment.id}")
    expect(page.get_by_text(name, exact=True).first).to_be_visible()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()

    expect(page.get_by_role("heading", name="Parameters")).to_be_visible()
    for parameter, spec in parameters.items():
        optional = spec.default is not inspect.Parameter.empty
        title = f"{parameter} (Optional)" if optional else parameter
        label = page.locator("label").filter(has_text=re.compile(rf"^{re.escape(title)}$"))
        expect(label, f"parameter {parameter}").to_be_visible()
        description = label.locator("xpath=following-sibling::p[1]")
        expect(description, f"description of {parameter}").to_have_text(descriptions[parameter])
    screenshot(page, "custom-run-form")
