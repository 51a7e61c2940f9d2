"""`onlooker init [DIR]`: instrument a project folder (idempotent)."""

from __future__ import annotations

from pathlib import Path

import click

from onlooker.agent import config, service
from onlooker.agent.config import instrument
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import CliError, emit, note


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_state
def init(state: AppState, directory: Path | None) -> None:
    """Instrument DIR (default: -C DIR, else the current folder) for tracking."""
    project = (directory or state.project_option or Path.cwd()).resolve()
    if project.exists() and not project.is_dir():
        raise CliError(f"{project} is not a folder")
    project.mkdir(parents=True, exist_ok=True)
    for parent in project.parents:
        if (parent / config.STORE_DIR).is_dir():
            note(f"note: {project} lies inside the instrumented project {parent}")
            break
    fresh = instrument(project)
    emit(f"instrumented {project}" if fresh else f"{project} is already instrumented")
    # Where the privileged service runs, it watches the project from now on.
    served = service.register_on_init(project)
    if served is not None:
        note(served)
    elif fresh:
        note("next: 'onlooker start' to watch it, then run your scripts as usual")
