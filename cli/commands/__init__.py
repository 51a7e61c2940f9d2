"""What every command shares: the global options and finding the project and its catalog."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from onlooker.agent.config import STORE_DIR
from onlooker.cli.output import EXIT_USAGE, CliError


@dataclass
class AppState:
    """The group's options, handed to each command with `@pass_state`."""

    project_option: Path | None = None
    verbose: int = 0

    def start_dir(self) -> Path:
        return (self.project_option or Path.cwd()).resolve()

    def project(self) -> Path:
        """The folder holding `.onlooker/`, found upward from -C DIR or the cwd."""
        start = self.start_dir()
        if not start.is_dir():
            raise CliError(f"{start} is not a folder")
        for folder in (start, *start.parents):
            if (folder / STORE_DIR).is_dir():
                return folder
        raise CliError(
            f"{start} is not in an instrumented project: run 'onlooker init' in the project folder"
        )

    def catalog(self) -> Any:
        """The project's Catalog (store), opened for reading."""
        from onlooker.store.catalog import Catalog

        return Catalog.find(self.project())

    def writable_catalog(self) -> Any:
        """The project's Catalog opened for writing: the CLI writes beside the running
        agent (WAL, with a busy timeout), and an old schema is migrated on the way."""
        from onlooker.store.catalog import Catalog

        return Catalog.find(self.project(), readonly=False)


def _run_shaped(ref: str) -> bool:
    """An id, `last` or -N: a reference of a run's form (a tag is any other word)."""
    return ref.isdigit() or ref == "last" or (ref.startswith("-") and ref[1:].isdigit())


def run_ref_id(catalog: Any, ref: str) -> int:
    """RUN as a person typed it -> its id (`Catalog.resolve_run`). One that has a run's
    form but names none is exit 1; any other word that is no tag either, a usage error."""
    from onlooker.store.errors import StoreError

    try:
        return int(catalog.resolve_run(ref))
    except StoreError as err:
        raise CliError(str(err), exit_code=1 if _run_shaped(ref) else EXIT_USAGE) from err


pass_state = click.make_pass_decorator(AppState, ensure=True)


def setup_logging(verbose: int, *, default: int = logging.WARNING) -> None:
    """Log records to stderr: `default` level, INFO with -v, DEBUG with -vv."""
    level = min(default, logging.INFO if verbose == 1 else logging.DEBUG if verbose else default)
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_onlooker", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler._onlooker = True  # type: ignore[attr-defined]
        root.addHandler(handler)
