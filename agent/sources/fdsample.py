"""FdSeen events from sampling the open files of run processes (the unprivileged file tier)."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Collection

from onlooker.agent.events import FdSeen
from onlooker.agent.probes import procfs
from onlooker.agent.sources.poll import TickingSource, _call_watched

log = logging.getLogger(__name__)


class FdSampler(TickingSource):
    """Each tick, reads /proc/<pid>/fd of each watched pid and emits FdSeen the first
    time a (pid, path, writable) appears for a path `keep` accepts.

    A file opened and closed between two ticks is not seen: this complements
    inotify's pid-less events, it does not replace them.
    """

    name = "onlooker-fdsample"

    def __init__(
        self,
        out: queue.Queue,
        *,
        hz: float,
        watched: Callable[[], Collection[int]],
        keep: Callable[[str], bool],
    ) -> None:
        super().__init__(out, hz=hz)
        self._watched = watched
        self._keep = keep
        # pid -> (start ticks, the (path, writable) pairs already reported for it).
        self._seen: dict[int, tuple[int, set[tuple[str, bool]]]] = {}

    def idle(self) -> bool:
        # No run process to sample: sleep until the daemon says a run started.
        return not _call_watched(self._watched)

    def tick(self, now: float) -> None:
        pids = set(_call_watched(self._watched))
        for pid in self._seen.keys() - pids:
            del self._seen[pid]
        for pid in pids:
            brief = procfs.stat_brief(pid)
            if brief is None:
                self._seen.pop(pid, None)  # ended
                continue
            entry = self._seen.get(pid)
            if entry is None or entry[0] != brief[2]:
                entry = self._seen[pid] = (brief[2], set())  # new, or a reused pid
            files = procfs.open_files(pid, keep=self._keep)
            seen = entry[1]
            for item in files:
                if item not in seen:
                    seen.add(item)
                    self._out.put(FdSeen(now, pid, item[0], item[1]))
