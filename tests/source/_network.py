"""Registry-side processes and relays of the source-workflow tests: a standalone registry
(``drimbox registry serve``), a relay that withholds the registry's answers, a gateway that
answers HTML."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.box import free_port

__all__ = ["Gateway", "HoldingProxy", "StandaloneRegistry"]

_DRIMBOX = Path(sys.executable).parent / "drimbox"
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_POLL = 0.05
_START_TIMEOUT = 30.0


class StandaloneRegistry:
    """``drimbox registry serve`` in a subprocess; restartable on the same port and database."""

    def __init__(self, directory: Path, *, production: bool = False) -> None:
        self.directory = directory
        self.production = production
        self.port = free_port()
        self.database = f"sqlite:///{directory / 'registry.sqlite3'}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """FHIR base."""
        return f"http://127.0.0.1:{self.port}/registry"

    def start(self) -> None:
        """Start and wait until ``/metadata`` answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "registry.log").open("ab")
        self.process = subprocess.Popen(
            [str(_DRIMBOX), "registry", "serve", "--http-port", str(self.port),
             "--database", self.database, "--audit", str(self.directory / "audit.jsonl"),
             *(["--production"] if self.production else [])],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the standalone registry exited at start-up")
            try:
                if httpx.get(f"{self.url}/metadata", timeout=1).status_code == httpx.codes.OK:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL)
        raise RuntimeError("the standalone registry did not start")

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class HoldingProxy:
    """A TCP relay in front of the registry that can withhold the registry's answers.

    While ``hold`` is set, what the registry answers is read and dropped (``answered`` is set),
    so the registry has committed a publication whose answer the box never gets: the window
    in which a crash must not cause a second entry.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hold = threading.Event()
        self.answered = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/registry") -> str:
        """URL through the proxy."""
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._closing.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()  # registry down: the box sees a transport error
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            threading.Thread(target=self._copy, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._copy, args=(upstream, client, True), daemon=True).start()

    def _copy(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self.hold.is_set():
                    self.answered.set()
                    continue
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Gateway:
    """An HTTP gateway in front of the registry; while ``broken`` it answers every request
    ``200 text/html`` (a misconfigured proxy's page), else it forwards to the registry."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.broken = threading.Event()
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                return

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if gateway.broken.is_set():
                    status, headers, content = 200, {"Content-Type": "text/html"}, b"<html/>"
                else:
                    forwarded = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS
                    }
                    answer = httpx.request(
                        self.command, gateway.upstream + self.path, headers=forwarded,
                        content=body, timeout=30,
                    )  # fmt: skip
                    status, content = answer.status_code, answer.content
                    headers = {"Content-Type": answer.headers.get("content-type", "")}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _relay  # noqa: N815 (http.server names)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """The registry's FHIR base through the gateway."""
        return f"http://127.0.0.1:{self.port}/registry"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
