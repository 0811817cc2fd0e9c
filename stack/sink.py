"""A loopback webhook sink: records every JSON body POSTed to it, for tests and the demo.

It stands in for the Slack-compatible webhook of notifications and receives Alertmanager's
webhooks in the stack's own tests.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One POST the sink received."""

    path: str
    headers: dict[str, str]
    body: Any
    received_at: float


@dataclass
class WebhookSink:
    """An HTTP server on 127.0.0.1 that answers 200 to every POST and keeps its body."""

    deliveries: list[Delivery] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> str:
        """Start serving in a thread; return the sink's base URL."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with sink._lock:
                    sink.deliveries.append(
                        Delivery(self.path, dict(self.headers), body, time.time())
                    )
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "the sink is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def received(self, path: str | None = None) -> list[Delivery]:
        """What was received so far, optionally only on one path."""
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def wait_for(self, predicate: Any, timeout: float) -> Delivery:
        """Wait until a delivery satisfies `predicate`; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for delivery in self.received():
                if predicate(delivery):
                    return delivery
            time.sleep(0.1)
        raise TimeoutError(
            f"no matching delivery within {timeout:.0f}s; got {len(self.received())} others"
        )

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
