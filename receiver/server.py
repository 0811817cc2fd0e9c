"""Serve the receiver app with uvicorn on loopback, in the foreground or in a background thread."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from playbook.errors import RequestTimeoutError


class ReceiverServer:
    """One uvicorn server for the receiver app, bound to `host:port` (port 0: a free one)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.run()

    def start(self, timeout: float = 30) -> str:
        """Serve in a daemon thread; return the base URL once it accepts requests."""
        self._thread = threading.Thread(target=self._server.run, name="receiver", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RequestTimeoutError(f"the receiver did not start within {timeout:.0f}s")
            time.sleep(0.02)
        return self.url

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:43210."""
        sockets = [s for server in self._server.servers for s in server.sockets]
        host, port = sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
