"""The assembler's state about runs, in one place: which runs are watched, which closed a
little while ago, and which process belongs to which of them."""

from __future__ import annotations

from collections.abc import Iterator

from onlooker.agent.assembly.model import Proc, Run, Step
from onlooker.agent.events import ProcInfo

RECENT = 120.0  # seconds a closed run stays a candidate for files a rescan finds changed
GONE_KEEP = 600.0  # seconds a closed run's pids still claim late file events


class RunTable:
    """Runs and their processes, with the only operations that change them.

    A run is *open* from its first process until the assembler closes it (after its end,
    once every event from before the end is in), then *recent* for `RECENT` seconds. A
    pid names at most one known process (`procs`); when its run closes, the process
    moves to `gone`, where an event a backlog delayed still finds its run, until the
    pid is seen reused or `GONE_KEEP` seconds pass.
    """

    def __init__(self) -> None:
        self.runs: list[Run] = []  # open: watched until closed (ended ones included)
        self.recent: list[Run] = []
        self.procs: dict[int, Proc] = {}
        self.gone: dict[int, Proc] = {}

    # -- reading --------------------------------------------------------------

    def proc(self, pid: int) -> Proc | None:
        """The process with this pid, of an open run or of one closed lately."""
        return self.procs.get(pid) or self.gone.get(pid)

    def alive(self) -> list[Run]:
        """Open runs not yet seen to end."""
        return [r for r in self.runs if r.ended_at is None]

    def watched_pids(self) -> set[int]:
        out: set[int] = set()
        for r in self.runs:
            out |= r.members
        return out

    def procs_of(self, run: Run) -> Iterator[Proc]:
        """The known processes of `run` (its pids not reused by another run since)."""
        for pid in run.pids:
            p = self.procs.get(pid)
            if p is not None and p.run is run:
                yield p

    # -- changing -------------------------------------------------------------

    def open(self, run: Run) -> None:
        self.runs.append(run)

    def join(self, run: Run, info: ProcInfo, step: Step | None) -> Proc:
        """A process becomes a member of `run`, running `step`."""
        self.gone.pop(info.pid, None)
        proc = Proc(info.pid, info.start_ticks, info.argv, info.exe, run=run, step=step)
        self.procs[info.pid] = proc
        run.members.add(info.pid)
        run.pids.add(info.pid)
        return proc

    def track(self, proc: Proc) -> None:
        """A process of no run, known so that its children can be judged."""
        self.gone.pop(proc.pid, None)
        self.procs[proc.pid] = proc

    def reused(self, pid: int) -> None:
        """The pid is another process's now: a closed run no longer claims it."""
        self.gone.pop(pid, None)

    def forget(self, pid: int) -> None:
        self.procs.pop(pid, None)

    def close(self, run: Run) -> None:
        """`run` is closed: its processes move to `gone`, it becomes recent."""
        for p in list(self.procs_of(run)):
            del self.procs[p.pid]
            self.gone[p.pid] = p
        run.closed = True
        self.runs = [r for r in self.runs if r is not run]
        self.recent.append(run)

    def expire_recent(self, now: float) -> None:
        self.recent = [r for r in self.recent if r.ended_at is None
                       or now - r.ended_at < RECENT]

    def expire_gone(self, now: float) -> None:
        self.gone = {pid: p for pid, p in self.gone.items()
                     if p.run is not None and p.run.ended_at is not None
                     and now - p.run.ended_at < GONE_KEEP}
