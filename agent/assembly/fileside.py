"""The assembler's file side: which run and step touched a file, and what its hash means.

A mixin of `Assembler` (agent/assembly/assembler.py): the same single writer, split so each
module keeps one job. Attribution without pids uses, in order: the time window of
each run, fd sampling evidence, paths named on the command line, and the order of the
file event stream (a run's script open marks where its events begin).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

from onlooker.agent import metrics
from onlooker.agent.assembly import attribution
from onlooker.agent.assembly.model import Run, Step, Use
from onlooker.agent.assembly.table import RunTable
from onlooker.agent.events import (
    CLOSE_NOWRITE,
    CLOSE_WRITE,
    CREATE,
    DELETE,
    MOVED_FROM,
    MOVED_TO,
    OPEN,
    FdSeen,
    FileEvent,
    HashDone,
    ProcExec,
)
from onlooker.agent.metrics.logs import same_stream
from onlooker.agent.rules import kinds, params, roles
from onlooker.agent.rules.codemap import source_for_pyc
from onlooker.agent.workers.hasher import PRIO_RUN

log = logging.getLogger(__name__)

SLACK = 0.06  # seconds: how far an event may lie outside a run's window
# inotify events carry the time the agent read them, which can lag the real time
# under load; the order of the stream (see Run.script) settles what the window cannot.
_PIDLESS_SLACK = 0.25
# Outputs not named as metrics are looked into only where numbers can be in a structure.
_SNIFFABLE = (".json", ".yaml", ".yml", ".csv", ".tsv")


# (role, step id) keys of Use.links, one tuple each shared by every file (56 bytes a
# file less for a run writing many); cleared now and then, as steps come and go.
_LINK_KEYS: dict[tuple[str, int | None], tuple[str, int | None]] = {}


@dataclass(slots=True)  # one per hash asked for and not yet answered
class Waiter:
    run: Run | None
    write: bool
    # A read: when the agent saw it (0: not known). Content changed after that is not
    # what was read (hashes come after the grace window).
    read_t: float = 0.0
    asked: float = 0.0  # when the hash was asked for (agent clock)



class FileSide:
    """File events and hash results -> versions linked to runs and steps."""

    # set by Assembler.__init__
    catalog: Any
    hasher: Any
    ignore: Any
    probes: Any
    cfg: Any
    table: RunTable
    runs: list[Run]
    recent: list[Run]
    procs: dict
    outsider_writes: dict
    pending_paths: Any
    _undecided: list[tuple[Run, str]]  # who `_attribute` last shared a file among
    fd_reads: dict[str, dict[int, float]]  # path -> pid -> first seen holding it read-only
    fd_spent: set[tuple[str, int]]  # (path, pid): that sighting explained a close
    pids_known: bool
    agent_started: float
    stat_rows: list
    stats: Any
    lost_starts: list
    lost_runs: list[Run]
    watched_since: float | None
    clock: Any

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
            self._record(proc.run, ev.path, write=False, step=proc.step, seen=ev.t,
                         basis="fd")

    def _on_file(self, ev: FileEvent) -> None:
        """One file event, in order: what it is about, the run and step that did it,
        then what that means for the run's files."""
        path = self._event_path(ev)
        if path is None:
            return
        if ev.before and any(r.script == path for r in self.runs):
            # A run's script made or rewritten: the marker rules look at its open, so
            # the folded events are taken one by one, as they came (for any other path
            # a create and an open just before the close add nothing to it).
            for op in ev.before:
                self._on_file(replace(ev, op=op, before=()))
        if ev.op == MOVED_FROM:
            self.moves[ev.cookie] = (path, ev.t)
            return
        if self.pids_known and ev.pid is None and ev.op not in (MOVED_TO, DELETE):
            self._pidless_beside_fanotify(ev, path)
            return  # fanotify reports opens and closes with their pid; inotify adds moves
        self._seq += 1
        self._event_t = ev.t
        if ev.pid is None:
            self._follow_script_marker(ev, path)
        if ev.op == OPEN:
            # Neither tier tells a read open from a write open: the close will say
            # (hashing at the open would version a file still being written).
            return
        if ev.op == DELETE:
            self._on_delete(ev, path)
            return
        if ev.op not in (CLOSE_WRITE, CLOSE_NOWRITE, CREATE, MOVED_TO):
            return
        if ev.op == CLOSE_NOWRITE and self._read_by_all_named(ev, path):
            return
        run, step, basis = self._attribute(ev, path)
        shared: list[tuple[Run, str]] = []
        if basis == attribution.AMBIGUOUS:  # several runs have it (attribution.share)
            shared, basis = self._undecided, None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("file %s %s pid %s -> run %s", ev.op, path, ev.pid,
                      run.db_id if run else [(r.db_id, b) for r, b in shared] or None)
        if ev.op == MOVED_TO:
            self._on_moved_to(ev, path, run, step, basis, shared)
            return
        write = ev.op in (CLOSE_WRITE, CREATE)
        if write and run is None and ev.pid is not None:
            self.outsider_writes[path] = ev.t
        if shared:
            self._record_shared(shared, path, ev, write=write,
                                closed=ev.op in (CLOSE_WRITE, CLOSE_NOWRITE))
            return
        self._record(run, path, write=write, step=step, seen=ev.t,
                     closed=ev.op in (CLOSE_WRITE, CLOSE_NOWRITE), basis=basis)
        if run is not None and path != ev.path:  # a bytecode read: the source was imported
            run.use(path).imported = run.bytecode_seen = True

    def _event_path(self, ev: FileEvent) -> str | None:
        """The path an event is about: a bytecode read stands for its source; a bytecode
        write is evidence of an import (handled here); other cache events are nothing."""
        if "/__pycache__/" not in ev.path:
            return ev.path
        src = source_for_pyc(ev.path)
        if src is None:
            return None
        if ev.op in (CLOSE_WRITE, MOVED_TO, CREATE):
            self._bytecode_written(ev, src)
            return None
        if not ev.path.endswith(".pyc") or ev.op not in (OPEN, CLOSE_NOWRITE):
            return None
        return src

    def _pidless_beside_fanotify(self, ev: FileEvent, path: str) -> None:
        """inotify's view where fanotify names processes: only a file that appeared in a
        folder watched too late (made and filled by a rename at once) is news; the step
        that wrote in that folder made it."""
        if ev.op != CREATE or path in self.outsider_writes or any(
                (u := r.files.get(path)) is not None and u.written for r in self.runs):
            return
        found = self._folder_writer(path, ev.t)
        if found is not None:
            self._record(found[0], path, write=True, step=found[1], basis="window")

    def _follow_script_marker(self, ev: FileEvent, path: str) -> None:
        """A run shows itself in the pid-less stream by opening its script: events
        before that open are not its own (see `Run.marker`)."""
        if ev.op in (OPEN, CLOSE_NOWRITE):
            for r in self.runs:
                if not r.script_seen and r.script == path:
                    r.script_seen, r.marker = True, self._seq
                    break
            if ev.op == CLOSE_NOWRITE:
                for r in self.runs:
                    if r.script_seen and r.script == path and not r.script_read:
                        r.script_read = True  # read, so that open was the run's
                        break
        elif ev.op == CLOSE_WRITE:
            for r in self.runs:
                if r.script == path and r.script_seen and not r.script_read:
                    # The open taken for the run's was a writer's (`cp x.py y.py; python
                    # y.py`): what came since is not the run's; its own open comes next.
                    r.script_seen = False

    def _read_by_all_named(self, ev: FileEvent, path: str) -> bool:
        """Runs surely alive at once that all name this file in their argv (the same
        script run twice) each read it: no need to tell them apart. (Only surely: in a
        sequential pipeline the one that ended is settled by the attribution rules.) A
        candidate that may have ended already counts when it has read the file before:
        giving it the close again adds nothing, and the run just started that read its
        own script keeps it as `argv`, not as a guess shared with the one ending."""
        if ev.pid is not None or self.pids_known:
            return False
        cands = self._pidless_candidates(ev.t, ev.since)
        named = [r for r in cands if attribution.named(path, r.argv_paths)
                 and (r.surely_alive_at(ev.t) or _has_read(r, path))]
        if len(named) < 2 or len(named) != len(cands):
            return False
        self._spend_own_sighting(ev, path, named)
        for r in named:
            self._record(r, path, write=False, step=_step_at(r.steps, ev.t), closed=True,
                         seen=ev.t, basis="argv")
            if path != ev.path:
                r.use(path).imported = r.bytecode_seen = True
        return True

    def _on_moved_to(self, ev: FileEvent, path: str, run: Run | None, step: Step | None,
                     basis: str | None, shared: list[tuple[Run, str]] | None = None
                     ) -> None:
        src = self.moves.pop(ev.cookie, (None, 0.0))[0]
        if src is not None:
            # The run that wrote the moved file last renamed it (a temp file put in
            # place); earlier writers of the same temp name keep what they did.
            writers = [(u.written_t, r, u) for r in self.runs
                       if (u := r.files.get(src)) is not None and u.written]
            if writers:
                last, r, use = max(writers, key=lambda w: w[0])
                if use.basis == attribution.AMBIGUOUS and run is None:
                    # a temp file the candidates share: so is what it became
                    shared = [(w[1], attribution.AMBIGUOUS) for w in writers if w[0] == last
                              and w[2].basis == attribution.AMBIGUOUS]
                    for w in writers:
                        if (w[1], attribution.AMBIGUOUS) in shared:
                            self._drop_output(w[1], w[2])
                    self._record_shared(shared, path, ev, write=True, closed=True)
                    return
                self._drop_output(r, use)
                shared = None
                if run is None or self.pids_known:
                    run, step = r, use.last_writer or use.step
                    basis = basis or use.basis
            elif src in self.outsider_writes or path in self.outsider_writes:
                # Written by a process of no run (a job script's `sed -i` before it
                # starts the run; fanotify may name the write by the file's new
                # name): the rename is that process's too, not a run's.
                self.outsider_writes.pop(src, None)
                run, step, basis, shared = None, None, None, None
        if run is None and shared:
            self._record_shared(shared, path, ev, write=True, closed=True)
            return
        self._record(run, path, write=True, step=step, closed=True, basis=basis)

    def _record_shared(self, shares: list[tuple[Run, str]], path: str, ev: FileEvent, *,
                       write: bool, closed: bool) -> None:
        """Several runs have the file (attribution.share): those seen reading it (`fd`),
        or each that may have done it (`ambiguous`: never on one of them silently, never
        dropped; no such write names its version's producer, nor gives metrics or
        params)."""
        for r, basis in shares:
            self._record(r, path, write=write, step=_step_at(r.steps, ev.t) or r.root_step,
                         closed=closed, seen=ev.t, basis=basis)
            if path != ev.path:
                r.use(path).imported = r.bytecode_seen = True

    def _on_delete(self, ev: FileEvent, path: str) -> None:
        for r in self.runs:
            use = r.files.get(path)
            if use is not None and use.written and r.surely_alive_at(ev.t):
                self._drop_output(r, use)  # a temp file the run wrote and removed
        # Removed once the run was over (`make clean`, a person's rm): the run still
        # made it, and its version says what it was.

    def _bytecode_written(self, ev: FileEvent, src: str) -> None:
        """Bytecode of `src` was written: the run that just read the source compiled it
        to run it (an import), it did not read it as text."""
        if ev.pid is not None:
            proc = self.table.proc(ev.pid)
            runs = [proc.run] if proc is not None and proc.run is not None else []
        else:
            runs = self._pidless_candidates(ev.t, ev.since)
        for run in runs:
            run.compiled.add(src)
            run.bytecode_seen = True
            use = run.files.get(src)
            if use is not None:
                use.imported = True

    def _ran(self, run: Run, path: str, use: Use) -> bool:
        """Whether a code file the run read was executed by it, not read as text (a
        library hashing or copying the project's scripts). Only Python sources can be
        told apart: by their bytecode, read or written by the run."""
        return (not path.endswith(".py") or use.imported or path in run.compiled
                or run.imports_unseen or not run.bytecode_seen or path in run.scripts)

    def _settle_code(self, run: Run) -> None:
        """At the run's end, when every event before it is in: a Python source the run
        read that it never ran is a tool's read (meta), not its code."""
        for path, use in run.files.items():
            if use.read_role != "code" or self._ran(run, path, use):
                continue
            use.read_role = "meta"
            for (role, sid), vid in list(use.links.items()):
                if role != "code":
                    continue
                del use.links[(role, sid)]
                self.catalog.unlink(run.db_id, vid, "code", sid)
                step = next((s for s in run.steps if s.db_id == sid), None)
                self._link_meta(run, path, vid, "read", step)

    def _folder_writer(self, path: str, t: float) -> tuple[Run, Step | None] | None:
        folder = os.path.dirname(path)
        found = [(r, r.wrote_in[folder]) for r in self.runs
                 if folder in r.wrote_in and r.alive_at(t, _PIDLESS_SLACK)]
        return found[0] if len(found) == 1 else None

    def _pidless_candidates(self, t: float, since: float | None = None) -> list[Run]:
        """The runs a pid-less event at `t` (somewhere in [since, t] when the source was
        behind) may be of: shown in the stream before it, alive then."""
        return [r for r in self.runs
                if r.script_seen and r.alive_at(t, _PIDLESS_SLACK, since)]

    def _attribute(self, ev: FileEvent, path: str
                   ) -> tuple[Run | None, Step | None, str | None]:
        """The run and step that did a file event, and the basis of that finding."""
        if ev.pid is not None:
            proc = self.table.proc(ev.pid)
            if proc is None:
                info = self.probes.read_info(ev.pid)
                if info is not None:
                    self._on_exec(ProcExec(ev.t, info))
                    proc = self.procs.get(ev.pid)
            if proc is not None:
                return proc.run, proc.step, "fanotify"
            if self.pids_known:
                return None, None, None
        cands = self._pidless_candidates(ev.t, ev.since)
        if not cands:
            return None, None, None
        if len(cands) == 1:
            run = cands[0]
            self._spend_own_sighting(ev, path, [run])
            return run, _step_at(run.steps, ev.t) or run.root_step, "window"
        holders = {p.run.db_id: p for pid in self.fd_seen.get(ev.path, {})
                   if (p := self.procs.get(pid)) is not None and p.run is not None}
        evidence = self._fd_evidence(ev, path, holders)
        found = attribution.decide(cands, evidence)
        if found is None and self.pids_known:
            # beside fanotify only a rename comes without a pid, and a rename of a file
            # no run was seen to write is no run's
            self.stats.unattributed += 1
            return None, None, None
        if found is None:
            self._undecided = attribution.share(cands, evidence)
            if any(b == attribution.AMBIGUOUS for _, b in self._undecided):
                self.stats.unattributed += 1
                log.info("cannot tell which of runs %s touched %s: each has it, "
                         "basis ambiguous", [r.db_id for r in cands], path)
            self._spend_read(ev.path, evidence, [r for r, _ in self._undecided])
            return None, None, attribution.AMBIGUOUS
        run, basis = found
        self._spend_read(ev.path, evidence, [run])
        pool = holders if evidence.write else evidence.readers
        step = pool[run.db_id].step if basis == "fd" else (
            _step_at(run.steps, ev.t) or run.root_step)
        return run, step, basis

    def _fd_evidence(self, ev: FileEvent, path: str, holders: dict
                     ) -> attribution.Evidence:
        """What fd sampling says of a pid-less event (attribution.Evidence)."""
        write = ev.op != CLOSE_NOWRITE
        readers: dict[int, Any] = {}
        read_by: dict[int, Any] = {}
        if not write:
            for pid, seen in self.fd_reads.get(ev.path, {}).items():
                p = self.procs.get(pid)
                if p is None or p.run is None:
                    continue
                read_by[p.run.db_id] = p
                if seen <= ev.t and (ev.path, pid) not in self.fd_spent:
                    readers.setdefault(p.run.db_id, p)
        return attribution.Evidence(ev.t, path, holders, write=write, readers=readers,
                                    read_by=read_by)

    def _spend_own_sighting(self, ev: FileEvent, path: str, runs: list[Run]) -> None:
        """A close put down to runs without fd evidence (the only candidate, or all of
        them) is still the close of a reader they were seen holding open: that sighting
        is spent too. Left, it would explain a later run's close of the same file as
        theirs (a sequential pipeline's second read of params.yaml, given to the stage
        before it whose end polling saw late)."""
        if ev.op == CLOSE_NOWRITE and ev.path in self.fd_reads:
            self._spend_read(ev.path, self._fd_evidence(ev, path, {}), runs)

    def _spend_read(self, key: str, evidence: attribution.Evidence, runs: list[Run]) -> None:
        """A close put down to a sighting of a reader: that sighting explains no other."""
        procs = [evidence.readers[r.db_id] for r in runs if r.db_id in evidence.readers]
        if procs:
            self.fd_spent.add((key, min(procs, key=lambda p: self.fd_reads[key][p.pid]).pid))

    def _record(self, run: Run | None, path: str, *, write: bool, step: Step | None,
                closed: bool = False, seen: float = 0.0, basis: str | None = None,
                named: bool = False) -> None:
        """A run (or no run) read or wrote `path`. `closed`: the writer closed it (or
        renamed it into place), so it is complete and needs no quiet period. `seen`:
        when the read was seen (0: unknown, as for a path named in argv). `basis`: how
        the run was found. `named`: an outside file the run's argv names (an input
        wherever it lives)."""
        inside = self.ignore.inside(path)
        if run is None:
            if not write or not inside:
                return  # a read by no run is nobody's input
            self._want_hash(path, Waiter(None, True), delay=0.0 if closed else self.quiet,
                            settled=closed)
            return
        if not inside and not named and not self.ignore.outside_ok(path):
            return
        use = run.use(path)
        if use.basis is None or (use.basis == attribution.AMBIGUOUS and basis is not None):
            use.basis = basis
        step = step or run.root_step
        if step is not None and use.step is None:
            use.step = step
        had = use.steps.get(step)
        if write:
            use.steps[step] = "write"
            use.written = True
            use.written_t = self._event_t
            use.last_writer = step
            run.wrote_in[os.path.dirname(path)] = step
            self._want_hash(path, Waiter(run, True), delay=0.0 if closed else self.quiet,
                            settled=closed)
            return
        if had is not None:
            return
        use.steps[step] = "read"
        if use.read_vid is not None:
            # Another step of the run read what an earlier one read: same version.
            if use.read_role == "meta":
                self._link_meta(run, path, use.read_vid, "read", step)
            else:
                self._link(run, path, use.read_vid, use.read_role, step)
            return
        self._want_hash(path, Waiter(run, False, seen), delay=0.0, settled=closed)

    def _want_hash(self, path: str, waiter: Waiter, *, delay: float,
                   settled: bool = False) -> None:
        waiter.asked = self.clock.now()
        held = self.waiters.get(path)
        if held is None:
            self.waiters[path] = waiter
        elif type(held) is list:
            held.append(waiter)
        else:
            self.waiters[path] = [held, waiter]
        self.hasher.request(path, copy=not kinds.holds_secrets(path), prio=PRIO_RUN,
                            delay=delay, settled=settled)

    def _drop_output(self, run: Run, use) -> None:
        use.written = False
        for key in [k for k in use.links if k[0] == "output"]:
            self.catalog.unlink(run.db_id, use.links.pop(key), "output", key[1])
        for key in [k for k in use.links if k[0] == "meta:write"]:
            self.catalog.unlink(run.db_id, use.links.pop(key), "meta", key[1], access="write")

    def _on_hash(self, ev: HashDone) -> None:
        """A content is known: version it, and link it to the runs that waited for it."""
        waiters = self._waiters_for(ev)
        if waiters is None:
            return
        if ev.hash is None:
            if ev.error not in ("vanished",):
                self.stats.hash_errors += 1
                log.info("not versioned: %s (%s)", ev.path, ev.error)
            return
        inside = self.ignore.inside(ev.path)
        rel = self.ignore.rel(ev.path) if inside else ev.path
        if ev.dev or ev.ino:
            self.stat_rows.append((ev.dev, ev.ino, ev.size, ev.mtime_ns, ev.hash))
        runs_writing = [w.run for w in waiters if w.write and w.run is not None]
        # A read before the file changed again (a checkpoint loaded, then overwritten
        # within the grace window) saw an older content than this: that version is not
        # known here, and a newer one must not pass for it.
        changed = ev.mtime_ns / 1e9  # wall clock, as the file system keeps it
        runs_reading = [w.run for w in waiters if not w.write and w.run is not None
                        and not (w.read_t and changed > self.clock.to_wall(w.read_t) + 0.005)]
        nobody = not waiters or all(w.run is None for w in waiters)
        if nobody and self.latest.get(rel) == ev.hash:
            return  # unchanged (a scan or a no-run touch)
        if not waiters and inside and not self.pending_paths.get(ev.path):
            # (With a write of the file still in the grace window, a scan's result
            # claims nothing, that event names the writer: a job script's `sed -i
            # config.yaml` just before its `python train.py` would otherwise pass for
            # the run's write by its time.)
            claim = self._rescan_claim(ev.path, changed)
            if claim is not None:
                runs_writing = [claim]
                found = claim.use(ev.path)
                found.written = True
                found.basis = "rescan"
                found.steps.setdefault(claim.root_step, "write")
        # Tools' own files (VCS, packaging, caches, tracking-store bookkeeping) are kept
        # apart as meta: never params, metrics or lineage (agent/rules/roles.py says which).
        meta_w = bool(runs_writing) and roles.role_of(
            rel, written=True, rules=self.cfg.role_rules) == roles.META
        meta_r = bool(runs_reading) and roles.role_of(
            rel, written=False, rules=self.cfg.role_rules) == roles.META
        role_for_kind = ("output" if runs_writing else "input" if runs_reading else None)
        if (meta_w if runs_writing else meta_r):
            role_for_kind = "meta"
        kind = kinds.kind_of(rel, ev.head or None, size=ev.size, role=role_for_kind,
                             rules=self.rules)
        if any(ev.path in r.log_paths for r in runs_writing):
            kind = "log"  # where the run's stdout or stderr went
        sure = [r for r in runs_writing
                if r.use(ev.path).basis != attribution.AMBIGUOUS]  # (shared: no producer)
        producer = sure[-1].db_id if sure and not meta_w else None
        if not runs_writing and not runs_reading and inside and (
                any(w.write for w in waiters) or rel in self.latest
                or (self.watched_since is not None and changed > self.watched_since)):
            # A person's edit, a checkout, or a file whose run could not be told: said in
            # `status`, so a loss never hides (a file a scan finds for the first time is
            # none of these).
            self.stats.no_run += 1
            log.info("versioned with no run: %s", rel)
        vid = self.catalog.add_version(rel, hash=ev.hash, size=ev.size, mtime_ns=ev.mtime_ns,
                                       kind=kind, stored=ev.stored,
                                       created_at=self.clock.to_wall(ev.t), run_id=producer)
        self.latest[rel] = ev.hash
        self.stats.versions += 1
        for run in dict.fromkeys(runs_writing):
            self._link_written(run, ev, rel, vid, kind, meta=meta_w,
                               producer_set=run.db_id == producer)
        for run in dict.fromkeys(runs_reading):
            self._link_read(run, ev, rel, vid, kind, meta=meta_r)

    def waiting_on(self, path: str, *, pop: bool = False) -> list[Waiter]:
        """Who waits for the hash of `path` (taken off with `pop`)."""
        held = self.waiters.pop(path, None) if pop else self.waiters.get(path)
        if held is None:
            return []
        return list(held) if type(held) is list else [held]

    def _waiters_for(self, ev: HashDone) -> list[Waiter] | None:
        """Who this result is for; None when only those who asked for a newer content
        waited (the next result is theirs)."""
        waiters = self.waiting_on(ev.path, pop=True)
        if ev.began is not None:
            # Asked after the hasher began on this file (a rewrite closed meanwhile):
            # the next result, of the newer content, is theirs.
            later = [w for w in waiters if w.asked > ev.began]
            if later:
                waiters = [w for w in waiters if w.asked <= ev.began]
                self.waiters[ev.path] = later
                if not waiters:
                    return None  # no version of the older content for nobody
        return waiters

    def _link_written(self, run: Run, ev: HashDone, rel: str, vid: int, kind: str, *,
                      meta: bool, producer_set: bool) -> None:
        use = run.use(ev.path)
        shared = use.basis == attribution.AMBIGUOUS
        for step, how in list(use.steps.items()) or [(run.root_step, "write")]:
            if how != "write":
                continue
            if meta:
                self._link_meta(run, ev.path, vid, "write", step)
            else:
                self._link(run, ev.path, vid, "output", step,
                           producer_set=producer_set or shared)
        if not shared and not self._framework_params(run, rel, ev) and not meta:
            self._metrics_from(run, rel, ev, kind)

    def _link_read(self, run: Run, ev: HashDone, rel: str, vid: int, kind: str, *,
                   meta: bool) -> None:
        use = run.use(ev.path)
        role = "meta" if meta else "code" if kind in ("code", "notebook") else "input"
        if role == "code" and run.closed and not self._ran(run, ev.path, use):
            role = "meta"  # hashed after the run's end: settled now
        if use.read_vid is None:
            use.read_vid, use.read_role = vid, role
        for step, how in list(use.steps.items()):
            if how != "read":  # a step that read and wrote it has it as an output
                continue
            if role == "meta":
                self._link_meta(run, ev.path, vid, "read", step)
            else:
                self._link(run, ev.path, vid, role, step)
        if kind == "config" and ev.stored and role != "meta" and \
                use.basis != attribution.AMBIGUOUS:  # a guessed read gives no params
            self._config_params(run, rel, ev.hash)
        if (role == "code" and ev.path in run.scripts and ev.path.endswith(".py")
                and ev.path not in run.cli_specs):
            source = self._content(ev, disk_limit=None)
            if source is not None:
                self._script_read(run, ev.path, source)

    def _link_meta(self, run: Run, path: str, vid: int, access: str, step: Step | None
                   ) -> None:
        """A tool's file the run read or wrote: kept, its last version per step."""
        use = run.use(path)
        sid = step.db_id if step is not None else None
        key = ("meta:" + access, sid)
        old = use.links.get(key)
        if old == vid:
            return
        if old is not None:
            self.catalog.unlink(run.db_id, old, "meta", sid, access=access)
        self.catalog.link(run.db_id, vid, "meta", step_id=sid, access=access, basis=use.basis)
        use.links[key] = vid

    def _framework_params(self, run: Run, rel: str, ev: HashDone) -> bool:
        """A config a framework composed and wrote for the run (Hydra's .hydra/config.yaml,
        Lightning's hparams.yaml): the run's effective params. True if it was one."""
        if not params.is_framework_file(rel) or ev.size > int(
                self.cfg["params"]["config_max_bytes"]):
            return False
        data = self._content(ev, disk_limit=None)
        if data is None:
            return False
        found = params.framework_params(rel, data)
        if found is None:
            return False
        if found:
            folder = params.framework_run_dir(rel) or ""
            run.framework_found.setdefault(folder, {}).update(found)
            # The composed config is better than the sources it merged: their
            # `file:key` params (stale group defaults among them) go; a multirun writes
            # one folder per job, so then each job's keys carry its folder's name.
            drop = [k for k, (_, src) in run.params.items() if src not in ("argv", "env")]
            for k in drop:
                del run.params[k]
            # The argv as typed comes back where a first job's key had replaced it (a
            # sweep's `lr=0.1,0.01`).
            run.params.update({k: (v, "argv") for k, v in params.merge_step_params(
                run.root_params, run.step_params).items()})
            several = len(run.framework_found) > 1
            for where, got in run.framework_found.items():
                prefix = f"job{os.path.basename(where)}:" if several and where else ""
                for k, v in got.items():
                    run.params[prefix + k] = (v, "framework")
            run.composed = True
            self.catalog.set_params(run.db_id, run.params, drop=drop)
        return True

    def _rescan_claim(self, path: str, changed: float) -> Run | None:
        """The run that wrote a file found changed by a scan, with no event seen (an
        overflow lost it, or the agent was down then), where the evidence names one:
        a live run's process holds it open, or exactly one run the agent knows of can
        have been alive at its change time (`changed`, Unix seconds)."""
        holders = {id(p.run): p.run for pid in self.fd_seen.get(path, ())
                   if (p := self.procs.get(pid)) is not None and p.run is not None}
        if len(holders) == 1:
            return next(iter(holders.values()))
        t = changed - (self.clock.to_wall(0.0))  # on the agent clock
        if t >= self.agent_started:
            cands = [r for r in self.runs + self.recent if r.alive_at(t, SLACK)]
        else:
            # Changed while the agent was down: a run re-attached at start was alive
            # all along since its start; a run that ended meanwhile (lost) may have
            # been too, from its start on. With such a one the command lines decide:
            # the one candidate naming the file or its folder (`--out runs/7`) gets
            # it, the lost one included (a run that ended just before the agent was
            # killed is lost only because the agent had not closed it yet).
            if any(started <= changed + 0.011 for started in self.lost_starts):
                return None  # a lost run whose command line is not known
            cands = [r for r in self.runs if r.reattached and r.started - 0.011 <= t]
            lost = [r for r in self.lost_runs if r.alive_at(t, SLACK)]
            if lost:
                cands += lost
                if len(cands) > 1 or lost[0].ended_at is None:
                    # by time alone only within a recorded span: one whose end nobody
                    # saw may have been alive at any time since its start
                    cands = [r for r in cands if attribution.named(path, r.argv_paths)]
        return cands[0] if len(cands) == 1 else None

    def _link(self, run: Run, path: str, vid: int, role: str, step: Step | None, *,
              producer_set: bool = False) -> None:
        use = run.use(path)
        sid = step.db_id if step is not None else None
        if role == "output":
            run.produced.add((vid, sid))
            # A rewritten output keeps its last version. What the step read there stays
            # its input unless the step wrote that version itself: a checkpoint resumed
            # from and then overwritten is both the input it was and the output it became.
            for old_role in ("input", "code", "output"):
                old = use.links.get((old_role, sid))
                if old is None or (old_role != "output" and old != vid
                                   and (old, sid) not in run.produced):
                    continue
                del use.links[(old_role, sid)]
                if old != vid or old_role != "output":
                    self.catalog.unlink(run.db_id, old, old_role, sid)
        elif (vid, sid) in run.produced:
            return  # the step read back what it wrote: no input
        self.catalog.link(run.db_id, vid, role, step_id=sid, producer_set=producer_set,
                          basis=use.basis)
        key = (role, sid)
        if len(_LINK_KEYS) > 4096:
            _LINK_KEYS.clear()
        use.links[_LINK_KEYS.setdefault(key, key)] = vid

    def _content(self, ev: HashDone, *, disk_limit: int | None) -> bytes | None:
        """The bytes of the version a hash result names: what the hasher already read
        (a small file), else its copy in the object store, else (up to `disk_limit`
        bytes; None: not at all) the file on disk."""
        if 0 < ev.size <= len(ev.head):
            return ev.head[: ev.size]
        data = self.probes.read_object(ev.hash) if ev.stored else None
        if data is None and disk_limit is not None:
            data = self.probes.read_file(ev.path, disk_limit)
        return data

    def _metrics_from(self, run: Run, rel: str, ev: HashDone, kind: str) -> None:
        """Numbers a run left in a file it wrote (metrics files, logs, CSV logs)."""
        lim = self.metric_limits
        sniff = (lim.sniff and kind in ("other", "dataset")
                 and rel.lower().endswith(_SNIFFABLE))
        limit = lim.max_bytes if kind in ("metrics", "log") else (
            lim.sniff_max_bytes if sniff else -1)
        if ev.size > limit or ev.hash is None:
            return
        data = self._content(ev, disk_limit=limit)
        if data is None:
            return
        found = metrics.parse(rel, data, kind=kind, limits=lim)
        if kind == "log":
            found = self._once_per_stream(run, rel, data, found)
        if found or kind in ("metrics", "log") or self.catalog.has_metrics(run.db_id, rel):
            # also when empty: a rewritten file replaces the rows it gave before
            self.catalog.set_metrics(run.db_id, rel, found)
        note = metrics.note_for(rel, kind)
        if note and rel not in run.noted:
            run.noted.add(rel)
            log.warning("run %d: %s (%s)", run.db_id, note, rel)

    def _once_per_stream(self, run: Run, rel: str, data: bytes, found: list) -> list:
        """One stream written to two places (stdout redirected to a file, and a logger's
        file handler) is parsed once: the copy with more points keeps the series."""
        for other, (odata, count) in list(run.log_texts.items()):
            if other == rel or not found or not same_stream(data, odata):
                continue
            if len(found) <= count:
                found = []
            else:
                self.catalog.set_metrics(run.db_id, other, [])
                run.log_texts[other] = (odata, 0)
        run.log_texts[rel] = (data, len(found))
        return found

    def _config_params(self, run: Run, rel: str, h: str) -> None:
        if run.composed:
            return  # a framework's composed config already gave the run's params
        limit = int(self.cfg["params"]["config_max_bytes"])
        data = self.probes.read_object(h)
        if data is None or len(data) > limit:
            return
        found = params.config_params(rel, data, rel)
        if found:
            for k, v in found.items():
                run.params[k] = (v, rel)
            self.catalog.set_params(run.db_id, run.params)


def _has_read(run: Run, path: str) -> bool:
    use = run.files.get(path)
    return use is not None and "read" in use.steps.values()


def _step_at(steps: list[Step], t: float) -> Step | None:
    """The step that did what happened at `t`, where the run's steps tell: the innermost
    of one chain of steps alive then (a shell waiting on its python), the later of two
    that ran one after the other."""
    if len(steps) == 1:  # (most runs: asked for every file event of the run)
        st = steps[0]
        return st if st.started - 0.011 <= t and (
            st.ended_t is None or t <= st.ended_t + SLACK) else None
    live = [st for st in steps if st.started - 0.011 <= t
            and (st.ended_t is None or t <= st.ended_t + SLACK)]
    parents = {id(st.parent) for st in live if st.parent is not None}
    leaves = [st for st in live if id(st) not in parents]
    if len(leaves) > 1:
        leaves = [st for st in leaves if not any(
            other is not st and st.ended_t is not None and st.last_alive < other.started
            for other in leaves)]
    return leaves[0] if len(leaves) == 1 else None


