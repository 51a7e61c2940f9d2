"""`onlooker watch`: run the agent in the foreground until Ctrl-C."""

from __future__ import annotations

import logging
import threading

import click

from onlooker.agent import config
from onlooker.cli.commands import AppState, pass_state, setup_logging
from onlooker.cli.output import note


@click.command()
@pass_state
def watch(state: AppState) -> None:
    """Run the agent in the foreground, logging to stderr; Ctrl-C stops it cleanly."""
    project = state.project()
    config.load(project)
    from onlooker.agent import daemon

    setup_logging(state.verbose, default=logging.INFO)
    note(f"watching {project}; Ctrl-C stops (after committing what was seen)")
    stop = threading.Event()
    try:
        daemon.run(project, stop=stop)
    except KeyboardInterrupt:
        # The daemon handles SIGINT itself; this covers an interrupt before it is set up.
        stop.set()
    note("stopped")
