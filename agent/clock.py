"""The agent clock: CLOCK_BOOTTIME seconds, the base /proc start times use."""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def ticks_to_clock(ticks: int) -> float:
    """/proc/<pid>/stat starttime (clock ticks after boot) -> agent clock seconds."""
    return ticks / _TICKS


def to_wall(t: float) -> float:
    """Agent clock seconds -> Unix time (for storage and display)."""
    return time.time() - (now() - t)


class Clock:
    """The two readings the assembler takes, as an object so tests can inject a fake
    one: attribution must not depend on how long the machine has been up."""

    def now(self) -> float:
        return now()

    def to_wall(self, t: float) -> float:
        return to_wall(t)


SYSTEM = Clock()
