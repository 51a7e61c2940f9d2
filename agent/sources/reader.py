"""What the file sources' reader threads share."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

log = logging.getLogger(__name__)


def stop_reader(source, name: str) -> None:
    """Wake a reader thread through its pipe and wait for it: it passes on what the kernel
    still holds, then ends. `source` has `_wake_w`, `_thread`, `_stopping`, `_close()`."""
    if source._wake_w >= 0:
        try:
            os.write(source._wake_w, b"x")
        except OSError:
            pass
    if source._thread is not None:
        source._thread.join(timeout=2.0)
        if source._thread.is_alive():
            source._stopping = True
            log.warning("%s: reader thread did not stop in time", name)
            return  # it closes its descriptors itself when it ends
    source._stopping = True
    source._close()


def pid_set(pids: int | Collection[int]) -> Collection[int]:
    """The agent's own pids as a source checks them: one pid, or a set the agent owns
    and fills before the sources start (its bulk process), checked by membership."""
    return {pids} if isinstance(pids, int) else pids
