"""What the service's unit, supervisor and client share: where it lives, its errors, and
how root opens a folder or writes a file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from onlooker.agent.errors import AgentError

DEFAULT_SOCKET = Path("/run/onlooker/service.sock")
DEFAULT_STATE = Path("/var/lib/onlooker")
SOCKET_ENV = "ONLOOKER_SERVICE_SOCKET"  # where the CLI looks for the service


class ServiceError(AgentError):
    """The service cannot do what was asked; the message is one sentence."""


class ServiceUnavailable(ServiceError):
    """No service answers on the socket."""


class ServiceRefused(ServiceError):
    """The service answered no."""


def printable(text: str) -> str:
    """What a user wrote (a folder's name, a line of their agent.log), safe in root's log
    and on another user's terminal: a newline or an escape sequence shown as `\\n` or
    `\\x1b`, never acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(f"{what} needs root: run it with sudo")


def open_folder(path: str) -> int:
    """An O_PATH fd of `path`, which must be a folder and not itself a link."""
    return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """`path` holds `data` (mode `mode`) or is as it was: never torn, never left readable."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:  # a write may be short
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
