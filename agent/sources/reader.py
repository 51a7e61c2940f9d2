"""What the file sources' reader threads share."""

from __future__ import annotations

import array
import fcntl
import logging
import os
import termios
from collections.abc import Collection

from onlooker.agent import clock

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


def queued_bytes(fd: int) -> int | None:
    """Bytes of events the kernel holds on an inotify or fanotify fd (FIONREAD), or
    None when that cannot be told (the fd closed meanwhile)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except (OSError, ValueError):
        return None
    return buf[0]


class IdleWait:
    """A reader thread blocked on an empty kernel queue, with everything it read passed
    on, is caught up with the clock: another thread can tell so when it asks
    (`caught_up`), so an idle reader needs no timed wake-up to move its `caught_up` on
    (each costs ~0.1 ms of CPU on a small VM, ten a second per reader).

    The reader calls `enter()` just before it blocks, only when nothing it read is left
    to pass on, and `leave()` as soon as it wakes, before it reads."""

    __slots__ = ("gen", "waiting")

    def __init__(self) -> None:
        self.gen = 0  # wake-ups so far: a change means the reader may have read meanwhile
        self.waiting = False

    def enter(self) -> None:
        self.waiting = True

    def leave(self) -> None:
        self.gen += 1
        self.waiting = False

    def caught_up(self, fd: int) -> float | None:
        """Now, if the reader has been blocked since before this look and the kernel
        holds nothing for it (so every event before now was read and passed on); else
        None."""
        t = clock.now()  # first: an event before it is in the kernel queue or passed on
        gen = self.gen
        if not self.waiting or fd < 0:
            return None
        if queued_bytes(fd) != 0 or self.gen != gen:
            return None
        return t
