"""Serving the dashboard: bind first (so a port in use is one sentence), then uvicorn."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn

from onlooker.cli.web.app import LOCAL_HOSTS, create_app

log = logging.getLogger(__name__)


class PortInUse(OSError):
    """The address asked for is taken (another dashboard, another server)."""


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port); PortInUse when taken."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise OSError(f"cannot listen on '{host}': {err.strerror}") from err
    sock = socket.socket(family, kind, proto)
    # a restart right after a stop must not wait for TIME_WAIT; a live listener on the
    # port still refuses the bind (Linux)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is in use: give another with --port,"
                            " or --port 0 for any free one") from err
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror}") from err
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, calling `on_started` once it accepts connections: by then its
    Ctrl-C handler is in place, so a URL printed from there stops cleanly at once."""

    on_started: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()


class Dashboard:
    """The dashboard of one project on a bound socket: `serve()` in the foreground
    (Ctrl-C stops it), or `start()` / `stop()` around a thread (tests, benchmarks)."""

    def __init__(self, project: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
        # on localhost only local names are served (no DNS rebinding); Starlette cannot
        # read a bracketed IPv6 Host header, so ::1 serves any
        hosts = [*LOCAL_HOSTS, host] if is_local(host) and ":" not in host else ["*"]
        self.app = create_app(project, allowed_hosts=hosts)
        self.sock = bind(host, port)
        bound = self.sock.getsockname()
        self.host, self.port = host, int(bound[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", ws="none", timeout_graceful_shutdown=10)
        self.server = _Server(config)
        self._thread: threading.Thread | None = None

    def serve(self, on_started: Callable[[], None] | None = None) -> None:
        """Serve until interrupted (uvicorn handles SIGINT / SIGTERM); `on_started` is
        called once connections are accepted."""
        self.server.on_started = on_started
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self, timeout: float = 30.0) -> Dashboard:
        up = threading.Event()
        self._thread = threading.Thread(target=self.serve, args=(up.set,), name="onlooker-ui",
                                        daemon=True)
        self._thread.start()
        if not up.wait(timeout):
            raise RuntimeError("the dashboard did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
