"""The service's client: what the CLI asks it, as whoever runs the CLI. Kept light (no
supervisor, no subprocess): `onlooker init`, `start` and `status` import it every time."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from onlooker.agent.service.common import (
    DEFAULT_SOCKET,
    SOCKET_ENV,
    ServiceError,
    ServiceRefused,
    ServiceUnavailable,
    open_folder,
    printable,
)


def socket_path() -> Path:
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def call(request: dict[str, Any], *, fd: int | None = None, timeout: float = 5.0,
         path: Path | None = None) -> dict[str, Any]:
    """One request; the service's answer. ServiceUnavailable / ServiceRefused otherwise."""
    path = Path(path or socket_path())
    if not os.path.lexists(path):
        raise ServiceUnavailable(f"no onlooker service here (no socket at {path})")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError) as err:
            raise ServiceUnavailable(
                f"the onlooker service is not running (nothing listens on {path})") from err
        except PermissionError as err:
            raise ServiceUnavailable(f"not allowed to reach the onlooker service at {path}") \
                from err
        data = (json.dumps(request) + "\n").encode()
        try:
            if fd is None:
                sock.sendall(data)
            else:
                socket.send_fds(sock, [data], [fd])
            reply = b""
            while not reply.endswith(b"\n"):
                more = sock.recv(65536)
                if not more:
                    break
                reply += more
        except TimeoutError as err:
            raise ServiceError(f"the onlooker service did not answer within {timeout:.0f} s") \
                from err
        except OSError as err:
            raise ServiceUnavailable(f"lost the onlooker service at {path}: {err.strerror}") \
                from err
    try:
        answer = json.loads(reply)
    except ValueError as err:
        raise ServiceError(f"the onlooker service at {path} answered no JSON") from err
    if not isinstance(answer, dict) or not answer.get("ok"):
        said = answer.get("error") if isinstance(answer, dict) else None
        raise ServiceRefused(str(said or "the onlooker service refused"))
    return answer


def register(project: Path, *, wait: bool = False, timeout: float = 5.0) -> dict[str, Any]:
    """Ask the service to watch `project` (which the caller must own); its entry."""
    # lifecycle brings the store with it: only a register pays for it, not every CLI call
    from onlooker.agent import lifecycle

    path = os.path.realpath(project)
    try:
        fd = open_folder(path)
    except OSError as err:
        raise ServiceError(f"cannot open {path}: {err.strerror}") from err
    try:
        return call({"op": "register", "project": path, "wait": wait}, fd=fd,
                    timeout=max(timeout, lifecycle.START_TIMEOUT + 15) if wait else timeout)
    finally:
        os.close(fd)


def unregister(project: Path, *, timeout: float = 660.0) -> dict[str, Any]:
    """Have the service stop watching `project`; returns once its agent has committed."""
    return call({"op": "unregister", "project": os.path.realpath(project)}, timeout=timeout)


def projects(*, timeout: float = 5.0) -> dict[str, Any]:
    """{"pid": the service's, "projects": [the caller's entries (root: all)]}."""
    return call({"op": "list"}, timeout=timeout)


def registration(project: Path) -> dict[str, Any] | None:
    """The caller's entry for `project` at the service; None without one (or no service)."""
    if not os.path.lexists(socket_path()):
        return None
    path = os.path.realpath(project)
    try:
        rows = projects(timeout=2.0)["projects"]
    except ServiceError:
        return None
    return next((r for r in rows if isinstance(r, dict) and r.get("project") == path), None)


def describe(entry: dict[str, Any]) -> str:
    """"watching (privileged tier; pid 12)", "failed: REASON", ... for one entry."""
    state = entry.get("state", "?")
    if state == "watching":
        tiers = entry.get("tiers") or {}
        names = "+".join(str(tiers[k]) for k in ("process", "files") if tiers.get(k))
        return f"watching (privileged tier{f' {names}' if names else ''}; pid {entry.get('pid')})"
    if entry.get("reason"):
        return printable(f"{state}: {entry['reason']}")
    return printable(str(state))


def watching_line(entry: dict[str, Any]) -> str:
    """"the onlooker service watches PROJECT (privileged tier netlink+fanotify; pid 12)"."""
    words = describe(entry).removeprefix("watching (").removesuffix(")")
    return f"the onlooker service watches {printable(entry.get('project'))} ({words})"


def _owns(project: Path) -> bool:
    try:
        return os.getuid() in (0, os.stat(project).st_uid)
    except OSError:
        return False


def register_on_init(project: Path) -> str | None:
    """For `onlooker init`: the one line to show, or None where there is no service."""
    if not os.path.lexists(socket_path()) or not _owns(project):
        return None
    try:
        entry = register(project, timeout=3.0)
    except ServiceError as err:
        return (f"note: the onlooker service did not take this project ({err}); "
                "'onlooker start' runs the agent as you")
    return (f"the onlooker service watches {printable(entry.get('project', project))} "
            "(privileged tier)")


def start_for(project: Path) -> dict[str, Any] | None:
    """For `onlooker start`: the service's entry once it watches `project`, None where no
    service is reachable for it (the caller starts its own agent, as before)."""
    if not os.path.lexists(socket_path()) or not _owns(project):
        return None
    try:
        entry = register(project, wait=True)
    except ServiceUnavailable:
        return None
    if entry.get("state") != "watching":
        raise ServiceError(f"the onlooker service could not start the agent: "
                           f"{entry.get('reason') or entry.get('state')}")
    return entry


def stop_for(project: Path) -> bool:
    """For `onlooker stop`: True when the service watched `project` and now no longer does."""
    if registration(project) is None:
        return False
    unregister(project)
    return True
