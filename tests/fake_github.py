"""A loopback stand-in for GitHub's packages API, shaped as GitHub documents it.

Serves `GET /orgs/{org}/packages/container/{name}/versions` and `/users/{user}/...`: a JSON
list of package versions, newest first, each with `metadata.container.tags`; `page` and
`per_page` (default 30, at most 100) with a `Link` header (`rel="next"`, `"last"`, ...);
401 "Bad credentials" for a wrong or missing token; 404 "Package not found." for an unknown
owner or package. Every request is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakeGitHub:
    """Packages per (owner kind, owner, package): a list of tag lists, newest version first."""

    token: str = "ghp_test_token"
    packages: dict[tuple[str, str, str], list[list[str]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_package(self, owner_kind: str, owner: str, name: str, tags: list[list[str]]) -> None:
        self.packages[(owner_kind, owner, name)] = tags

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _version(
        self, kind: str, owner: str, name: str, number: int, tags: list[str]
    ) -> dict[str, Any]:
        vid = 1000 + number
        digest = "sha256:" + hashlib.sha256(f"{name}{number}".encode()).hexdigest()
        web_owner = "orgs" if kind == "orgs" else "users"
        return {
            "id": vid,
            "name": digest,
            "url": f"{self.url}/{kind}/{owner}/packages/container/{name}/versions/{vid}",
            "package_html_url": f"https://github.com/{web_owner}/{owner}/packages/container/package/{name}",
            "created_at": f"2024-01-{1 + number % 28:02d}T10:00:00Z",
            "updated_at": f"2024-01-{1 + number % 28:02d}T10:00:00Z",
            "html_url": f"https://github.com/{web_owner}/{owner}/packages/container/{name}/{vid}",
            "metadata": {"package_type": "container", "container": {"tags": tags}},
        }

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, body: Any, link: str = ""
    ) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
        if link:
            handler.send_header("Link", link)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        query = parse_qs(split.query)
        self.requests.append(Request(split.path, query, dict(handler.headers.items())))
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            self._send(
                handler,
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
            return
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        key = None
        if (
            len(parts) == 6
            and parts[0] in ("orgs", "users")
            and parts[2:4] == ["packages", "container"]
            and parts[5] == "versions"
        ):
            key = ("org" if parts[0] == "orgs" else "user", parts[1], parts[4])
        if key is None or key not in self.packages:
            self._send(
                handler,
                404,
                {
                    "message": "Package not found.",
                    "documentation_url": "https://docs.github.com/rest/packages/packages",
                    "status": "404",
                },
            )
            return
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = int(query.get("page", ["1"])[0])
        versions = self.packages[key]
        last = max(1, -(-len(versions) // per_page))
        chunk = versions[(page - 1) * per_page : page * per_page]
        body = [
            self._version(
                parts[0], parts[1], parts[4], len(versions) - ((page - 1) * per_page + i), tags
            )
            for i, tags in enumerate(chunk)
        ]
        base = f"{self.url}{split.path}"
        rels = []
        if page < last:
            rels += [
                f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"',
                f'<{base}?per_page={per_page}&page={last}>; rel="last"',
            ]
        if page > 1:
            rels += [
                f'<{base}?per_page={per_page}&page=1>; rel="first"',
                f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"',
            ]
        self._send(handler, 200, body, ", ".join(rels))
