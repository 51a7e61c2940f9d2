"""What every command shares: the global options and finding the project and its catalog."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from onlooker.agent.config import STORE_DIR
from onlooker.cli.output import CliError


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
