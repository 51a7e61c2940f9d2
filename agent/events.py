"""Immutable event records that sources put on the agent's one queue.

Every timestamp `t` is seconds on the agent clock, `clock.now()`
(CLOCK_BOOTTIME), so that process start times read from /proc, netlink
timestamps and file events seen by the agent compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """What /proc said about a process when it was seen (after exec)."""

    pid: int
    ppid: int
    argv: tuple[str, ...]
    cwd: str | None
    exe: str | None
    uid: int | None
    start_ticks: int  # /proc/<pid>/stat field 22: with pid, a process identity
    started: float  # agent clock seconds
    # The ancestors' pids, nearest first, read when the process was seen; lets the
    # assembler attach a process whose parent it never saw (short-lived shells).
    ancestors: tuple[int, ...] = ()
    environ: tuple[tuple[str, str], ...] = ()
    # Where fd 1 and fd 2 pointed when the process was seen (a path, or None for a
    # terminal, pipe or socket): a redirected stdout is the run's log.
    stdio: tuple[str | None, str | None] = (None, None)


@dataclass(frozen=True, slots=True)
class ProcExec:
    """A process exec'd a program (netlink) or was first seen (polling)."""

    t: float
    info: ProcInfo


@dataclass(frozen=True, slots=True)
class ProcFork:
    """A process forked a child without exec (yet); netlink tier only."""

    t: float
    parent_pid: int
    child_pid: int


@dataclass(frozen=True, slots=True)
class ProcExit:
    """A process ended. exit_code/signal are None where the tier cannot tell."""

    t: float
    pid: int
    exit_code: int | None = None
    signal: int | None = None
    # Polling only: the process was still seen alive at this time, so it ended
    # somewhere in (after, t]. None where the end time is exact (netlink).
    after: float | None = None


# File operations, the same vocabulary for fanotify and inotify.
OPEN = "open"  # opened (read or write unknown until close); inotify IN_OPEN
CLOSE_WRITE = "close_write"
CLOSE_NOWRITE = "close_nowrite"
CREATE = "create"
DELETE = "delete"
MOVED_FROM = "moved_from"
MOVED_TO = "moved_to"
MODIFY = "modify"


# The two records made for every file (a file event or two, a hash result) are plain
# slotted dataclasses, not frozen ones: a frozen one's __init__ sets each field through
# object.__setattr__ and costs 5-7 times as much (0.7-1.1 us against 0.15). They are
# never changed once made all the same, and hash as the frozen ones do.
@dataclass(slots=True, unsafe_hash=True)
class FileEvent:
    """A file in (or read from outside) the project was touched.

    `path` is absolute. `pid` is the tgid that did it where the tier knows
    (fanotify), else None (inotify).
    """

    t: float
    op: str
    path: str
    pid: int | None = None
    cookie: int = 0  # pairs moved_from/moved_to (inotify)
    # inotify: the event happened after this (the kernel queue was last seen empty then)
    # and by `t` (when it was read); None: at `t`, as near as the source can tell.
    since: float | None = None
    # inotify: the ops of the same path that came just before this one in the stream,
    # in order, folded into it (a file made and written: create, open, close_write come
    # as one close_write with before=(create, open)); same `t` and `since`.
    before: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FdSeen:
    """Sampling /proc/<pid>/fd found `path` open in `pid` (unprivileged tier)."""

    t: float
    pid: int
    path: str
    writable: bool


@dataclass(frozen=True, slots=True)
class Overflow:
    """A source lost events (inotify IN_Q_OVERFLOW, fanotify overflow): rescan."""

    t: float
    source: str


@dataclass(slots=True, unsafe_hash=True)  # (not frozen: see FileEvent)
class HashDone:
    """The hasher finished a file. `hash` is None when the file could not be
    hashed (vanished, unreadable, kept changing): `error` says why."""

    t: float
    path: str
    hash: str | None
    size: int = 0
    mtime_ns: int = 0
    dev: int = 0
    ino: int = 0
    stored: bool = False
    error: str | None = None
    head: bytes = field(default=b"", repr=False)  # first bytes, for content sniffing
    # When the hasher began on the file (agent clock): a request made after that (a
    # rewrite closed meanwhile) is answered by the next result, not this one.
    began: float | None = None


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """Samples of live runs' process trees: rows of (run id, Unix time, data dict)."""

    t: float
    rows: tuple[tuple[int, float, dict], ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes: the assembler finalizes what its grace window allows."""

    t: float


@dataclass(frozen=True, slots=True)
class Stop:
    """Sentinel: drain and stop."""

    t: float
