"""`onlooker ui`: the dashboard in a browser (runs, a run, compare, pipeline, lineage)."""

from __future__ import annotations

import os
import sys
import threading
import webbrowser

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import CliError, emit, note

DEFAULT_PORT = 8765


def _has_display() -> bool:
    """Whether a graphical browser can open: on Linux without a display, webbrowser
    would start a text browser in this terminal, which serves no one."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _announce(url: str, project: object, open_browser: bool) -> None:
    emit(f"onlooker ui: {url}  (project {project}; Ctrl-C stops)")
    if open_browser:  # in a thread: some browsers' launchers wait, the server must not
        threading.Thread(target=_open, args=(url,), daemon=True).start()


def _open(url: str) -> None:
    try:
        webbrowser.open(url)
    except Exception:  # a broken browser setup must not stop the server
        pass


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but localhost lets other machines read "
                   "the catalog (paths, commands, params): give it only on a trusted network.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on; 0 picks a free one (the URL is printed).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@pass_state
def ui(state: AppState, host: str, port: int, no_browser: bool) -> None:
    """Serve the dashboard: runs, a run's charts, comparisons, the pipeline and lineage.

    It reads the catalog read-only, so it runs beside a watching agent and shows new
    runs as they land. Ctrl-C stops it.
    """
    # imported here: the server's modules cost nothing to the other commands
    from onlooker.cli.web.server import Dashboard, PortInUse, is_local

    project = state.project()
    if not is_local(host):
        note(f"warning: serving on {host}: anyone who can reach it can read this project's "
             "catalog (file paths, commands, params, environment)")
    try:
        dashboard = Dashboard(project, host=host, port=port)
    except PortInUse as err:
        raise CliError(str(err)) from err
    open_browser = not no_browser and _has_display()
    try:
        # the URL only once it answers: a script waiting for it can connect at once
        dashboard.serve(on_started=lambda: _announce(dashboard.url, project, open_browser))
    except KeyboardInterrupt:  # uvicorn stops cleanly, then re-raises the Ctrl-C it caught
        pass
