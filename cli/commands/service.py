"""`onlooker service`: the privileged service that runs the agent as root for the projects
their owners register (agent/service/)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from onlooker.agent import service
from onlooker.cli.commands import AppState, pass_state, setup_logging
from onlooker.cli.output import CliError, emit, emit_json, json_option, note, table

_SOCKET = click.option(
    "--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path),
    default=None, help=f"The service's socket (default: ${service.SOCKET_ENV}, else "
                       f"{service.DEFAULT_SOCKET}).")


def _socket(given: Path | None) -> Path:
    return given.absolute() if given is not None else service.socket_path()


@click.group("service")
def service_group() -> None:
    """The privileged service: the fanotify + netlink tier for users without root.

    `sudo onlooker service install` sets it up once; then `onlooker init` (or `onlooker
    start`) in a project you own has it watched by the service.
    """


@service_group.command()
@_SOCKET
def install(socket_path: Path | None) -> None:
    """Install and start the systemd unit (needs root)."""
    sock = socket_path.absolute() if socket_path is not None else service.DEFAULT_SOCKET
    done = service.install(sock)
    if done["started"]:
        emit(f"the onlooker service is installed and running ({done['unit']}); projects "
             "register with 'onlooker init' or 'onlooker service register'")
        return
    argv = " ".join(service.service_argv(sock))
    raise CliError(f"systemd is not running here, so {done['unit']} is written but nothing "
                   f"was started: run '{argv}' as root under your own supervisor")


@service_group.command()
def uninstall() -> None:
    """Stop, disable and remove the systemd unit (needs root); the registry is kept."""
    if service.uninstall():
        emit(f"the onlooker service is removed ({service.UNIT_PATH}); its registry stays in "
             f"{service.DEFAULT_STATE}")
    else:
        note("the onlooker service is not installed")


def _status(sock: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"socket": str(sock), "unit": service.unit_state(),
                           "running": False, "pid": None, "projects": []}
    try:
        answer = service.call({"op": "list"}, path=sock)
    except service.ServiceUnavailable as err:
        out["why"] = str(err)
        return out
    out.update(running=True, pid=answer.get("pid"), projects=answer.get("projects") or [])
    return out


@service_group.command()
@_SOCKET
@json_option
def status(socket_path: Path | None, as_json: bool) -> None:
    """Whether the service runs, and your projects it watches (root: everyone's)."""
    st = _status(_socket(socket_path))
    if as_json:
        emit_json(st)
        return
    running = f"running (pid {st['pid']})" if st["running"] else f"not running: {st['why']}"
    rows = [("service", running), ("socket", st["socket"]), ("unit", st["unit"])]
    emit(table(None, rows))
    if st["running"]:
        if not st["projects"]:
            note("no projects of yours are registered")
        else:
            emit("")
            emit(table(["PROJECT", "USER", "SINCE", "STATE"], [
                (service.printable(p.get("project")), p.get("user", "?"),
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(p.get("since") or 0)),
                 service.describe(p)) for p in st["projects"]]))


def _project(state: AppState, directory: Path | None) -> Path:
    return (directory or state.project_option or Path.cwd()).resolve()


@service_group.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_state
def register(state: AppState, directory: Path | None) -> None:
    """Have the service watch DIR (default: this project), which you must own."""
    project = _project(state, directory)
    entry = service.register(project, wait=True)
    if entry.get("state") != "watching":
        raise CliError(f"the service took {project} but its agent is "
                       f"{service.describe(entry)}")
    emit(service.watching_line(entry))


@service_group.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_state
def unregister(state: AppState, directory: Path | None) -> None:
    """Have the service stop watching DIR (its agent commits what it saw first)."""
    project = _project(state, directory)
    service.unregister(project)
    emit(f"the onlooker service no longer watches {project}")


@service_group.command("run", hidden=True)
@_SOCKET
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path),
              default=service.DEFAULT_STATE, show_default=True,
              help="Where the registry of projects is kept (root only).")
@click.pass_obj
def run_command(obj: AppState | None, socket_path: Path | None, state_dir: Path) -> None:
    """Be the service (root): what the systemd unit runs."""
    sock = socket_path.absolute() if socket_path is not None else service.DEFAULT_SOCKET
    setup_logging(obj.verbose if obj else 0, default=logging.INFO)
    service.run_service(sock, state_dir.absolute())
