"""The assembler's in-memory view of live runs, their steps, processes and file uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from onlooker.agent.events import ProcInfo
from onlooker.agent.rules.cli_spec import CliSpec


@dataclass(eq=False)
class Step:
    """One program a run executed (the root's, or a descendant's exec)."""

    db_id: int
    pid: int
    parent: Step | None
    started: float
    ended: bool = False
    ended_t: float | None = None  # when its end was seen
    last_alive: float = float("inf")  # polling: still alive then (it ended after)
    helper: bool = False  # a version manager's shim or helper: its children are no steps
    signal: int | None = None  # the signal that ended it, if any


_NONE = object()


class SmallMap:
    """A dict for the few entries a file use has (nearly always one): the entry in two
    slots, a dict only from the second on. A dict with one entry is about 220 bytes,
    this 56: a run writing 100,000 files keeps two per file (Use.steps, Use.links).
    Only the dict methods the assembler uses."""

    __slots__ = ("_k", "_v", "_d")

    def __init__(self) -> None:
        self._k: object = _NONE
        self._v: object = None
        self._d: dict | None = None

    def get(self, key: object, default: object = None) -> object:
        if self._d is not None:
            return self._d.get(key, default)
        return self._v if self._k is not _NONE and self._k == key else default

    def __getitem__(self, key: object) -> object:
        got = self.get(key, _NONE)
        if got is _NONE:
            raise KeyError(key)
        return got

    def __setitem__(self, key: object, value: object) -> None:
        if self._d is not None:
            self._d[key] = value
        elif self._k is _NONE or self._k == key:
            self._k, self._v = key, value
        else:
            self._d = {self._k: self._v, key: value}
            self._k, self._v = _NONE, None

    def __delitem__(self, key: object) -> None:
        if self._d is not None:
            del self._d[key]
        elif self._k is not _NONE and self._k == key:
            self._k, self._v = _NONE, None
        else:
            raise KeyError(key)

    def pop(self, key: object, default: object = _NONE) -> object:
        got = self.get(key, _NONE)
        if got is _NONE:
            if default is _NONE:
                raise KeyError(key)
            return default
        del self[key]
        return got

    def setdefault(self, key: object, default: object = None) -> object:
        got = self.get(key, _NONE)
        if got is _NONE:
            self[key] = default
            return default
        return got

    def __contains__(self, key: object) -> bool:
        return self.get(key, _NONE) is not _NONE

    def items(self) -> list[tuple[object, object]]:
        if self._d is not None:
            return list(self._d.items())
        return [] if self._k is _NONE else [(self._k, self._v)]

    def keys(self) -> list[object]:
        return [k for k, _ in self.items()]

    def values(self) -> list[object]:
        return [v for _, v in self.items()]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._d) if self._d is not None else int(self._k is not _NONE)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SmallMap):
            other = dict(other.items())
        return isinstance(other, dict) and dict(self.items()) == other

    __hash__ = None  # type: ignore[assignment]  # (mutable, as a dict)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


@dataclass(eq=False, slots=True)  # one per file a run touched: 100,000 in a burst
class Use:
    """How one run used one path."""

    written: bool = False
    step: Step | None = None  # the first step that used it
    steps: SmallMap = field(default_factory=SmallMap)  # step -> "read" | "write"
    # version ids linked for the path, by (role, step id), so a later role can replace them
    links: SmallMap = field(default_factory=SmallMap)
    written_t: float = 0.0  # when it was last written
    last_writer: Step | None = None
    read_vid: int | None = None  # the version the run read, once hashed
    read_role: str = "input"
    basis: str | None = None  # how the run was found to have used it (records.BASES)
    # its bytecode was read or written by the run: the source was run, not read as text
    imported: bool = False


@dataclass(eq=False)
class Cell:
    """A notebook cell a kernel run executed: a step of the run (agent/assembly/kernel.py)."""

    count: int  # its execution count ([3])
    source: str
    step: Step
    started: float  # agent clock: the kernel was last seen idle then (it began after)
    written: float  # agent clock: its history row was on disk by then
    # agent clock: file uses from then on are its own (the previous cell's end: an idle
    # kernel does nothing, and IPython may write a short cell's row after it ran)
    claims: float
    ended: float | None = None  # the kernel was first seen idle again then
    failed: bool = False  # the saved notebook shows an error output for it


@dataclass(eq=False)
class Kernel:
    """What a run whose root is a Jupyter kernel knows of its notebook and its cells."""

    connection: str  # its connection file ("" when started without one)
    environ: dict[str, str]
    history: str | None  # IPython's history.sqlite for it, where the environment says
    started_wall: float  # Unix seconds
    session: int | None = None  # its history session, once found
    last_count: int = 0  # the highest execution count read
    cells: list[Cell] = field(default_factory=list)
    notebook: str | None = None  # absolute path of the notebook it serves, once found
    found_by: str | None = None  # kernel.FOUND_BY
    db_sig: tuple[int, ...] | None = None  # (mtime_ns, size) of the database last read
    samples: list[tuple[float, bool]] = field(default_factory=list)  # (when, idle)
    ready: float | None = None  # first seen idle: started up, waiting for its first cell
    polled: float = float("-inf")
    server_tries: int = 0
    server_next: float = 0.0
    # saved notebooks not yet known to be its own: (path, hash result), newest last
    candidates: list[tuple[str, object]] = field(default_factory=list)
    saved: set[str] = field(default_factory=set)  # hashes of its notebook linked as code

    def executed(self) -> list[str]:
        return [c.source for c in self.cells]

    def cell_at(self, t: float) -> Cell | None:
        """The cell that ran at `t`: the last one begun by then. (An inotify event's
        `since` is no help: its reader looks every 100 ms when idle, so it predates most
        cells' ends; `t`, when it was read, is late only under load.)"""
        found = None
        for c in self.cells:
            if c.claims <= t:
                found = c
        return found

    def open_cell(self) -> Cell | None:
        last = self.cells[-1] if self.cells else None
        return last if last is not None and last.ended is None else None


@dataclass(eq=False)
class Run:
    """A run being watched: the root process and all its descendants."""

    db_id: int
    root_pid: int
    root_start: int
    info: ProcInfo
    started: float
    root_step: Step | None = None
    steps: list[Step] = field(default_factory=list)
    members: set[int] = field(default_factory=set)  # pids alive
    pids: set[int] = field(default_factory=set)  # every pid that ever belonged
    produced: set[tuple[int, int | None]] = field(default_factory=set)  # (version, step) written
    ended_at: float | None = None  # when the last member was seen to end
    ended_after: float | None = None  # polling: it was still alive then (ended in between)
    root_exit: tuple[int | None, int | None] | None = None
    root_exit_t: float | None = None
    files: dict[str, Use] = field(default_factory=dict)
    argv_paths: set[str] = field(default_factory=set)
    params: dict[str, tuple[object, str]] = field(default_factory=dict)
    one_liner: bool = False  # `sh -c "..."`: its programs' argv hold the params
    # The script the run's program opens first (inside the project), and whether its
    # open has gone by in the file event stream: events before it are not this run's.
    script: str | None = None
    script_seen: bool = True
    marker: int = 0  # where in the file event stream the run showed itself (script open)
    script_read: bool = False  # its script's close after reading was seen too
    log_paths: set[str] = field(default_factory=set)  # where its stdout/stderr go
    wrote_in: dict[str, Step | None] = field(default_factory=dict)  # folder -> last step
    noted: set[str] = field(default_factory=set)  # metrics files it was told it can't read
    has_python_env: bool = False
    # argv params of the run's own program, and of each step that ran project code
    # (label, params) in start order: the run's argv params are merged from these.
    root_params: dict[str, object] = field(default_factory=dict)
    step_params: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    step_infos: list[ProcInfo] = field(default_factory=list)  # the steps of step_params
    # script -> what its own parser declares (None: nothing certain), once it is read
    cli_specs: dict[str, CliSpec | None] = field(default_factory=dict)
    # per job folder ("" where none), the params a framework's composed config gave
    framework_found: dict[str, dict[str, object]] = field(default_factory=dict)
    # log file -> (its text, points it gave): a stream written twice is parsed once
    log_texts: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    composed: bool = False  # a framework wrote the config it composed (params from it)
    reattached: bool = False  # adopted at the agent's start: alive while it was down
    scripts: set[str] = field(default_factory=set)  # the scripts its steps ran
    # Its imports may not show as bytecode read or written (a Python step caches none in
    # the project, or the run began before the agent watched): a source read is code.
    imports_unseen: bool = False
    # Some bytecode of the project was read or written by it: its imports do show (a
    # run with none at all may run from a folder it cannot cache bytecode in).
    bytecode_seen: bool = False
    # sources whose bytecode it wrote: seen before the source's own read when a cache
    # folder made during the run is listed as its watch is placed
    compiled: set[str] = field(default_factory=set)
    closed: bool = False
    kernel: Kernel | None = None  # its root is a Jupyter kernel: cells are its steps
    notebooks_read: set[str] = field(default_factory=set)  # whose parameters cell was read

    def use(self, path: str) -> Use:
        u = self.files.get(path)
        if u is None:
            u = self.files[path] = Use()
        return u

    def alive_at(self, t: float, slack: float, since: float | None = None) -> bool:
        """Whether something that happened at `t` (or somewhere in [since, t]) may be
        this run's: the two spans overlap."""
        # /proc start times are truncated to 10 ms ticks: never later than the truth.
        if t < self.started - 0.011:
            return False
        return self.ended_at is None or (t if since is None else since) <= self.ended_at + slack

    def last_alive(self) -> float:
        """The last time the run is known to have been alive."""
        if self.ended_at is None:
            return float("inf")
        return self.ended_after if self.ended_after is not None else self.ended_at

    def surely_alive_at(self, t: float) -> bool:
        if t < self.started - 0.011:
            return False
        if self.ended_at is None:
            return True
        return t <= (self.ended_after if self.ended_after is not None else self.ended_at)


@dataclass(eq=False)
class Proc:
    """A process the assembler knows: which run and step it belongs to, if any."""

    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    exe: str | None
    run: Run | None = None
    step: Step | None = None  # the step this process runs (its own exec, or its parent's)
    exited: float | None = None
