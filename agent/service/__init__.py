"""The privileged service: one root supervisor that runs the agent (fanotify + netlink tier)
for the projects their owners register over a unix socket, and the calls the CLI makes.

Protocol: one JSON line per connection each way. The caller is known by SO_PEERCRED; a
`register` carries an open fd of the project folder (SCM_RIGHTS), which proves the caller
could reach it and names it without a path race.

common (shared names, errors), client (the CLI's calls), unit (the systemd unit), guard
(what root may trust in a project), keeper (one project's agent) and supervisor (the
registry and the socket). The client is imported here, the rest on first use of one of
their names: `onlooker init`, `start` and `status` do not load the supervisor's machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onlooker.agent.service.client import (
    call,
    describe,
    projects,
    register,
    register_on_init,
    registration,
    socket_path,
    start_for,
    stop_for,
    unregister,
    watching_line,
)
from onlooker.agent.service.common import (
    DEFAULT_SOCKET,
    DEFAULT_STATE,
    SOCKET_ENV,
    ServiceError,
    ServiceRefused,
    ServiceUnavailable,
    printable,
)

if TYPE_CHECKING:
    from onlooker.agent.service.guard import check_project
    from onlooker.agent.service.keeper import BACKOFF, FAIL_AFTER, FAIL_WINDOW, Keeper, stop_agent
    from onlooker.agent.service.supervisor import (
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_PER_USER,
        MAX_PER_USER,
        MAX_REQUEST,
        REGISTRY_NAME,
        Peer,
        Registry,
        Service,
        run_service,
    )
    from onlooker.agent.service.unit import (
        CAPABILITIES,
        SYSTEMD_RUNNING,
        UNIT_NAME,
        UNIT_PATH,
        install,
        service_argv,
        uninstall,
        unit_state,
        unit_text,
    )

_LAZY = {
    "check_project": "guard",
    **dict.fromkeys(("BACKOFF", "FAIL_AFTER", "FAIL_WINDOW", "Keeper", "stop_agent"), "keeper"),
    **dict.fromkeys(("MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_USER", "MAX_PER_USER",
                     "MAX_REQUEST", "REGISTRY_NAME", "Peer", "Registry", "Service",
                     "run_service"), "supervisor"),
    **dict.fromkeys(("CAPABILITIES", "SYSTEMD_RUNNING", "UNIT_NAME", "UNIT_PATH", "install",
                     "service_argv", "uninstall", "unit_state", "unit_text"), "unit"),
}
_SUBMODULES = ("common", "client", "unit", "guard", "keeper", "supervisor")

__all__ = [
    # client, common
    "DEFAULT_SOCKET", "DEFAULT_STATE", "SOCKET_ENV", "ServiceError", "ServiceRefused",
    "ServiceUnavailable", "call", "describe", "printable", "projects", "register",
    "register_on_init", "registration", "socket_path", "start_for", "stop_for", "unregister",
    "watching_line",
    # guard, keeper, supervisor, unit: imported on first use (_LAZY)
    "BACKOFF", "FAIL_AFTER", "FAIL_WINDOW", "Keeper", "check_project", "stop_agent",
    "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_USER", "MAX_PER_USER", "MAX_REQUEST",
    "REGISTRY_NAME", "Peer", "Registry", "Service", "run_service",
    "CAPABILITIES", "SYSTEMD_RUNNING", "UNIT_NAME", "UNIT_PATH", "install", "service_argv",
    "uninstall", "unit_state", "unit_text",
]


def __getattr__(name: str) -> Any:
    # Looked up on every use, never cached here: a test that patches unit.UNIT_PATH is
    # seen through service.UNIT_PATH too.
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
