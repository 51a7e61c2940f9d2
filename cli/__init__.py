"""The `onlooker` command line."""

from __future__ import annotations

import sys


def entry() -> None:
    """The `onlooker` script: Ctrl-C while the CLI is still loading exits as an
    interrupted command does (130), without a traceback."""
    try:
        from onlooker.cli.main import main

        main()
    except KeyboardInterrupt:
        sys.exit(130)
