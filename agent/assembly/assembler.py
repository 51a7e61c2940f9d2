"""The assembler: the only writer. Turns event records into runs, steps and versions.

Pure logic over events: time comes in with each event and with `tick(now)`, and
every side effect goes through the injected catalog, hasher and probes, so
tests drive it with a fake clock and no threads.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from onlooker.agent import clock as clock_mod
from onlooker.agent import metrics
from onlooker.agent.assembly import kernel as kernel_mod
from onlooker.agent.assembly.fileside import SLACK, FileSide, Waiter
from onlooker.agent.assembly.kernel import KernelSide
from onlooker.agent.assembly.model import Proc, Run, Step
from onlooker.agent.assembly.table import RunTable
from onlooker.agent.config import Config
from onlooker.agent.events import (
    CLOSE_WRITE,
    CREATE,
    MOVED_TO,
    FdSeen,
    FileEvent,
    HashDone,
    Overflow,
    ProcExec,
    ProcExit,
    ProcFork,
    ProcInfo,
    TelemetryBatch,
    Tick,
)
from onlooker.agent.rules import classify, cli_spec, params, secrets
from onlooker.agent.workers.hasher import PRIO_RUN

log = logging.getLogger(__name__)

_COMPACT_EVERY = 60.0  # seconds between telemetry compactions
_CATCH_UP_MAX = 120.0  # seconds a run's close waits for lagging file sources
_LATE = 0.3  # extra wait for inotify's events beside fanotify's (see handle)
_PROCS_WAIT_MAX = 10.0  # seconds past its grace a pid-less event waits for the poller
_WRITES = frozenset((CLOSE_WRITE, CREATE, MOVED_TO))


class HashSink(Protocol):
    def request(self, path: str, *, copy: bool, prio: int = PRIO_RUN, delay: float = 0.0,
                settled: bool = False) -> None:
        ...


@dataclass
class Probes:
    """Side effects the assembler asks for; tests pass fakes."""

    env_capture: Callable[[ProcInfo], dict | None] = lambda info: None
    git_snapshot: Callable[[], dict | None] = lambda: None
    read_object: Callable[[str], bytes | None] = lambda h: None
    put_text: Callable[[str], str | None] = lambda text: None  # -> object hash
    read_info: Callable[[int], ProcInfo | None] = lambda pid: None
    read_file: Callable[[str, int], bytes | None] = lambda path, limit: None
    is_file: Callable[[str], bool] = os.path.isfile
    on_overflow: Callable[[str], None] = lambda source: None
    # Jupyter kernels (agent/assembly/kernel.py): whether one waits in its event loop,
    # and the sessions the Jupyter servers with runtime files in a folder list.
    kernel_idle: Callable[[int], bool | None] = kernel_mod.main_thread_idle
    server_sessions: Callable[[str], list[tuple[str, str]]] = kernel_mod.server_sessions


@dataclass
class Stats:
    events: int = 0
    runs_started: int = 0
    runs_finished: int = 0
    versions: int = 0
    unattributed: int = 0
    no_run: int = 0  # versions recorded as changes no run made
    overflows: int = 0
    hash_errors: int = 0


class Assembler(KernelSide, FileSide):
    """Runs and steps from process events; the file side is in agent/assembly/fileside.py,
    Jupyter kernels' notebooks and cells in agent/assembly/kernel.py."""

    def __init__(
        self,
        cfg: Config,
        catalog: Any,
        hasher: HashSink,
        ignore: Any,
        *,
        probes: Probes | None = None,
        tier: str = "",
        agent_started: float = 0.0,
        pids_known: bool = False,
        never: set[tuple[int, int]] | None = None,
        clock: clock_mod.Clock = clock_mod.SYSTEM,
        run_uids: set[int] | None = None,
    ) -> None:
        self.cfg = cfg
        # Whose processes may start runs (None: anyone's): the catalog is the project
        # owner's to read, so another user's command line and environment stay out.
        self.run_uids = run_uids
        self._other_users: set[int] = set()
        self.clock = clock
        self.project = cfg.project
        self.catalog = catalog
        self.hasher = hasher
        self.ignore = ignore
        self.probes = probes or Probes()
        self.tier = tier
        self.agent_started = agent_started
        self.pids_known = pids_known  # the file tier reports pids (fanotify)
        self.never = never or set()
        self.grace = float(cfg["capture"]["grace_seconds"])
        self.quiet = float(cfg["capture"]["quiet_seconds"])
        self.rules = cfg["kinds"]["rules"]
        self.metric_limits = metrics.Limits(**cfg["metrics"])
        self.table = RunTable()
        self.pending: deque[tuple[float, FileEvent]] = deque()
        self.pending_late: deque[tuple[float, FileEvent]] = deque()
        self.moves: dict[int, tuple[str, float]] = {}  # cookie -> (moved-away path, when)
        self.fd_seen: dict[str, dict[int, float]] = {}
        # Read-only sightings: each explains one close of its file (attribution.py).
        self.fd_reads: dict[str, dict[int, float]] = {}
        self.fd_spent: set[tuple[str, int]] = set()
        # path -> who waits for its hash: one Waiter, or a list of them when several
        # (rare; a list per path was 64 bytes more for each of 100,000 files in a burst)
        self.waiters: dict[str, Waiter | list[Waiter]] = {}
        self.latest: dict[str, str] = {}  # rel path -> hash of its newest version
        # (dev, ino, size, mtime_ns, hash) of files hashed since the last tick: one
        # statement per batch rather than per file.
        self.stat_rows: list[tuple[int, int, int, int, str]] = []
        self.stats = Stats()
        self._seq = 0  # file events processed, in stream order
        self._compacted = float("-inf")
        self._now_seen = 0.0  # when the process being handled was seen
        self._event_t = 0.0  # when the file event being handled was seen
        # Set by the daemon: the file sources have passed on every event from before
        # this time. A run closes only once they are past its end (infinite: no sources).
        self.files_caught_up = float("inf")
        # Set by the daemon: the process source has reported every process alive at this
        # time (the poller's last look; infinite for netlink, which is told at once). A
        # pid-less file event waits for it, so that the run that did it is known then.
        self.procs_caught_up = float("inf")
        # path -> when a process known to be no run's wrote it: a rename of it into
        # place is that process's, not the run's alive then (fanotify tier).
        self.outsider_writes: dict[str, float] = {}
        # pid -> file events of it still pending: a run with any is not closed yet
        # (under a backlog they carry times later than the run's end).
        self.pending_pids: Counter[int] = Counter()
        # path -> writes of it (a close after writing, a creation, a rename into place)
        # still in the grace window: a scan's hash of it claims no run then
        # (`FileSide._rescan_claim`), those events will say who did it.
        self.pending_paths: Counter[str] = Counter()
        self._undecided: list[tuple[Run, str]] = []
        # Unix start times of runs that ended while the agent was down (`lost`).
        self.lost_starts: list[float] = []
        # ...or, where the catalog said which, those runs themselves (closed)
        self.lost_runs: list[Run] = []
        # Unix time since which the project has been watched (its first run), set by the
        # daemon: a file a scan finds changed after it is a change no run was seen to
        # make, counted; before it, a file that was there before onlooker.
        self.watched_since: float | None = None

    # -- entry points ---------------------------------------------------------

    def handle(self, ev: object) -> None:
        self.stats.events += 1
        if isinstance(ev, FileEvent):
            if ev.op in _WRITES:
                self.pending_paths[ev.path] += 1
            if self.pids_known and ev.pid is None:
                # inotify's moves and deletes beside fanotify: the two streams are not
                # ordered against each other, so these wait until fanotify's reports of
                # the same moment (a write of the file being moved) are in.
                self.pending_late.append((ev.t + self.grace + _LATE, ev))
            else:
                self.pending.append((ev.t + self.grace, ev))
                if ev.pid is not None:
                    self.pending_pids[ev.pid] += 1
        elif isinstance(ev, ProcExec):
            self._on_exec(ev)
        elif isinstance(ev, ProcFork):
            self._on_fork(ev)
        elif isinstance(ev, ProcExit):
            self._on_exit(ev)
        elif isinstance(ev, HashDone):
            self._on_hash(ev)
        elif isinstance(ev, FdSeen):
            self.fd_seen.setdefault(ev.path, {})[ev.pid] = ev.t
            if not ev.writable:
                self.fd_reads.setdefault(ev.path, {}).setdefault(ev.pid, ev.t)
            self._on_fd(ev)
        elif isinstance(ev, Overflow):
            self.stats.overflows += 1
            self.probes.on_overflow(ev.source)
        elif isinstance(ev, TelemetryBatch):
            self.catalog.add_telemetry(list(ev.rows))
        elif isinstance(ev, Tick):
            self.tick(ev.t)

    def tick(self, now: float) -> None:
        """Attribute the file events whose grace window is over; close finished runs."""
        # Kernels' new cells first: a file event maturing now goes to the cell it was in.
        self._kernel_poll(now)
        self._mature(now)
        self._finish_runs(now)
        self._store_stats()
        if now - self._compacted >= _COMPACT_EVERY:
            # Old telemetry becomes min/mean/max buckets: long runs stay small.
            self._compacted = now
            self.catalog.compact_telemetry(self.clock.to_wall(now))
            self._forget_stale(now)

    def _forget_stale(self, now: float) -> None:
        """Bookkeeping that would otherwise grow for as long as the agent lives: fd
        samples of processes gone, and moves out of the project with no move in."""
        for seen in (self.fd_seen, self.fd_reads):
            for path in list(seen):
                alive = {pid: t for pid, t in seen[path].items() if pid in self.procs}
                if alive:
                    seen[path] = alive
                else:
                    del seen[path]
        self.fd_spent = {k for k in self.fd_spent if k[1] in self.procs}
        self.moves = {c: m for c, m in self.moves.items() if now - m[1] < _COMPACT_EVERY}
        self.outsider_writes = {k: t for k, t in self.outsider_writes.items()
                                if now - t < _COMPACT_EVERY}
        self.table.expire_gone(now)

    def drain(self, now: float) -> None:
        """Attribute everything pending now (the agent is stopping)."""
        self._mature(float("inf"))
        self._finish_runs(now, force_time=True)
        self._store_stats()

    def _store_stats(self) -> None:
        if self.stat_rows:
            rows, self.stat_rows = self.stat_rows, []
            self.catalog.stat_store(rows)

    def _mature(self, now: float) -> None:
        early, late = self.pending, self.pending_late
        while True:
            a = early[0][0] if early else None
            b = late[0][0] if late else None
            if a is not None and a <= now and (b is None or a <= b):
                if not self._procs_seen(early[0][1], a, now):
                    return  # the poller is behind: the run that did it may be unseen yet
                ev = early.popleft()[1]
                self._unpend(ev)
                if ev.pid is not None:
                    left = self.pending_pids[ev.pid] - 1
                    if left:
                        self.pending_pids[ev.pid] = left
                    else:
                        del self.pending_pids[ev.pid]
                self._on_file(ev)
            elif b is not None and b <= now:
                ev = late.popleft()[1]
                self._unpend(ev)
                self._on_file(ev)
            else:
                return

    def _unpend(self, ev: FileEvent) -> None:
        if ev.op not in _WRITES:
            return
        left = self.pending_paths[ev.path] - 1
        if left > 0:
            self.pending_paths[ev.path] = left
        else:
            del self.pending_paths[ev.path]

    def _procs_seen(self, ev: FileEvent, due: float, now: float) -> bool:
        """Whether the process source has looked since a pid-less event happened (or
        has been stuck too long to wait for: a dead poller must not hold files back)."""
        return (ev.pid is not None or self.procs_caught_up >= ev.t
                or now - due >= _PROCS_WAIT_MAX)

    def busy(self) -> bool:
        return bool(self.pending or self.pending_late) or any(w for w in self.waiters.values())

    # The run table's contents, read by the file side and by tests; changed only
    # through the table's own operations.
    @property
    def runs(self) -> list[Run]:
        return self.table.runs

    @property
    def recent(self) -> list[Run]:
        return self.table.recent

    @property
    def procs(self) -> dict[int, Proc]:
        return self.table.procs

    def open_runs(self) -> list[Run]:
        return self.table.alive()

    def watched_pids(self) -> set[int]:
        return self.table.watched_pids()

    def load_latest(self, rows: dict[str, str]) -> None:
        self.latest.update(rows)

    def apply_launcher(self, run_id: int, pid: int, exit_code: int | None,
                       sig: int | None, *, log: str | None = None, data: bytes | None = None,
                       mtime_ns: int = 0) -> None:
        """What `onlooker run` saw of a closed run's command: its exact exit status (the
        poll tier cannot see it) and the copy of its output it kept (`log`, project
        relative, with its bytes): an output of the run, and its metrics."""
        status = _status(exit_code, sig)
        root = self.catalog.root_step(run_id, pid)
        self.catalog.update_run(run_id, status=status, exit_code=exit_code, signal=sig)
        if root is not None:
            self.catalog.update_step(root, status=status, exit_code=exit_code, signal=sig)
        if not log or data is None:
            return
        h = self.catalog.objects.put_bytes(data)
        vid = self.catalog.add_version(log, hash=h, size=len(data), mtime_ns=mtime_ns,
                                       kind="log", stored=True,
                                       created_at=self.clock.to_wall(self.clock.now()),
                                       run_id=run_id)
        self.catalog.link(run_id, vid, "output", step_id=root)
        if len(data) <= self.metric_limits.max_bytes:
            self.catalog.set_metrics(run_id, log, metrics.parse(log, data, kind="log",
                                                                limits=self.metric_limits))

    # -- processes ------------------------------------------------------------

    def note_lost(self, started_at: float, row: dict | None = None,
                  ended_at: float | None = None) -> None:
        """A run the catalog had open ended while the agent was down (started then,
        Unix seconds): files changed since may be its, so a restart scan claims none
        unless the command lines tell (`FileSide._rescan_claim`). With its catalog
        `row` (id, pid, command, cwd, root_step) it is kept for that, closed; without,
        only its start is known; `ended_at` (Unix seconds) where its end was recorded."""
        if row is None:
            self.lost_starts.append(started_at)
            return
        argv = tuple(row.get("command") or ())
        started = started_at - self.clock.to_wall(0.0)  # on the agent clock
        pid = int(row.get("pid") or 0)
        info = ProcInfo(pid=pid, ppid=0, argv=argv, cwd=row.get("cwd"), exe=None, uid=None,
                        start_ticks=int(row.get("pid_start") or 0), started=started)
        run = Run(db_id=int(row["id"]), root_pid=pid, root_start=info.start_ticks, info=info,
                  started=started, closed=True,
                  ended_at=None if ended_at is None else ended_at - self.clock.to_wall(0.0))
        if row.get("root_step") is not None:
            run.root_step = Step(int(row["root_step"]), pid, None, started)
            run.steps.append(run.root_step)
        cwd = info.cwd or str(self.project)
        run.argv_paths = {p for p in _argv_paths(argv, cwd) if self._names(p, cwd)}
        self.lost_runs.append(run)

    def reattach(self, row: dict, info: ProcInfo, descendants: list[ProcInfo]) -> None:
        """Adopt a run the catalog has open whose root process is still alive."""
        run = Run(db_id=row["id"], root_pid=info.pid, root_start=info.start_ticks, info=info,
                  started=info.started, reattached=True)
        step_id = row.get("root_step")
        if step_id is None:
            step_id = self.catalog.add_step(run.db_id, pid=info.pid, ppid=info.ppid,
                                            parent_step_id=None,
                                            argv=secrets.redact_argv(list(info.argv)),
                                            cwd=info.cwd, exe=info.exe,
                                            started_at=self.clock.to_wall(info.started))
        run.root_step = Step(step_id, info.pid, None, info.started)
        run.steps.append(run.root_step)
        run.imports_unseen = True  # what it imported before the agent watched is unseen
        self.table.open(run)
        self.table.join(run, info, run.root_step)
        for child in descendants:
            self.table.join(run, child, run.root_step)
        self._kernel_begin(run, info)
        if run.kernel is not None:
            # Cells already recorded stay as they are; those run while the agent was
            # down are read now, timed from now.
            last = getattr(self.catalog, "last_cell", None)
            run.kernel.last_count = last(run.db_id) if last is not None else 0
            row_nb = row.get("notebook")
            if row_nb and run.kernel.notebook is None:
                self._kernel_found(run, os.path.join(str(self.project), row_nb),
                                   row.get("notebook_via") or "kernel")
        self._note_argv_paths(run, info, outside=run.kernel is None)

    def _note_program(self, run: Run, info: ProcInfo) -> None:
        """What a step's program says about the run's code: the script it runs, and
        whether its imports leave bytecode to be seen."""
        script = classify.script_of(info)
        if script is not None:
            run.scripts.add(script)
        if not classify.writes_bytecode(info):
            run.imports_unseen = True

    def _on_exec(self, ev: ProcExec) -> None:
        info = ev.info
        self._now_seen = ev.t
        self.table.reused(info.pid)  # the pid is another process's now
        known = self.procs.get(info.pid)
        if known is not None and known.start_ticks == info.start_ticks and known.exited is None:
            if tuple(info.argv) == known.argv:
                return  # seen already (a poll re-report)
            if known.run is not None:
                if classify.is_onlooker(info.argv, info.exe):  # a forked child became it
                    known.run.members.discard(info.pid)
                    known.run.pids.discard(info.pid)
                    self._outsider(info)
                    return
                self._new_step(known.run, info, known, exec_in_place=True)
                return
            # First seen between fork and exec (or before an exec in place): judge
            # the program it runs now.
        parent = self._member_ancestor(info)
        if parent is not None and parent.run is not None:
            if classify.is_onlooker(info.argv, info.exe):
                # `onlooker show` in a script that is a run: onlooker is never part of one
                # (its children, `onlooker run -- CMD`'s CMD, still are).
                self._outsider(info)
                return
            run = parent.run
            if (tuple(info.argv) == parent.argv and info.exe == parent.exe) or not info.argv:
                # a worker forked without exec (polling sees it only now): its parent's step
                self.table.join(run, info, parent.step)
                return
            proc = self.table.join(run, info, parent.step)
            self._new_step(run, info, proc, exec_in_place=False)
            return
        if self.run_uids is not None and info.uid is not None and info.uid not in self.run_uids:
            if info.uid not in self._other_users:
                self._other_users.add(info.uid)
                log.info("runs of user %s in this project are not recorded: its catalog is"
                         " for its owner's runs", _user(info.uid))
            self._outsider(info)
            return
        if (info.started < self.agent_started - 1.0
                or (info.pid, info.start_ticks) in self.never):
            # Started before the agent watched: its reads were missed; not a run of ours.
            self._outsider(info)
            return
        parent = self.procs.get(info.ppid)
        if parent is not None and parent.run is None and tuple(info.argv) == parent.argv:
            # A fork (not yet an exec) of a process that is no run: judged when it execs.
            self._outsider(info)
            return
        if any(info.pid in r.info.ancestors for r in self.runs if r.ended_at is None):
            # Seen after its child already became a run (polling sees a shell's exec late):
            # the child's run is the work; this process only waits for it.
            self._outsider(info)
            return
        ok, why = classify.is_run(info, self.project, self.cfg)
        if not ok:
            self._outsider(info)
            return
        log.info("run started: pid %d %s (%s)", info.pid,
                 " ".join(secrets.redact_argv(info.argv))[:200], why)
        self._start_run(info)

    def _outsider(self, info: ProcInfo) -> None:
        """Known from now on as a process of no run (its exit and children judged so)."""
        self.table.track(Proc(info.pid, info.start_ticks, info.argv, info.exe))

    def _member_ancestor(self, info: ProcInfo) -> Proc | None:
        for pid in (info.ppid, *info.ancestors):
            p = self.procs.get(pid)
            if p is not None and p.run is not None and p.run.ended_at is None:
                return p
        return None

    def _start_run(self, info: ProcInfo) -> Run:
        argv = list(info.argv)
        db_id = self.catalog.begin_run(
            command=secrets.redact_argv(argv), cwd=info.cwd or "", exe=info.exe,
            pid=info.pid, pid_start=info.start_ticks, user=_user(info.uid),
            hostname=os.uname().nodename, started_at=self.clock.to_wall(info.started),
            tier=self.tier)
        run = Run(db_id=db_id, root_pid=info.pid, root_start=info.start_ticks, info=info,
                  started=info.started)
        mode = classify.parse_invocation(list(info.argv), info.exe).mode
        run.one_liner = mode == "command"
        script = classify.script_of(info)
        if mode != "script":
            script = None  # `python -m pkg.mod` may read its module from __pycache__ only
        if (not self.pids_known and script and self.ignore.inside(script)
                and not self.ignore.skip_file(script)):
            run.script, run.script_seen = script, False
        run.marker = self._seq
        self.table.open(run)
        self.stats.runs_started += 1
        step_id = self.catalog.add_step(db_id, pid=info.pid, ppid=info.ppid, parent_step_id=None,
                                        argv=secrets.redact_argv(argv), cwd=info.cwd,
                                        exe=info.exe, started_at=self.clock.to_wall(info.started))
        run.root_step = Step(step_id, info.pid, None, info.started,
                             helper=classify.is_manager_helper(info.argv))
        run.steps.append(run.root_step)
        self._note_program(run, info)
        self.table.join(run, info, run.root_step)
        self._kernel_begin(run, info)
        self._run_context(run, info)
        self._note_stdio(run, info, run.root_step)
        return run

    def _run_context(self, run: Run, info: ProcInfo) -> None:
        """Params from argv and env, the environment, git state, argv-named inputs."""
        # A kernel's argv is its connection file: its params come from its notebook.
        run.root_params = self._argv_params(run, info) if run.kernel is None else {}
        for k, v in run.root_params.items():
            run.params[k] = (v, "argv")
        names = list(self.cfg["params"]["env"])
        for k, v in params.env_params(dict(info.environ), names).items():
            run.params[k] = (v, "env")
        if run.params:
            self.catalog.set_params(run.db_id, run.params)
        fields: dict[str, Any] = {}
        env = self.probes.env_capture(info)
        if env:
            fields["env_id"] = self.catalog.put_env(env)
            run.has_python_env = "python" in env
        git = self.probes.git_snapshot()
        if git:
            diff_hash = self.probes.put_text(git["diff"]) if git.get("diff") else None
            fields.update(git_commit=git.get("commit"), git_branch=git.get("branch"),
                          git_dirty=int(bool(git.get("dirty"))), git_diff=diff_hash)
        if fields:
            self.catalog.update_run(run.db_id, **fields)
        # A kernel's argv names only its connection file, no data of the run.
        self._note_argv_paths(run, info, outside=run.kernel is None)

    def _note_stdio(self, run: Run, info: ProcInfo, step: Step | None) -> None:
        """stdout/stderr sent to a project file (`python train.py > logs/train.log`): the
        run's log, an output even where the tier does not see the shell's open."""
        for target in dict.fromkeys(p for p in info.stdio if p):
            if self.ignore.inside(target) and not self.ignore.skip_file(target):
                run.log_paths.add(target)
                self._record(run, target, write=True, step=step)

    def _note_argv_paths(self, run: Run, info: ProcInfo, *, outside: bool = True) -> None:
        cwd = info.cwd or str(self.project)
        for p in _argv_paths(info.argv, cwd):
            if self._names(p, cwd):
                run.argv_paths.add(p)
            if (outside and not self.ignore.inside(p) and self.ignore.named_ok(p)
                    and self.probes.is_file(p)):
                # Named on the command line outside the project: an input wherever it
                # lives, /tmp included (the tier may not see the read itself, e.g.
                # another mount).
                self._record(run, p, write=False, step=run.root_step, basis="argv",
                             named=True)

    def _names(self, p: str, cwd: str) -> bool:
        """Whether a path from the command line is one the run names (argv_paths)."""
        return (self.ignore.inside(p) or os.path.exists(p)) and not self._too_wide(p, cwd)

    def _too_wide(self, p: str, cwd: str) -> bool:
        """A folder that holds the whole project or the run's cwd (`.`, `..`, `/`) names
        nothing in particular: as an argv reference it would claim every file."""
        proj = str(self.project).rstrip("/") or "/"
        return any(q == p or q.startswith(p.rstrip("/") + "/")
                   for q in (proj, os.path.normpath(cwd)))

    def _step_params(self, run: Run, info: ProcInfo, label: str | None) -> None:
        """A step's argv adds params only where it runs project code (`label`: its
        project file): a library's `git version` says nothing about the experiment."""
        if label is None:
            return
        run.step_params.append((label, self._argv_params(run, info, step=True)))
        run.step_infos.append(info)
        self._apply_argv_params(run)

    def _argv_params(self, run: Run, info: ProcInfo, *, step: bool = False
                     ) -> dict[str, object]:
        """A program's argv params, read with its script's own declaration where the
        run has read that script already."""
        script = classify.script_of(info)
        spec = run.cli_specs.get(script) if script is not None else None
        if not step:
            return params.argv_params(list(info.argv), cwd=info.cwd, spec=spec)
        return params.step_params(info.argv, info.exe, cwd=info.cwd, project=self.project,
                                  foreign=self.cfg["watch"]["exclude"], spec=spec)

    def _script_read(self, run: Run, script: str, source: bytes) -> None:
        """The run read one of its scripts: what its parser declares names the argv
        params of the programs that ran it."""
        spec = run.cli_specs[script] = cli_spec.cli_spec(source)
        if spec is None:
            return
        if classify.script_of(run.info) == script:
            run.root_params = self._argv_params(run, run.info)
        run.step_params = [
            (label, self._argv_params(run, info, step=True)
             if classify.script_of(info) == script else found)
            for (label, found), info in zip(run.step_params, run.step_infos, strict=True)]
        self._apply_argv_params(run)

    def _apply_argv_params(self, run: Run) -> None:
        merged = params.merge_step_params(run.root_params, run.step_params)
        before = {k for k, (_, src) in run.params.items() if src == "argv"}
        if before == set(merged) and all(run.params[k][0] == v for k, v in merged.items()):
            return
        for k in before - set(merged):
            del run.params[k]
        run.params.update({k: (v, "argv") for k, v in merged.items()})
        self.catalog.set_params(run.db_id, run.params, drop=before - set(merged))

    def _new_step(self, run: Run | None, info: ProcInfo, proc: Proc, *, exec_in_place: bool
                  ) -> None:
        if run is None:
            return
        parent = proc.step
        if proc.step is not None and proc.step.helper:
            if not self._helper_handed_over(run, info, proc, exec_in_place=exec_in_place):
                return
        elif exec_in_place and proc.step is not None and proc.step.pid == info.pid:
            self.catalog.update_step(proc.step.db_id, status="ended",
                                     ended_at=self.clock.to_wall(self._now_seen))
            proc.step.ended = True
            proc.step.ended_t = proc.step.last_alive = self._now_seen
            parent = proc.step.parent or proc.step
        if proc.step is None or not proc.step.helper or proc.step.pid != info.pid:
            # an exec in place starts a new program now; a new process started at its fork
            started = info.started if not exec_in_place else max(info.started, self._now_seen)
            step_id = self.catalog.add_step(run.db_id, pid=info.pid, ppid=info.ppid,
                                            parent_step_id=parent.db_id if parent else None,
                                            argv=secrets.redact_argv(list(info.argv)),
                                            cwd=info.cwd, exe=info.exe,
                                            started_at=self.clock.to_wall(started))
            proc.step = Step(step_id, info.pid, parent, started,
                             helper=classify.is_manager_helper(info.argv))
            run.steps.append(proc.step)
            self._note_program(run, info)
            cell = self._kernel_step(run, parent, started)
            if cell is not None:  # `!python train.py` in a notebook: a step of that cell
                proc.step.parent = cell
                self.catalog.update_step(step_id, parent_step_id=cell.db_id)
        else:
            proc.step.helper = False  # the shim's step is the program it handed over to
            self._note_program(run, info)
        proc.argv = tuple(info.argv)
        proc.exe = info.exe
        label = classify.project_code(info.argv, info.exe, cwd=info.cwd, project=self.project,
                                      foreign=self.cfg["watch"]["exclude"])
        # A helper a library starts names its own files (a Jupyter kernel's connection
        # file under $TMPDIR): only project code names the run's data.
        self._note_argv_paths(run, info, outside=label is not None)
        self._note_stdio(run, info, proc.step)
        if exec_in_place and info.pid == run.root_pid and classify.is_manager_helper(
                run.info.argv):
            # What the person typed ran through a shim: the program it handed over to is
            # the run's command.
            run.info = info
            self.catalog.update_run(run.db_id, command=secrets.redact_argv(list(info.argv)),
                                    exe=info.exe)
        self._step_params(run, info, label)
        if not run.has_python_env:
            # A shell script or make started the run: the first Python step's environment
            # is the one that matters.
            env = self.probes.env_capture(info)
            if env and "python" in env:
                self.catalog.update_run(run.db_id, env_id=self.catalog.put_env(env))
                run.has_python_env = True

    def _helper_handed_over(self, run: Run, info: ProcInfo, proc: Proc, *,
                            exec_in_place: bool) -> bool:
        """A program seen under a version manager's shim: pyenv's `bash .../pyenv exec`
        runs 30-odd helpers (`pyenv-which`, `readlink`) and then execs the real program
        in place. The helpers are no steps; the program takes the shim's step (its argv,
        exe, cwd) and the rest of `_new_step` applies to it. False: a helper, done."""
        proc.argv, proc.exe = tuple(info.argv), info.exe
        if not exec_in_place or proc.step is None or proc.step.pid != info.pid \
                or classify.is_manager_helper(info.argv):
            return False
        self.catalog.update_step(proc.step.db_id, argv=secrets.redact_argv(list(info.argv)),
                                 cwd=info.cwd, exe=info.exe)
        return True

    def _on_fork(self, ev: ProcFork) -> None:
        self.table.reused(ev.child_pid)
        parent = self.procs.get(ev.parent_pid)
        if parent is None or parent.run is None or parent.run.ended_at is not None:
            return
        info = ProcInfo(pid=ev.child_pid, ppid=ev.parent_pid, argv=parent.argv, cwd=None,
                        exe=parent.exe, uid=None, start_ticks=-1, started=ev.t)
        self.table.join(parent.run, info, parent.step)

    def _on_exit(self, ev: ProcExit) -> None:
        proc = self.procs.get(ev.pid)
        if proc is None or proc.exited is not None:
            return
        proc.exited = ev.t
        run = proc.run
        if run is None:
            self.table.forget(ev.pid)
            return
        run.members.discard(ev.pid)
        status = _status(ev.exit_code, ev.signal)
        if proc.step is not None and proc.step.pid == ev.pid and not proc.step.ended:
            proc.step.ended = True
            proc.step.ended_t = ev.t
            proc.step.signal = ev.signal
            proc.step.last_alive = ev.after if ev.after is not None else ev.t
            self.catalog.update_step(proc.step.db_id, status=status, exit_code=ev.exit_code,
                                     signal=ev.signal, ended_at=self.clock.to_wall(ev.t))
        if ev.pid == run.root_pid:
            run.root_exit = (ev.exit_code, ev.signal)
            run.root_exit_t = ev.t
        if not run.members:
            run.ended_at = ev.t
            run.ended_after = ev.after

    def _finish_runs(self, now: float, force_time: bool = False) -> None:
        for run in list(self.table.runs):
            done = run.ended_at is not None and (
                force_time or now >= run.ended_at + self.grace + SLACK)
            if not done or self._has_pending_before(run) or (
                    not force_time and self._sources_behind(run, now)):
                continue
            # Hash results still owed land on the run object after it is closed.
            self._close_run(run)
        # Closed runs stay candidates for files a rescan finds a little later.
        self.table.expire_recent(now)

    def _stopped_helpers(self, run: Run) -> None:
        """In a run that completed, a step its parent stopped with a signal (spawn Pool
        workers terminated at the end of a `with Pool()`) is `stopped`, not `failed`."""
        for st in run.steps:
            parent = st.parent
            if (st.signal in _STOP_SIGNALS and parent is not None and st is not run.root_step
                    and st.ended_t is not None
                    and (parent.ended_t is None or parent.ended_t >= st.ended_t)):
                self.catalog.update_step(st.db_id, status="stopped")

    def _sources_behind(self, run: Run, now: float) -> bool:
        """The file sources have not yet passed on everything from before the run's end."""
        assert run.ended_at is not None
        if self.files_caught_up >= run.ended_at + SLACK:
            return False
        if now - run.ended_at < _CATCH_UP_MAX:
            return True
        # A source stuck this long (a dead reader thread): close the run anyway; what
        # comes later with its pids still lands on it (see `gone`).
        log.warning("run %d closed before the file sources caught up with its end",
                    run.db_id)
        return False

    def _has_pending_before(self, run: Run) -> bool:
        if run.ended_at is None:
            return False
        if self.pending_pids and any(pid in self.pending_pids for pid in run.pids):
            return True
        return any(q and q[0][1].t <= run.ended_at + SLACK
                   for q in (self.pending, self.pending_late))

    def _close_run(self, run: Run) -> None:
        self._settle_code(run)
        code, sig = run.root_exit if run.root_exit else (None, None)
        status = _status(code, sig)
        ended = run.root_exit_t if run.root_exit_t is not None else run.ended_at
        self._kernel_close(run, ended)
        for p in self.table.procs_of(run):
            if p.step is not None and not p.step.ended and p.step.pid == p.pid:
                p.step.ended = True
                self.catalog.update_step(p.step.db_id, status="ended",
                                         ended_at=self.clock.to_wall(run.ended_at or ended))
        self.table.close(run)
        if status == "completed":
            self._stopped_helpers(run)
        self.catalog.update_run(run.db_id, status=status, exit_code=code, signal=sig,
                                ended_at=self.clock.to_wall(ended) if ended is not None else None)
        self.stats.runs_finished += 1
        if status == "ended":
            log.info("run %d ended, its exit status not seen: %s", run.db_id,
                     why_no_exit_status(self.tier, run.root_exit is not None))
        else:
            log.info("run %d %s (exit %s, signal %s)", run.db_id, status, code, sig)

    # -- files: a kernel run's cells ---------------------------------------------

    def _record(self, run: Run | None, path: str, *, write: bool, step: Step | None,
                closed: bool = False, seen: float = 0.0, basis: str | None = None,
                named: bool = False) -> None:
        """FileSide._record, with a kernel run's rules first: a write of its notebook
        that the tier cannot give a process is the front end's (a save: a version with
        no run, linked as the kernel's code once hashed; a read: nobody's), and a file
        use goes to the cell running then, by time (basis `window`)."""
        if run is not None and run.kernel is not None:
            if not self.pids_known and step in (None, run.root_step) and \
                    self._kernel_saves(run, path):
                run, step, basis = None, None, None
            else:
                cell = self._kernel_step(run, step, seen or self._event_t)
                if cell is not None:
                    step = cell
                    if basis in (None, "fanotify", "window", "fd"):
                        basis = "window"
        FileSide._record(self, run, path, write=write, step=step, closed=closed, seen=seen,
                         basis=basis, named=named)

    def _file_record(self, run: Run | None, path: str, **kw: Any) -> None:
        FileSide._record(self, run, path, **kw)

    def _on_hash(self, ev: HashDone) -> None:
        no_run = self.stats.no_run
        FileSide._on_hash(self, ev)
        if self._kernel_on_hash(ev):
            self.stats.no_run = no_run  # a kernel's notebook saved: the run's code, no loss

    def _content(self, ev: HashDone, *, disk_limit: int | None) -> bytes | None:
        return FileSide._content(self, ev, disk_limit=disk_limit)


# Signals a program sends to stop a helper it started (a Pool's terminate, a library's
# timeout): a step ended by one while its parent went on is no failure of the run.
_STOP_SIGNALS = frozenset((signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP,
                           signal.SIGPIPE))


def why_no_exit_status(tier: str, end_seen: bool = True) -> str:
    """Why a run that ended has no exit status (status `ended`), in one phrase."""
    if not end_seen:
        return "its first process was not seen to end (the run's other processes were)"
    if tier.startswith("poll"):
        return ("the poll tier sees a process end, and its exit status only when it "
                "catches the process as a zombie before its parent reaps it")
    return "the process source lost its exit event (an overflow) and found it gone"


def _status(code: int | None, sig: int | None) -> str:
    if sig:
        return "failed"
    if code is None:
        return "ended"
    return "completed" if code == 0 else "failed"


def _argv_paths(argv: tuple[str, ...] | list[str], cwd: str) -> Iterator[str]:
    """The paths a command line may name: each argument after the program (the value
    of a `--opt=value`), joined to the cwd; options and oversized words left out."""
    for arg in argv[1:]:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value and not value.startswith("-") and len(value) <= 4096 and "\n" not in value:
            yield os.path.normpath(os.path.join(cwd, value))


def _user(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)
