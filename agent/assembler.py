"""The assembler: the only writer. Turns event records into runs, steps and versions.

Pure logic over events: time comes in with each event and with `tick(now)`, and
every side effect goes through the injected catalog, hasher and probes, so
tests drive it with a fake clock and no threads.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import classify, clock, kinds, metrics, params, secrets
from .codemap import source_for_pyc
from .config import Config
from .events import (
    CLOSE_NOWRITE,
    CLOSE_WRITE,
    CREATE,
    DELETE,
    MOVED_FROM,
    MOVED_TO,
    OPEN,
    OPEN_WRITE,
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
from .hasher import PRIO_RUN
from .model import Proc, Run, Step

log = logging.getLogger(__name__)

_SLACK = 0.06  # seconds: how far an event may lie outside a run's window
# inotify events carry the time the agent read them, which can lag the real time
# under load; the order of the stream (see Run.script) settles what the window cannot.
_PIDLESS_SLACK = 0.25
# Outputs not named as metrics are looked into only where numbers can be in a structure.
_SNIFFABLE = (".json", ".yaml", ".yml", ".csv", ".tsv")
_COMPACT_EVERY = 60.0  # seconds between telemetry compactions
_RECENT = 120.0  # seconds a closed run stays a candidate for rescanned files
_LATE = 0.3  # extra wait for inotify's events beside fanotify's (see handle)


class HashSink(Protocol):
    def request(self, path: str, *, copy: bool, prio: int = PRIO_RUN, delay: float = 0.0) -> None:
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


@dataclass
class _Waiter:
    run: Run | None
    write: bool


@dataclass
class Stats:
    events: int = 0
    runs_started: int = 0
    runs_finished: int = 0
    versions: int = 0
    unattributed: int = 0
    overflows: int = 0
    hash_errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Assembler:
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
    ) -> None:
        self.cfg = cfg
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
        self.procs: dict[int, Proc] = {}
        self.runs: list[Run] = []
        self.pending: deque[tuple[float, FileEvent]] = deque()
        self.pending_late: deque[tuple[float, FileEvent]] = deque()
        self.recent: list[Run] = []  # closed in the last _RECENT seconds
        self.moves: dict[int, str] = {}
        self.fd_seen: dict[str, dict[int, float]] = {}
        self.waiters: dict[str, list[_Waiter]] = {}
        self.latest: dict[str, str] = {}  # rel path -> hash of its newest version
        self.stats = Stats()
        self._seq = 0  # file events processed, in stream order
        self._compacted = float("-inf")
        self._now_seen = 0.0  # when the process being handled was seen
        self._event_t = 0.0  # when the file event being handled was seen

    # -- entry points ---------------------------------------------------------

    def handle(self, ev: object) -> None:
        self.stats.events += 1
        if isinstance(ev, FileEvent):
            if self.pids_known and ev.pid is None:
                # inotify's moves and deletes beside fanotify: the two streams are not
                # ordered against each other, so these wait until fanotify's reports of
                # the same moment (a write of the file being moved) are in.
                self.pending_late.append((ev.t + self.grace + _LATE, ev))
            else:
                self.pending.append((ev.t + self.grace, ev))
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
        self._mature(now)
        self._finish_runs(now)
        if now - self._compacted >= _COMPACT_EVERY:
            # Old telemetry becomes min/mean/max buckets: long runs stay small.
            self._compacted = now
            self.catalog.compact_telemetry(clock.to_wall(now))

    def drain(self, now: float) -> None:
        """Attribute everything pending now (the agent is stopping)."""
        self._mature(float("inf"))
        self._finish_runs(now, force_time=True)

    def _mature(self, now: float) -> None:
        early, late = self.pending, self.pending_late
        while True:
            a = early[0][0] if early else None
            b = late[0][0] if late else None
            if a is not None and a <= now and (b is None or a <= b):
                self._on_file(early.popleft()[1])
            elif b is not None and b <= now:
                self._on_file(late.popleft()[1])
            else:
                return

    def busy(self) -> bool:
        return bool(self.pending or self.pending_late) or any(w for w in self.waiters.values())

    def open_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ended_at is None]

    def watched_pids(self) -> set[int]:
        out: set[int] = set()
        for r in self.runs:
            out |= r.members
        return out

    def load_latest(self, rows: dict[str, str]) -> None:
        self.latest.update(rows)

    # -- processes ------------------------------------------------------------

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
                                            started_at=clock.to_wall(info.started))
        run.root_step = Step(step_id, info.pid, None, info.started)
        run.steps.append(run.root_step)
        self.runs.append(run)
        self._join(run, info, run.root_step)
        for child in descendants:
            self._join(run, child, run.root_step)
        self._note_argv_paths(run, info)

    def _join(self, run: Run, info: ProcInfo, step: Step | None) -> Proc:
        proc = Proc(info.pid, info.start_ticks, info.argv, info.exe, run=run, step=step)
        self.procs[info.pid] = proc
        run.members.add(info.pid)
        run.pids.add(info.pid)
        return proc

    def _on_exec(self, ev: ProcExec) -> None:
        info = ev.info
        self._now_seen = ev.t
        known = self.procs.get(info.pid)
        if known is not None and known.start_ticks == info.start_ticks and known.exited is None:
            if tuple(info.argv) == known.argv:
                return  # seen already (a poll re-report)
            if known.run is not None:
                self._new_step(known.run, info, known, exec_in_place=True)
                return
            # First seen between fork and exec (or before an exec in place): judge
            # the program it runs now.
        parent = self._member_ancestor(info)
        if parent is not None and parent.run is not None:
            run = parent.run
            if (tuple(info.argv) == parent.argv and info.exe == parent.exe) or not info.argv:
                # a worker forked without exec (polling sees it only now): its parent's step
                self._join(run, info, parent.step)
                return
            proc = self._join(run, info, parent.step)
            self._new_step(run, info, proc, exec_in_place=False)
            return
        if (info.started < self.agent_started - 1.0
                or (info.pid, info.start_ticks) in self.never):
            # Started before the agent watched: its reads were missed; not a run of ours.
            self.procs[info.pid] = Proc(info.pid, info.start_ticks, info.argv, info.exe)
            return
        parent = self.procs.get(info.ppid)
        if parent is not None and parent.run is None and tuple(info.argv) == parent.argv:
            # A fork (not yet an exec) of a process that is no run: judged when it execs.
            self.procs[info.pid] = Proc(info.pid, info.start_ticks, info.argv, info.exe)
            return
        if any(info.pid in r.info.ancestors for r in self.runs if r.ended_at is None):
            # Seen after its child already became a run (polling sees a shell's exec late):
            # the child's run is the work; this process only waits for it.
            self.procs[info.pid] = Proc(info.pid, info.start_ticks, info.argv, info.exe)
            return
        ok, why = classify.is_run(info, self.project, self.cfg)
        if not ok:
            self.procs[info.pid] = Proc(info.pid, info.start_ticks, info.argv, info.exe)
            return
        log.info("run started: pid %d %s (%s)", info.pid, " ".join(info.argv)[:200], why)
        self._start_run(info)

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
            hostname=os.uname().nodename, started_at=clock.to_wall(info.started), tier=self.tier)
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
        self.runs.append(run)
        self.stats.runs_started += 1
        step_id = self.catalog.add_step(db_id, pid=info.pid, ppid=info.ppid, parent_step_id=None,
                                        argv=secrets.redact_argv(argv), cwd=info.cwd,
                                        exe=info.exe, started_at=clock.to_wall(info.started))
        run.root_step = Step(step_id, info.pid, None, info.started)
        run.steps.append(run.root_step)
        self._join(run, info, run.root_step)
        self._run_context(run, info)
        self._note_stdio(run, info, run.root_step)
        return run

    def _run_context(self, run: Run, info: ProcInfo) -> None:
        """Params from argv and env, the environment, git state, argv-named inputs."""
        for k, v in params.argv_params(list(info.argv)).items():
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
        self._note_argv_paths(run, info)

    def _note_stdio(self, run: Run, info: ProcInfo, step: Step | None) -> None:
        """stdout/stderr sent to a project file (`python train.py > logs/train.log`): the
        run's log, an output even where the tier does not see the shell's open."""
        for target in dict.fromkeys(p for p in info.stdio if p):
            if self.ignore.inside(target) and not self.ignore.skip_file(target):
                run.log_paths.add(target)
                self._record(run, target, write=True, step=step)

    def _note_argv_paths(self, run: Run, info: ProcInfo) -> None:
        cwd = info.cwd or str(self.project)
        for arg in info.argv[1:]:
            value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
            if not value or value.startswith("-") or len(value) > 4096 or "\n" in value:
                continue
            p = os.path.normpath(os.path.join(cwd, value))
            if self.ignore.inside(p) or os.path.exists(p):
                run.argv_paths.add(p)
            if (not self.ignore.inside(p) and self.ignore.outside_ok(p)
                    and self.probes.is_file(p)):
                # Named on the command line outside the project: an input (the tier may
                # not see the read itself, e.g. another mount).
                self._record(run, p, write=False, step=run.root_step)

    def _new_step(self, run: Run | None, info: ProcInfo, proc: Proc, *, exec_in_place: bool
                  ) -> None:
        if run is None:
            return
        parent = proc.step
        if exec_in_place and proc.step is not None and proc.step.pid == info.pid:
            self.catalog.update_step(proc.step.db_id, status="ended",
                                     ended_at=clock.to_wall(self._now_seen))
            proc.step.ended = True
            proc.step.ended_t = proc.step.last_alive = self._now_seen
            parent = proc.step.parent or proc.step
        # an exec in place starts a new program now; a new process started at its fork
        started = info.started if not exec_in_place else max(info.started, self._now_seen)
        step_id = self.catalog.add_step(run.db_id, pid=info.pid, ppid=info.ppid,
                                        parent_step_id=parent.db_id if parent else None,
                                        argv=secrets.redact_argv(list(info.argv)),
                                        cwd=info.cwd, exe=info.exe,
                                        started_at=clock.to_wall(started))
        proc.step = Step(step_id, info.pid, parent, started)
        run.steps.append(proc.step)
        proc.argv = tuple(info.argv)
        proc.exe = info.exe
        self._note_argv_paths(run, info)
        self._note_stdio(run, info, proc.step)
        if (exec_in_place and info.pid == run.root_pid) or run.one_liner:
            # The run's first program handed over to this one (a script ending in `exec
            # python ...`), or the run is a one-liner (`bash -c "python x.py --lr 0.1 >
            # log"`, which bash may exec or fork): the program's argv holds the params.
            found = params.argv_params(list(info.argv))
            if found:
                run.params.update({k: (v, "argv") for k, v in found.items()})
                self.catalog.set_params(run.db_id, run.params)
        if not run.has_python_env:
            # A shell script or make started the run: the first Python step's environment
            # is the one that matters.
            env = self.probes.env_capture(info)
            if env and "python" in env:
                self.catalog.update_run(run.db_id, env_id=self.catalog.put_env(env))
                run.has_python_env = True

    def _on_fork(self, ev: ProcFork) -> None:
        parent = self.procs.get(ev.parent_pid)
        if parent is None or parent.run is None or parent.run.ended_at is not None:
            return
        info = ProcInfo(pid=ev.child_pid, ppid=ev.parent_pid, argv=parent.argv, cwd=None,
                        exe=parent.exe, uid=None, start_ticks=-1, started=ev.t)
        self._join(parent.run, info, parent.step)

    def _on_exit(self, ev: ProcExit) -> None:
        proc = self.procs.get(ev.pid)
        if proc is None or proc.exited is not None:
            return
        proc.exited = ev.t
        run = proc.run
        if run is None:
            del self.procs[ev.pid]
            return
        run.members.discard(ev.pid)
        status = _status(ev.exit_code, ev.signal)
        if proc.step is not None and proc.step.pid == ev.pid and not proc.step.ended:
            proc.step.ended = True
            proc.step.ended_t = ev.t
            proc.step.last_alive = ev.after if ev.after is not None else ev.t
            self.catalog.update_step(proc.step.db_id, status=status, exit_code=ev.exit_code,
                                     signal=ev.signal, ended_at=clock.to_wall(ev.t))
        if ev.pid == run.root_pid:
            run.root_exit = (ev.exit_code, ev.signal)
            run.root_exit_t = ev.t
        if not run.members:
            run.ended_at = ev.t
            run.ended_after = ev.after

    def _finish_runs(self, now: float, force_time: bool = False) -> None:
        keep: list[Run] = []
        for run in self.runs:
            done = run.ended_at is not None and (
                force_time or now >= run.ended_at + self.grace + _SLACK)
            if not done or self._has_pending_before(run):
                keep.append(run)
                continue
            # Hash results still owed land on the run object after it is closed.
            self._close_run(run)
            self.recent.append(run)
        self.runs = keep
        # Closed runs stay candidates for files a rescan finds a little later.
        self.recent = [r for r in self.recent if r.ended_at is None
                       or now - r.ended_at < _RECENT]

    def _has_pending_before(self, run: Run) -> bool:
        if run.ended_at is None:
            return False
        return any(q and q[0][1].t <= run.ended_at + _SLACK
                   for q in (self.pending, self.pending_late))

    def _close_run(self, run: Run) -> None:
        code, sig = run.root_exit if run.root_exit else (None, None)
        status = _status(code, sig)
        ended = run.root_exit_t if run.root_exit_t is not None else run.ended_at
        for pid in run.pids:
            p = self.procs.get(pid)
            if p is not None and p.run is run:
                if p.step is not None and not p.step.ended and p.step.pid == pid:
                    p.step.ended = True
                    self.catalog.update_step(p.step.db_id, status="ended",
                                             ended_at=clock.to_wall(run.ended_at or ended))
                del self.procs[pid]
        self.catalog.update_run(run.db_id, status=status, exit_code=code, signal=sig,
                                ended_at=clock.to_wall(ended) if ended is not None else None)
        self.stats.runs_finished += 1
        log.info("run %d %s (exit %s, signal %s)", run.db_id, status, code, sig)

    # -- files ----------------------------------------------------------------

    def _on_fd(self, ev: FdSeen) -> None:
        proc = self.procs.get(ev.pid)
        if proc is None or proc.run is None:
            return
        if ev.path.endswith(".pyc"):
            return
        if not self.ignore.inside(ev.path) and not self.ignore.outside_ok(ev.path):
            return
        # A file held open for writing is handled by its close; a read one is an input
        # even where the tier saw no event for it (outside the watched tree).
        if not ev.writable and not self.ignore.inside(ev.path):
            self._record(proc.run, ev.path, write=False, step=proc.step)

    def _on_file(self, ev: FileEvent) -> None:
        path = ev.path
        if "/__pycache__/" in path:
            if not path.endswith(".pyc") or ev.op not in (OPEN, CLOSE_NOWRITE):
                return
            src = source_for_pyc(path)
            if src is None:
                return
            path = src
        if ev.op == MOVED_FROM:
            self.moves[ev.cookie] = path
            return
        if self.pids_known and ev.pid is None and ev.op not in (MOVED_TO, DELETE):
            if ev.op == CREATE and not any(
                    (u := r.files.get(path)) is not None and u.written for r in self.runs):
                # A file that appeared in a folder watched too late (made and filled
                # by a rename at once): the step that wrote in that folder made it.
                found = self._folder_writer(path, ev.t)
                if found is not None:
                    self._record(found[0], path, write=True, step=found[1])
            return  # fanotify reports opens and closes with their pid; inotify adds moves
        self._seq += 1
        self._event_t = ev.t
        if ev.pid is None and ev.op in (OPEN, CLOSE_NOWRITE):
            for r in self.runs:
                if not r.script_seen and r.script == path:
                    r.script_seen, r.marker = True, self._seq
                    break
        write = ev.op in (CLOSE_WRITE, CREATE, MOVED_TO, OPEN_WRITE)
        read = ev.op in (OPEN, CLOSE_NOWRITE)
        if ev.op == OPEN:
            # Neither tier tells a read open from a write open: the close will say
            # (hashing at the open would version a file still being written).
            return
        run, step = self._attribute(ev, path) if ev.op != DELETE else (None, None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("file %s %s pid %s -> run %s", ev.op, path, ev.pid,
                      run.db_id if run else None)
        if ev.op == MOVED_TO:
            src = self.moves.pop(ev.cookie, None)
            if src is not None:
                # The run that wrote the moved file last renamed it (a temp file put in
                # place); earlier writers of the same temp name keep what they did.
                writers = [(u.written_t, r, u) for r in self.runs
                           if (u := r.files.get(src)) is not None and u.written]
                if writers:
                    _, r, use = max(writers, key=lambda w: w[0])
                    self._drop_output(r, use)
                    if run is None or self.pids_known:
                        run, step = r, use.last_writer or use.step
            self._record(run, path, write=True, step=step, closed=True)
            return
        if ev.op == DELETE:
            for r in self.runs:
                use = r.files.get(path)
                if use is not None and use.written:
                    self._drop_output(r, use)  # a temp file the run wrote and removed
            return

        if write or read:
            self._record(run, path, write=write, step=step,
                         closed=ev.op in (CLOSE_WRITE, CLOSE_NOWRITE))

    def _folder_writer(self, path: str, t: float) -> tuple[Run, Step | None] | None:
        folder = os.path.dirname(path)
        found = [(r, r.wrote_in[folder]) for r in self.runs
                 if folder in r.wrote_in and r.alive_at(t, _PIDLESS_SLACK)]
        return found[0] if len(found) == 1 else None

    def _attribute(self, ev: FileEvent, path: str) -> tuple[Run | None, Step | None]:
        if ev.pid is not None:
            proc = self.procs.get(ev.pid)
            if proc is None:
                info = self.probes.read_info(ev.pid)
                if info is not None:
                    self._on_exec(ProcExec(ev.t, info))
                    proc = self.procs.get(ev.pid)
            if proc is not None:
                return proc.run, proc.step
            if self.pids_known:
                return None, None
        cands = [r for r in self.runs if r.script_seen and r.alive_at(ev.t, _PIDLESS_SLACK)]
        if len(cands) > 1:
            # Polling sees an end late: a run that may have ended already loses to one
            # that started after it was last seen alive (a sequential pipeline).
            sure = [r for r in cands if r.surely_alive_at(ev.t)]
            if len(sure) == 1 and all(
                    r is sure[0] or (r.ended_after is not None and r.ended_after < sure[0].started)
                    for r in cands):
                cands = sure
        if len(cands) > 1:
            seen = self.fd_seen.get(ev.path, {})
            by_fd = {self.procs[p].run.db_id: self.procs[p] for p in seen
                     if p in self.procs and self.procs[p].run is not None}
            narrowed = [r for r in cands if r.db_id in by_fd]
            if len(narrowed) == 1:
                return narrowed[0], by_fd[narrowed[0].db_id].step
            narrowed = [r for r in cands if _named(path, r.argv_paths)]
            if len(narrowed) != 1:
                # All but the run that showed itself last in the stream have ended: a
                # sequential pipeline whose ends polling saw late.
                latest = max(cands, key=lambda r: r.marker)
                if all(r is latest or (r.ended_at is not None and r.marker < latest.marker
                                       and r.last_alive() < latest.started + 0.011)
                       for r in cands):
                    narrowed = [latest]
            if len(narrowed) == 1:
                cands = narrowed
            else:
                self.stats.unattributed += 1
                log.info("cannot tell which of runs %s touched %s",
                         [r.db_id for r in cands], path)
                return None, None
        if not cands:
            return None, None
        run = cands[0]
        step = run.root_step
        step = _step_at(run.steps, ev.t) or step
        return run, step

    def _record(self, run: Run | None, path: str, *, write: bool, step: Step | None,
                closed: bool = False) -> None:
        """A run (or no run) read or wrote `path`. `closed`: the writer closed it (or
        renamed it into place), so it is complete and needs no quiet period."""
        inside = self.ignore.inside(path)
        if run is None:
            if not write or not inside:
                return  # a read by no run is nobody's input
            self._want_hash(path, _Waiter(None, True), delay=0.0 if closed else self.quiet,
                            settled=closed)
            return
        if not inside and not self.ignore.outside_ok(path):
            return
        use = run.use(path)
        step = step or run.root_step
        if step is not None and use.step is None:
            use.step = step
        had = use.steps.get(step)
        if write:
            use.steps[step] = "write"
            use.written = True
            use.deleted = False
            use.written_t = self._event_t
            use.last_writer = step
            run.wrote_in[os.path.dirname(path)] = step
            self._want_hash(path, _Waiter(run, True), delay=0.0 if closed else self.quiet,
                            settled=closed)
            return
        if had is not None:
            return
        use.steps[step] = "read"
        if use.read_vid is not None:
            # Another step of the run read what an earlier one read: same version.
            self._link(run, path, use.read_vid, use.read_role, step)
            return
        use.read = True
        self._want_hash(path, _Waiter(run, False), delay=0.0, settled=closed)

    def _want_hash(self, path: str, waiter: _Waiter, *, delay: float,
                   settled: bool = False) -> None:
        self.waiters.setdefault(path, []).append(waiter)
        if waiter.run is not None:
            waiter.run.waiting += 1
        if settled:
            self.hasher.request(path, copy=not kinds.holds_secrets(path), prio=PRIO_RUN,
                                delay=delay, settled=True)
        else:
            self.hasher.request(path, copy=not kinds.holds_secrets(path), prio=PRIO_RUN,
                                delay=delay)

    def _drop_output(self, run: Run, use) -> None:
        use.deleted = True
        use.written = False
        for key in [k for k in use.links if k[0] == "output"]:
            self.catalog.unlink(run.db_id, use.links.pop(key), "output", key[1])

    def _on_hash(self, ev: HashDone) -> None:
        waiters = self.waiters.pop(ev.path, [])
        for w in waiters:
            if w.run is not None:
                w.run.waiting -= 1
        if ev.hash is None:
            if ev.error not in ("vanished",):
                self.stats.hash_errors += 1
                log.info("not versioned: %s (%s)", ev.path, ev.error)
            return
        inside = self.ignore.inside(ev.path)
        rel = self.ignore.rel(ev.path) if inside else ev.path
        if ev.dev or ev.ino:
            self.catalog.stat_store([(ev.dev, ev.ino, ev.size, ev.mtime_ns, ev.hash)])
        runs_writing = [w.run for w in waiters if w.write and w.run is not None]
        runs_reading = [w.run for w in waiters if not w.write and w.run is not None]
        nobody = not waiters or all(w.run is None for w in waiters)
        if nobody and self.latest.get(rel) == ev.hash:
            return  # unchanged (a scan or a no-run touch)
        if not waiters and inside:
            # Found by a rescan, no event seen (an overflow lost it): the run that was
            # alive when the file was written, if exactly one was and the agent was
            # watching then (what happened while it was down is nobody's to claim).
            t = ev.t - (clock.to_wall(ev.t) - ev.mtime_ns / 1e9)
            cands = [r for r in self.runs + self.recent
                     if t >= self.agent_started and r.alive_at(t, _SLACK)]
            if len(cands) == 1:
                runs_writing = [cands[0]]
                found = cands[0].use(ev.path)
                found.written = True
                found.steps.setdefault(cands[0].root_step, "write")
        kind = kinds.kind_of(rel, ev.head or None, size=ev.size,
                             role="output" if runs_writing else
                             ("input" if runs_reading else None), rules=self.rules)
        if any(ev.path in r.log_paths for r in runs_writing):
            kind = "log"  # where the run's stdout or stderr went
        producer = runs_writing[-1].db_id if runs_writing else None
        vid = self.catalog.add_version(rel, hash=ev.hash, size=ev.size, mtime_ns=ev.mtime_ns,
                                       kind=kind, stored=ev.stored,
                                       created_at=clock.to_wall(ev.t), run_id=producer)
        self.latest[rel] = ev.hash
        self.stats.versions += 1
        for run in dict.fromkeys(runs_writing):
            use = run.use(ev.path)
            for step, how in list(use.steps.items()) or [(run.root_step, "write")]:
                if how == "write":
                    self._link(run, ev.path, vid, "output", step)
            self._metrics_from(run, rel, ev, kind)
        role = "code" if kind in ("code", "notebook") else "input"
        for run in dict.fromkeys(runs_reading):
            use = run.use(ev.path)
            if use.read_vid is None:
                use.read_vid, use.read_role = vid, role
            for step, how in list(use.steps.items()):
                if how == "read":  # a step that read and wrote it has it as an output
                    self._link(run, ev.path, vid, role, step)
            if kind == "config" and ev.stored:
                self._config_params(run, rel, ev.hash)

    def _link(self, run: Run, path: str, vid: int, role: str, step: Step | None) -> None:
        use = run.use(path)
        sid = step.db_id if step is not None else None
        if role == "output":
            # Read and written by one step counts as its output; a rewritten output keeps
            # its last version.
            for old_role in ("input", "code", "output"):
                old = use.links.pop((old_role, sid), None)
                if old is not None and (old != vid or old_role != "output"):
                    self.catalog.unlink(run.db_id, old, old_role, sid)
        self.catalog.link(run.db_id, vid, role, step_id=sid)
        use.links[(role, sid)] = vid

    def _metrics_from(self, run: Run, rel: str, ev: HashDone, kind: str) -> None:
        """Numbers a run left in a file it wrote (metrics files, logs, CSV logs)."""
        lim = self.metric_limits
        sniff = (lim.sniff and kind in ("other", "dataset")
                 and rel.lower().endswith(_SNIFFABLE))
        limit = lim.max_bytes if kind in ("metrics", "log") else (
            lim.sniff_max_bytes if sniff else -1)
        if ev.size > limit or ev.hash is None:
            return
        if 0 < ev.size <= len(ev.head):
            data = ev.head[: ev.size]  # the hasher read the whole (small) file already
        else:
            data = self.probes.read_object(ev.hash) if ev.stored else None
        if data is None:
            data = self.probes.read_file(ev.path, limit)
        if data is None:
            return
        found = metrics.parse(rel, data, kind=kind, limits=lim)
        if found or kind in ("metrics", "log") or self.catalog.has_metrics(run.db_id, rel):
            # also when empty: a rewritten file replaces the rows it gave before
            self.catalog.set_metrics(run.db_id, rel, found)
        note = metrics.note_for(rel, kind)
        if note and rel not in run.noted:
            run.noted.add(rel)
            log.warning("run %d: %s (%s)", run.db_id, note, rel)

    def _config_params(self, run: Run, rel: str, h: str) -> None:
        limit = int(self.cfg["params"]["config_max_bytes"])
        data = self.probes.read_object(h)
        if data is None or len(data) > limit:
            return
        found = params.config_params(rel, data, rel)
        if found:
            for k, v in found.items():
                run.params[k] = (v, rel)
            self.catalog.set_params(run.db_id, run.params)


def _step_at(steps: list[Step], t: float) -> Step | None:
    """The step that did what happened at `t`, where the run's steps tell: the innermost
    of one chain of steps alive then (a shell waiting on its python), the later of two
    that ran one after the other."""
    live = [st for st in steps if st.started - 0.011 <= t
            and (st.ended_t is None or t <= st.ended_t + _SLACK)]
    parents = {id(st.parent) for st in live if st.parent is not None}
    leaves = [st for st in live if id(st) not in parents]
    if len(leaves) > 1:
        leaves = [st for st in leaves if not any(
            other is not st and st.ended_t is not None and st.last_alive < other.started
            for other in leaves)]
    return leaves[0] if len(leaves) == 1 else None


def _named(path: str, argv_paths: set[str]) -> bool:
    return path in argv_paths or any(path.startswith(p.rstrip("/") + "/") for p in argv_paths)


def _status(code: int | None, sig: int | None) -> str:
    if sig:
        return "failed"
    if code is None:
        return "ended"
    return "completed" if code == 0 else "failed"


def _user(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def rel_or_abs(project: Path, path: str) -> str:
    try:
        return Path(path).relative_to(project).as_posix()
    except ValueError:
        return path
