"""`onlooker init [DIR]`: instrument a project folder (idempotent)."""

from __future__ import annotations

from pathlib import Path

import click

from onlooker.agent import config
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import CliError, emit, note

GITIGNORE = "# onlooker's store is local to this machine: never commit it.\n*\n"


def instrument(project: Path) -> bool:
    """Create `.onlooker/` with catalog, config template and .gitignore; False if it existed."""
    from onlooker.store.catalog import Catalog

    store_dir = project / config.STORE_DIR
    existed = store_dir.is_dir()
    Catalog.init(project).close()
    config_path = store_dir / config.CONFIG_NAME
    if not config_path.exists():
        config_path.write_text(config.TEMPLATE, encoding="utf-8")
    gitignore = store_dir / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE, encoding="utf-8")
    return not existed


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
    if instrument(project):
        emit(f"instrumented {project}")
        note("next: 'onlooker start' to watch it, then run your scripts as usual")
    else:
        emit(f"{project} is already instrumented")
