"""A loopback stand-in for GitHub's Actions REST API, shaped as GitHub documents it.

Serves, for one repository and the workflow files given (read from the repository's own
`.github/workflows/`: their `workflow_dispatch` inputs and `run-name`):

- `POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches` with
  `{"ref", "inputs"}`: 204 and no body; 404 "Not Found" for an unknown workflow; 422 for an
  unknown ref ("No ref found for: x"), unexpected inputs, a missing required input or a
  choice outside its options, with GitHub's messages;
- `GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs`: `{"total_count",
  "workflow_runs"}` newest first, filtered by `event`, `branch`, `status` and `created`
  (`>=`/`<=`/`>`/`<` a timestamp), paged by `page`/`per_page` (30, at most 100) with a
  `Link` header;
- `GET /repos/{owner}/{repo}/actions/runs/{run_id}`: the run object (`status` queued →
  in_progress → completed, `conclusion`, `html_url`, `display_title` from the run-name).

401 "Bad credentials" for a wrong token. `throttle()` makes the next requests answer a rate
limit (403 or 429 with `retry-after`, or `x-ratelimit-remaining: 0` and
`x-ratelimit-reset`). A dispatched run appears in the list after `appear_after` seconds, then
runs its `job` (a callable given the inputs, returning the conclusion) in a thread, as a
runner would; `run_steps` makes that job the workflow file's own `run:` steps. Every request
is recorded for assertions.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"
DOCS = "https://docs.github.com/rest/actions"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Run:
    id: int
    workflow: str
    display_title: str
    ref: str
    inputs: dict[str, str]
    created_at: datetime
    status: str = "queued"
    conclusion: str | None = None
    visible_at: float = 0.0


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _expand(text: str, context: dict[str, dict[str, str]]) -> str:
    """`${{ inputs.x }}`, `${{ vars.x }}`, `${{ secrets.x }}` (and `a || 'b'`) in `text`."""

    def fill(match: re.Match[str]) -> str:
        scope, name, fallback = match.group(1), match.group(2), match.group(3)
        return context.get(scope, {}).get(name, "") or (fallback or "")

    pattern = r"\$\{\{\s*(inputs|vars|secrets)\.(\w+)(?:\s*\|\|\s*'([^']*)')?\s*\}\}"
    return re.sub(pattern, fill, text)


def run_steps(
    workflow: str,
    variables: dict[str, str],
    secrets: dict[str, str],
    path: str,
    installed: tuple[str, ...] = ("pip install",),
) -> Callable[[dict[str, str]], str]:
    """A job that runs the workflow's own `run:` steps with bash, as a runner would: the job's
    `env` filled from the inputs, `vars` and `secrets`; `uses:` steps and steps that install
    what `path` already provides (`installed`) are the runner's setup and are skipped. The
    conclusion is `failure` from the first step that exits non-zero."""

    def job(inputs: dict[str, str]) -> str:
        data = yaml.safe_load((WORKFLOWS / workflow).read_text())
        [spec] = data["jobs"].values()
        context = {"inputs": inputs, "vars": variables, "secrets": secrets}
        env = {k: _expand(str(v), context) for k, v in (spec.get("env") or {}).items()}
        for step in spec["steps"]:
            script = step.get("run")
            if script is None or any(word in script for word in installed):
                continue
            done = subprocess.run(
                [
                    "bash",
                    "--noprofile",
                    "--norc",
                    "-eo",
                    "pipefail",
                    "-c",
                    _expand(script, context),
                ],
                env={**os.environ, "PATH": f"{path}:{os.environ['PATH']}", **env},
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"step {step.get('name')!r} failed: {done.stdout}{done.stderr}")
        return "success"

    return job


@dataclass
class FakeGitHubActions:
    """One repository's Actions API; `job(inputs) -> conclusion` is what each run does."""

    repository: str = "acme/rag-api"
    token: str = "ghp_actions_token"
    workflows: tuple[str, ...] = ("rollback.yml",)
    refs: tuple[str, ...] = ("main",)
    job: Callable[[dict[str, str]], str] = lambda inputs: "success"
    queued_seconds: float = 0.3
    appear_after: float = 0.5
    never_appear: bool = False
    refuse_run_reads: int = 0
    """The next reads of a run answer 401, as for a token revoked meanwhile."""
    requests: list[Request] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    job_errors: list[BaseException] = field(default_factory=list)
    _context: contextvars.Context = field(default_factory=contextvars.copy_context)
    _throttle: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeGitHubActions:
        """Serve on a free loopback port; jobs run in the context (settings) of this call."""
        fake = self
        self._context = contextvars.copy_context()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def throttle(self, times: int, status: int, **headers: str) -> None:
        """The next `times` requests answer `status` with `headers` (retry_after= becomes
        `retry-after`, x_ratelimit_reset= becomes `x-ratelimit-reset`, ...)."""
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        self._throttle.extend([(status, named)] * times)

    def dispatches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    # --- the API ---------------------------------------------------------------------------

    def _definition(self, workflow: str) -> dict[str, Any]:
        data = yaml.safe_load((WORKFLOWS / workflow).read_text())
        on = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as True
        return {
            "name": data.get("name", workflow),
            "run_name": data.get("run-name", ""),
            "inputs": (on.get("workflow_dispatch") or {}).get("inputs") or {},
        }

    def _run_body(self, run: Run) -> dict[str, Any]:
        owner, repo = self.repository.split("/")
        workflow_id = 1000 + self.workflows.index(run.workflow)
        return {
            "id": run.id,
            "name": self._definition(run.workflow)["name"],
            "display_title": run.display_title,
            "run_number": run.id - 70000,
            "run_attempt": 1,
            "event": "workflow_dispatch",
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": workflow_id,
            "head_branch": run.ref,
            "path": f".github/workflows/{run.workflow}",
            "url": f"{self.url}/repos/{self.repository}/actions/runs/{run.id}",
            "html_url": f"https://github.com/{owner}/{repo}/actions/runs/{run.id}",
            "created_at": _iso(run.created_at),
            "updated_at": _iso(datetime.now(UTC)),
            "run_started_at": _iso(run.created_at),
        }

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        if body is not None:
            handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _error(self, handler: BaseHTTPRequestHandler, status: int, message: str, doc: str) -> None:
        self._send(
            handler,
            status,
            {"message": message, "documentation_url": f"{DOCS}/{doc}", "status": str(status)},
        )

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        query = parse_qs(split.query)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.requests.append(Request(method, split.path, query, dict(handler.headers), body))
        with self._lock:
            throttled = self._throttle.pop(0) if self._throttle else None
        if throttled is not None:
            status, headers = throttled
            message = (
                "API rate limit exceeded for user ID 1."
                if headers.get("x-ratelimit-remaining") == "0"
                else "You have exceeded a secondary rate limit. Please wait a few minutes "
                "before you try again."
            )
            body_ = {"message": message, "documentation_url": DOCS, "status": str(status)}
            data = json.dumps(body_).encode()
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            self._error(handler, 401, "Bad credentials", "")
            return
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        if parts[:3] != ["repos", *self.repository.split("/")] or parts[3:4] != ["actions"]:
            self._error(handler, 404, "Not Found", "")
            return
        rest = parts[4:]
        if len(rest) == 3 and rest[0] == "workflows" and rest[2] == "dispatches":
            if method == "POST":
                self._dispatch(handler, rest[1], body or {})
                return
        elif len(rest) == 3 and rest[0] == "workflows" and rest[2] == "runs":
            if method == "GET":
                self._list(handler, rest[1], query, split.path)
                return
        elif len(rest) == 2 and rest[0] == "runs" and rest[1].isdigit() and method == "GET":
            if self.refuse_run_reads > 0:
                self.refuse_run_reads -= 1
                self._error(handler, 401, "Bad credentials", "")
                return
            run = next((r for r in self.runs if r.id == int(rest[1])), None)
            if run is None or time.monotonic() < run.visible_at:
                self._error(handler, 404, "Not Found", "workflow-runs#get-a-workflow-run")
            else:
                self._send(handler, 200, self._run_body(run))
            return
        self._error(handler, 404, "Not Found", "")

    def _dispatch(self, handler: BaseHTTPRequestHandler, workflow: str, body: dict) -> None:
        doc = "workflows#create-a-workflow-dispatch-event"
        if workflow not in self.workflows:
            self._error(handler, 404, "Not Found", doc)
            return
        ref = body.get("ref")
        if not ref:
            self._error(handler, 422, 'Invalid request.\n\n"ref" wasn\'t supplied.', doc)
            return
        if ref not in self.refs:
            self._error(handler, 422, f"No ref found for: {ref}", doc)
            return
        declared = self._definition(workflow)["inputs"]
        inputs = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (body.get("inputs") or {}).items()
        }
        unexpected = [k for k in inputs if k not in declared]
        if unexpected:
            self._error(handler, 422, f"Unexpected inputs provided: {json.dumps(unexpected)}", doc)
            return
        for name, spec in declared.items():
            if name not in inputs:
                if spec.get("required") and "default" not in spec:
                    self._error(handler, 422, f"Required input '{name}' not provided", doc)
                    return
                default = spec.get("default", "")
                inputs[name] = str(default).lower() if isinstance(default, bool) else str(default)
            if spec.get("type") == "choice" and inputs[name] not in spec.get("options", []):
                self._error(
                    handler,
                    422,
                    f"Provided value '{inputs[name]}' for input '{name}' not in the list of "
                    "allowed values",
                    doc,
                )
                return
            if spec.get("type") == "boolean" and inputs[name] not in ("true", "false"):
                self._error(
                    handler, 422, f"Provided value for input '{name}' is not a boolean", doc
                )
                return
        with self._lock:
            run = Run(
                id=70001 + len(self.runs),
                workflow=workflow,
                display_title=_expand(self._definition(workflow)["run_name"], {"inputs": inputs}),
                ref=ref,
                inputs=inputs,
                created_at=datetime.now(UTC),
                visible_at=float("inf")
                if self.never_appear
                else time.monotonic() + self.appear_after,
            )
            self.runs.append(run)
        threading.Thread(target=self._execute, args=(run,), daemon=True).start()
        self._send(handler, 204)

    def _execute(self, run: Run) -> None:
        time.sleep(self.appear_after + self.queued_seconds)
        run.status = "in_progress"
        try:
            conclusion = self._context.copy().run(self.job, dict(run.inputs))
        except Exception as exc:
            self.job_errors.append(exc)
            conclusion = "failure"
        run.conclusion = conclusion
        run.status = "completed"

    def _list(self, handler: BaseHTTPRequestHandler, workflow: str, query: dict, path: str) -> None:
        if workflow not in self.workflows:
            self._error(
                handler, 404, "Not Found", "workflow-runs#list-workflow-runs-for-a-workflow"
            )
            return
        now = time.monotonic()
        runs = [r for r in self.runs if r.workflow == workflow and now >= r.visible_at]
        one = {k: v[0] for k, v in query.items()}
        if "event" in one:
            runs = [r for r in runs if one["event"] == "workflow_dispatch"]
        if "branch" in one:
            runs = [r for r in runs if r.ref == one["branch"]]
        if "status" in one:
            runs = [r for r in runs if one["status"] in (r.status, r.conclusion)]
        if "created" in one:
            match = re.fullmatch(r"(>=|<=|>|<)?(.+)", one["created"])
            assert match, one["created"]
            op, stamp = match.group(1) or "=", datetime.fromisoformat(match.group(2))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)

            def keep(at: datetime) -> bool:
                at = at.replace(microsecond=0)
                return {
                    ">=": at >= stamp,
                    "<=": at <= stamp,
                    ">": at > stamp,
                    "<": at < stamp,
                    "=": at == stamp,
                }[op]

            runs = [r for r in runs if keep(r.created_at)]
        runs.sort(key=lambda r: r.id, reverse=True)
        per_page = min(int(one.get("per_page", "30")), 100)
        page = int(one.get("page", "1"))
        last = max(1, -(-len(runs) // per_page))
        chunk = runs[(page - 1) * per_page : page * per_page]
        links = []
        base_query = urlencode({k: v for k, v in one.items() if k != "page"})
        if page < last:
            links.append(f'<{self.url}{path}?{base_query}&page={page + 1}>; rel="next"')
            links.append(f'<{self.url}{path}?{base_query}&page={last}>; rel="last"')
        self._send(
            handler,
            200,
            {"total_count": len(runs), "workflow_runs": [self._run_body(r) for r in chunk]},
            {"Link": ", ".join(links)} if links else None,
        )
