"""The reconciliation walk: every regular file of the project the rules keep."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISREG

from onlooker.agent.rules.ignore import Ignore

log = logging.getLogger(__name__)


def walk(project: Path, ignore: Ignore, *,
         top: str | os.PathLike[str] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (absolute path, lstat) for each regular file not ignored.

    Walks from `top` (default: the project) with os.scandir, never following
    symlinks. Undecodable names come back as Python gives them (surrogate
    escapes); unreadable or vanished folders are logged and skipped.
    """
    root = os.fspath(top) if top is not None else str(Path(project).resolve())
    if ignore.skip_dir(root):
        return
    skip_dir = ignore.skip_dir
    # Folders are checked as they are pushed, so a file needs only the pattern test.
    skip_file = ignore.matches_pattern if ignore.has_patterns else None
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue  # removed since its parent was listed
        except OSError as err:
            log.warning("scan: cannot list %s: %s", d, err.strerror)
            continue
        with it:
            try:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if not skip_dir(entry.path):
                                stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            if skip_file is not None and skip_file(entry.path):
                                continue
                            st = entry.stat(follow_symlinks=False)
                            if S_ISREG(st.st_mode):  # not replaced since listing
                                yield entry.path, st
                    except OSError:
                        continue  # vanished between listing and stat
            except OSError as err:  # an I/O error mid-listing
                log.warning("scan: error listing %s: %s", d, err.strerror)
