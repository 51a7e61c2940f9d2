"""The agent process: choose tiers, start the sources, feed the assembler, stop cleanly."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onlooker.agent import clock, launcher, lifecycle
from onlooker.agent import config as config_mod
from onlooker.agent.assembly.assembler import Assembler, Probes
from onlooker.agent.errors import AgentError, CatalogBroken
from onlooker.agent.events import ProcInfo, Stop
from onlooker.agent.probes import environment, gitstate, procfs
from onlooker.agent.probes.gpu import GpuReader
from onlooker.agent.rules import kinds
from onlooker.agent.rules.ignore import Ignore
from onlooker.agent.sources.fanotify import FanotifySource
from onlooker.agent.sources.fdsample import FdSampler
from onlooker.agent.sources.inotify import InotifySource
from onlooker.agent.sources.netlink import NetlinkProcSource
from onlooker.agent.sources.poll import PollProcSource
from onlooker.agent.workers.hasher import PRIO_SCAN, Hasher, SideDoor, StatCache
from onlooker.agent.workers.scan import walk
from onlooker.agent.workers.telemetry import TelemetrySampler
from onlooker.store import private
from onlooker.store.catalog import Catalog
from onlooker.store.errors import CatalogCorrupt, StoreError

log = logging.getLogger(__name__)

_BATCH = 5000  # events per transaction at most
# A batch smaller than this waits up to _GATHER seconds for more: a run writing files
# one by one would otherwise make a transaction and its commit, a tick and a hand-over
# between threads for every few events. Far inside the grace window that file events
# wait out anyway.
_GATHER_BELOW = 256
_GATHER = 0.02
_STATUS_EVERY = 2.0  # seconds between agent.json rewrites (lifecycle allows 10)
_OWED_WINDOW = 120.0  # a run closed this long before the last agent died may be owed files
_IDLE_WAIT = 0.5  # the main loop's longest sleep when nothing waits for its grace window


def _pick(setting: str, wanted: str, best: str, fallback: str,
          probe: Callable[[], tuple[bool, str]]) -> dict[str, str]:
    """One tier: forced by the config, else the best one allowed, else the fallback."""
    if wanted == fallback:
        return {"name": fallback, "why": f"forced by {setting} = \"{fallback}\""}
    ok, why = probe()
    if ok:
        return {"name": best, "why": why or f"{best} available"}
    if wanted == best:
        raise config_mod.ConfigError(f"{setting} = \"{best}\" but {why}")
    return {"name": fallback, "why": f"{best} unavailable: {why}"}


def choose_tiers(cfg: config_mod.Config) -> dict[str, dict[str, str]]:
    """The best process and file tier the agent may use, and why (the one place)."""
    cap = cfg["capture"]
    return {
        "process": _pick("capture.process", cap["process"], "netlink", "poll",
                         NetlinkProcSource.probe),
        "files": _pick("capture.files", cap["files"], "fanotify", "inotify",
                       FanotifySource.probe),
    }


class Agent:
    """Everything one agent runs, wired together; `run()` blocks until stopped."""

    def __init__(self, project: Path) -> None:
        self.project = Path(project).resolve()
        self.cfg = config_mod.load(self.project)
        self.store_dir = self.cfg.store_dir
        if not (self.store_dir / "catalog.db").is_file():
            raise lifecycle.NotInstrumented(self.project)
        # The store is the project owner's, whoever runs the agent (root, the service):
        # one made by an older version is given to them first, and nothing the owner
        # could not read is hashed, copied or parsed (store/private.py).
        self.owner = private.Owner.of(self.project)
        fixed = private.secure_store(self.store_dir, self.owner)
        if fixed:
            log.info("made the store private to its owner (uid %d): %d changes",
                     self.owner.uid, fixed)
        private.read_for(self.owner)
        self.catalog = Catalog(self.store_dir, project=self.project)
        self.tiers = choose_tiers(self.cfg)
        # SimpleQueue: put and get in C, no Python-level lock per event (a run writing
        # 20,000 files makes about 80,000 events; queue.Queue cost ~2 us each per side).
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.stop_event = threading.Event()
        try:  # the folder's identity at start: a folder put in its place is another one
            st = os.stat(self.project)
            self._project_id: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            self._project_id = None
        self.rescan_event = threading.Event()
        self.started = clock.now()
        try:  # when the agent before this one was last alive (it rewrote this every 2 s)
            self._previous_alive: float | None = (self.store_dir / "agent.json").stat().st_mtime
        except OSError:
            self._previous_alive = None
        self.started_wall = time.time()
        self.state = "starting"
        self.scanning = False
        w = self.cfg["watch"]
        self.ignore = Ignore(self.project, exclude=list(w["exclude"]),
                             outside_ignore=list(w["outside_ignore"]),
                             data_roots=list(w["data_roots"]))
        cap = self.cfg["capture"]
        self.cache = StatCache()
        self.cache.load(self.catalog.stat_rows())
        self.hasher = Hasher(self.queue, self.catalog.objects, self.cache,
                             threads=int(cap["hash_threads"]), quiet=float(cap["quiet_seconds"]),
                             copy_max_bytes=int(self.cfg["store"]["object_max_bytes"]))
        fan = self.tiers["files"]["name"] == "fanotify"
        self.assembler = Assembler(
            self.cfg, self.catalog, self.hasher, self.ignore, probes=self._probes(),
            tier=f"{self.tiers['process']['name']}+{self.tiers['files']['name']}",
            agent_started=self.started, pids_known=fan,
            # The shell that ran `onlooker start` (and the CLI) are never runs.
            never=_ancestors_of_agent(),
            # runs are the project owner's (and the agent's own user's: `sudo onlooker
            # start`), never another user's who happens to work in the folder
            run_uids={os.stat(self.project).st_uid, os.geteuid()})
        self.assembler.load_latest(self.catalog.latest_versions())
        self.assembler.watched_since = self.catalog.first_started()
        self._watched: frozenset[int] = frozenset()
        self.sources: list[Any] = []
        me = os.getpid()
        # The agent's pids, whose opens and execs the sources drop: this one, and the
        # bulk process once the hasher has started it (before the sources start).
        self.own_pids: set[int] = {me}
        if self.tiers["process"]["name"] == "netlink":
            self.sources.append(NetlinkProcSource(self.queue, ignore_pid=self.own_pids))
        else:
            self.sources.append(PollProcSource(self.queue, hz=float(cap["poll_hz"]),
                                               ignore_pid=self.own_pids,
                                               watched=self.watched))
        self.inotify = InotifySource(self.queue, self.project, self.ignore, reads=not fan)
        if fan:
            self.sources.append(FanotifySource(self.queue, self.project, self.ignore,
                                               ignore_pid=self.own_pids,
                                               run_pids=self.watched))
        else:
            self.side_door = SideDoor(self.store_dir / "tmp" / "read",
                                      fallback=self.inotify.expect_own_read)
            self.hasher.set_side_door(self.side_door)
            # Open files of run processes: evidence for attribution and reads outside the
            # project; 10 Hz is plenty for files a run holds while it works.
            self.sources.append(FdSampler(self.queue, hz=min(10.0, float(cap["poll_hz"])),
                                          watched=self.watched, keep=self._fd_keep))
        self.sources.append(self.inotify)
        # Runs wait for the file sources to be past their end (a backlog is not a loss).
        self.assembler.files_caught_up = self._files_caught_up()
        self.assembler.procs_caught_up = self._procs_caught_up()
        self._git_cache: tuple[float, dict | None] = (-1e9, None)
        # GPU readings through NVML where there is a driver; off (and said so) elsewhere.
        self.gpu = GpuReader()
        ok, why = self.gpu.probe()
        self.tiers["gpu"] = {"name": "nvml" if ok else "none", "why": why}
        self._trees: dict[int, frozenset[int]] = {}
        self.telemetry = TelemetrySampler(self.queue, interval=float(cap["telemetry_seconds"]),
                                          runs=self.run_trees, gpu=self.gpu if ok else None)
        if fan:
            self.side_door = None

    # -- wiring ---------------------------------------------------------------

    def watched(self) -> frozenset[int]:
        return self._watched

    def run_trees(self) -> dict[int, frozenset[int]]:
        """{run id: live pids of its tree} for the telemetry sampler (a fresh dict)."""
        return dict(self._trees)

    def _fd_keep(self, path: str) -> bool:
        if self.ignore.inside(path):
            return not self.ignore.skip_file(path)
        return self.ignore.outside_ok(path)

    def _probes(self) -> Probes:
        objects = self.catalog.objects

        def read_object(h: str) -> bytes | None:
            try:
                with objects.open(h) as f:
                    return f.read()
            except OSError:
                return None

        def put_text(text: str) -> str | None:
            return objects.put_bytes(text.encode("utf-8", "surrogateescape"))

        return Probes(env_capture=_env_of, git_snapshot=self._git,
                      read_object=read_object, put_text=put_text,
                      read_info=lambda pid: procfs.read_info(pid), read_file=self._read_small,
                      on_overflow=self._on_overflow)

    def _git(self) -> dict | None:
        at, snap = self._git_cache
        now = clock.now()
        if now - at < 1.0:
            return snap
        snap = gitstate.snapshot(self.project, read=self._own_read)
        self._git_cache = (clock.now(), snap)
        return snap

    def _read_small(self, path: str, limit: int) -> bytes | None:
        """A file's bytes, read as the agent, or None if larger than `limit` or unreadable."""
        try:
            if os.path.getsize(path) > limit:
                return None
            return self._own_read(path)
        except OSError:
            return None

    def _own_read(self, path: str) -> bytes:
        """Read a project file as the agent, unseen by the inotify tier; refused
        (PermissionError) when the project's owner could not read it."""
        if not private.may_read(path):
            raise PermissionError(f"the project's owner may not read {path}")
        if self.side_door is None:
            with open(path, "rb") as f:
                return f.read()
        with self.side_door.path(path) as quiet, open(quiet, "rb") as f:
            return f.read()

    def _on_overflow(self, source: str) -> None:
        log.warning("%s lost events: rescanning the project", source)
        self.rescan_event.set()

    # -- scanning -------------------------------------------------------------

    def _scan_loop(self) -> None:
        self.rescan_event.set()  # the start-up scan
        while not self.stop_event.is_set():
            self.rescan_event.wait()  # set at start-up, on overflow and on stop
            if self.stop_event.is_set():
                break
            self.rescan_event.clear()
            self.scanning = True
            t0 = time.monotonic()
            n = queued = 0
            latest = self.assembler.latest
            try:
                for path, st in walk(self.project, self.ignore):
                    if self.stop_event.is_set():
                        break
                    n += 1
                    h = self.cache.get(st)
                    if h is not None and latest.get(self.ignore.rel(path)) == h:
                        continue
                    queued += 1
                    self.hasher.request(path, copy=not kinds.holds_secrets(path), prio=PRIO_SCAN,
                                        size=st.st_size)
            except Exception:  # a scan must never take the agent down
                log.exception("scan failed")
            finally:
                self.scanning = False
            log.info("scan: %d files in %.2f s, %d to hash", n, time.monotonic() - t0, queued)

    # -- main loop ------------------------------------------------------------

    def _reattach(self) -> None:
        # Runs closed in the last minutes of the agent before this one (its agent.json,
        # rewritten every 2 s, says when it was last alive) may have had outputs it saw
        # but had not hashed when it died: candidates, by their recorded span and
        # command line, for files the start's scan finds changed.
        last_alive = self._previous_alive
        if last_alive is not None:
            for row in self.catalog.runs_ended_since(last_alive - _OWED_WINDOW):
                row["root_step"] = self.catalog.root_step(row["id"], row["pid"])
                self.assembler.note_lost(row["started_at"], row, ended_at=row["ended_at"])
        for row in self.catalog.open_runs():
            row = {**row, "root_step": self.catalog.root_step(row["id"], row["pid"])}
            if procfs.alive(row["pid"], row["pid_start"]):
                info = procfs.read_info(row["pid"])
                if info is not None:
                    kids = [i for i in (procfs.read_info(p) for p in procfs.descendants(row["pid"]))
                            if i is not None]
                    self.assembler.reattach(row, info, kids)
                    log.info("re-attached to run %d (pid %d)", row["id"], row["pid"])
                    continue
            end = self.catalog.root_end(row["id"], row["pid"])
            if end is not None:
                # Its end was seen and recorded before the agent went down, only the run
                # was not closed yet (the grace window): closed now as it ended.
                self.assembler.note_lost(row["started_at"], row, ended_at=end["ended_at"])
                self.catalog.update_run(row["id"], status=end["status"],
                                        exit_code=end["exit_code"], signal=end["signal"],
                                        ended_at=end["ended_at"])
                self.catalog.close_open_steps(row["id"], status="ended")
                log.info("run %d had ended before the agent went down: %s", row["id"],
                         end["status"])
                continue
            self.assembler.note_lost(row["started_at"], row)
            self.catalog.update_run(row["id"], status="lost")
            self.catalog.close_open_steps(row["id"], status="lost")
            log.info("run %d ended while the agent was down: lost", row["id"])

    def run(self) -> None:
        with lifecycle.acquire_pidfile(self.store_dir):
            try:
                self._run()
            finally:
                self.state = "stopped"
                self._write_status()

    def _run(self) -> None:
        load_env_cache(self.store_dir)
        with self.catalog.transaction():
            self._reattach()
        self._watched = frozenset(self.assembler.watched_pids())
        self._trees = {r.db_id: frozenset(r.members) for r in self.assembler.open_runs()}
        self.hasher.start()
        if self.hasher.bulk_pid is not None:
            self.own_pids.add(self.hasher.bulk_pid)
        started = []
        try:
            for src in self.sources:
                src.start()
                started.append(src)
        except BaseException:
            # A source that cannot start (the inotify limit, fanotify refused) ends the
            # agent: what did start goes down with it, the bulk process included, or
            # an in-process caller (`onlooker watch`, a test) would keep it running.
            for src in reversed(started):
                src.stop()
            self.hasher.stop()
            raise
        self.telemetry.start()
        scanner = threading.Thread(target=self._scan_loop, name="onlooker-scan", daemon=True)
        scanner.start()
        _name_threads()
        self.state = "watching"
        self._write_status()
        log.info("watching %s (process tier %s, files tier %s)", self.project,
                 self.tiers["process"]["name"], self.tiers["files"]["name"])
        last_status = time.monotonic()
        open_said = 0
        while not self.stop_event.is_set():
            try:
                self._pump(timeout=self._next_wait())
            except CatalogCorrupt as err:
                self._halt(err)
                return
            # A run that opened or closed is said at once: `status` right after a command
            # must not show the idle state from before it.
            open_now = len(self.assembler.open_runs())
            if time.monotonic() - last_status >= _STATUS_EVERY or open_now != open_said:
                gone = self._project_gone()
                if gone:
                    # nothing here can be watched or written any more: stop cleanly,
                    # once, instead of warning every 2 s for ever
                    log.error("%s; the agent stops (run `onlooker start` where the project"
                              " is now)", gone)
                    self.stop_event.set()
                    break
                with self.catalog.transaction():
                    self._launcher_records()
                self._write_status()
                last_status = time.monotonic()
                open_said = open_now
        self.state = "stopping"
        self.hasher.hurry()
        self.rescan_event.set()  # wakes the scan loop, which sees the stop
        self._write_status()
        log.info("stopping: committing what was seen")
        for src in self.sources:
            src.stop()
        self.telemetry.stop()
        self.gpu.close()
        self.queue.put(Stop(clock.now()))
        self._pump(timeout=0.0, until_stop=True)
        with self.catalog.transaction():
            self.assembler.drain(clock.now())
        # Hash what runs read and wrote; the scan backlog is dropped (the next start rescans).
        while True:
            self._pump(timeout=0.05)
            if not self.assembler.busy() and self.queue.empty():
                break
            if time.monotonic() - last_status >= _STATUS_EVERY:
                self._write_status()
                last_status = time.monotonic()
        self.hasher.stop()
        self._pump(timeout=0.0, until_stop=False)
        with self.catalog.transaction():
            self.assembler.drain(clock.now())
            self._launcher_records(final=True)
        save_env_cache(self.store_dir)
        log.info("stopped")

    def _project_gone(self) -> str | None:
        """Why the folder this agent watches is no longer the project (moved, renamed,
        deleted, or its .onlooker/ removed), or None."""
        try:
            st = os.stat(self.project)
        except OSError:
            return f"the project folder {self.project} was moved or deleted"
        if self._project_id is None:
            self._project_id = (st.st_dev, st.st_ino)
        elif (st.st_dev, st.st_ino) != self._project_id:
            return f"the project folder {self.project} was moved (another folder is there now)"
        if st.st_uid != self.owner.uid:  # its store is now someone else's to have
            return f"the project folder {self.project} now belongs to another user"
        if not os.path.isdir(self.store_dir):
            return f"{self.store_dir} was removed"
        # Root working for the owner: a store swapped for a link (or a third user's
        # folder) would have it make and give away files wherever the link points.
        return private.store_folder_problem(self.store_dir, self.owner)

    def _halt(self, err: CatalogCorrupt) -> None:
        """The catalog went bad under the agent (a disk error, a write from outside):
        nothing it sees can be recorded any more, so it stops the sources and its
        workers, says so once and exits non-zero, rather than logging every event's
        failure or being restarted into the same wall by a supervisor."""
        self.state = "stopping"
        for src in self.sources:
            src.stop()
        self.telemetry.stop()
        self.gpu.close()
        self.hasher.stop()
        raise CatalogBroken(f"{err}; the agent stopped, and `onlooker start` goes on once"
                            " it is repaired") from err

    def _next_wait(self) -> float:
        """How long the loop may sleep: until the next grace window closes, at most
        _IDLE_WAIT (the status file and launcher records are looked at between)."""
        a = self.assembler
        due = [q[0][0] for q in (a.pending, a.pending_late) if q]
        if a.open_runs():
            return 0.1  # runs to close, telemetry to store
        if due:
            return max(0.01, min(_IDLE_WAIT, min(due) - clock.now()))
        return _IDLE_WAIT

    def _files_caught_up(self) -> float:
        """The time before which the file sources have put every event on the queue."""
        return min((src.caught_up for src in self.sources
                    if hasattr(src, "caught_up") and not isinstance(src, PollProcSource)),
                   default=float("inf"))

    def _procs_caught_up(self) -> float:
        """The time at which every living process was last reported (the poller's last
        look); netlink reports each exec as it happens."""
        return min((src.caught_up for src in self.sources if isinstance(src, PollProcSource)),
                   default=float("inf"))

    def _pump(self, *, timeout: float, until_stop: bool = False) -> None:
        # Read before taking events: what the sources queued before this point is then
        # all handled once the queue has been emptied below.
        caught_up = self._files_caught_up()
        procs_caught_up = self._procs_caught_up()
        emptied = False
        batch: list[Any] = []
        try:
            batch.append(self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait())
        except queue.Empty:
            pass
        gather_until = time.monotonic() + _GATHER if batch and not until_stop else 0.0
        while len(batch) < _BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                if until_stop and not any(isinstance(e, Stop) for e in batch):
                    try:
                        batch.append(self.queue.get(timeout=1.0))
                        continue
                    except queue.Empty:
                        pass
                if len(batch) < _GATHER_BELOW and gather_until:
                    left = gather_until - time.monotonic()
                    if left > 0:
                        try:
                            batch.append(self.queue.get(timeout=left))
                            continue
                        except queue.Empty:
                            pass
                emptied = True
                break
        with self.catalog.transaction():
            for ev in batch:
                if isinstance(ev, Stop):
                    continue
                try:
                    self.assembler.handle(ev)
                except CatalogCorrupt:
                    raise  # not one bad event: every write from now on fails the same way
                except Exception:  # one bad event must not end the agent
                    # not %r: a process event holds argv and environment (secrets)
                    log.exception("could not record a %s event", type(ev).__name__)
            if emptied:
                self.assembler.files_caught_up = max(self.assembler.files_caught_up, caught_up)
                self.assembler.procs_caught_up = procs_caught_up
            self.assembler.tick(clock.now())
        before = self._watched
        idle = not self._trees
        self._watched = frozenset(self.assembler.watched_pids())
        self._trees = {r.db_id: frozenset(r.members) for r in self.assembler.open_runs()}
        if (idle and self._trees) or (self._watched and not before):
            # (Both: a run whose processes are gone may still be open, waiting for the
            # sources, when the next one starts; the fd sampler slept meanwhile.)
            self._nudge()

    def _nudge(self) -> None:
        """A run is open, or has processes again: the samplers that sleep while there
        is nothing to sample look now."""
        self.telemetry.nudge()
        for src in self.sources:
            if isinstance(src, FdSampler):
                src.nudge()

    def _launcher_records(self, *, final: bool = False) -> None:
        """Apply what `onlooker run` left: the exact exit status and the kept output.

        A record is applied once its command ended and the agent has closed the run
        (so the poll tier's unknown exit code is replaced, not overwritten later)."""
        folder = self.store_dir / launcher.LAUNCHER_DIR
        try:
            paths = sorted(folder.glob("*.json"))
        except OSError:
            return
        now = time.time()
        for path in paths:
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
                age = now - float(rec.get("ended", rec.get("started", now)))
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            if "ended" not in rec:
                if not procfs.alive_pid(rec.get("launcher_pid", -1)) or age > 3600:
                    path.unlink(missing_ok=True)
                continue
            found = None
            if rec.get("child_start_ticks") is not None:
                found = self.catalog.run_of_process(rec["child_pid"], rec["child_start_ticks"])
            if found is None or found["status"] == "running":
                if final or age > 60:
                    if found is None:
                        log.info("an onlooker run (pid %s) matched no run", rec.get("child_pid"))
                        path.unlink(missing_ok=True)
                continue
            self._apply_launcher(found["id"], rec)
            path.unlink(missing_ok=True)

    def _apply_launcher(self, run_id: int, rec: dict) -> None:
        """Read what the record names (the kept output); the assembler writes it."""
        rel, data, mtime_ns = rec.get("log"), None, 0
        if rel:
            try:
                data = (self.project / rel).read_bytes()
                mtime_ns = os.stat(self.project / rel).st_mtime_ns
            except OSError:
                rel, data = None, None
        self.assembler.apply_launcher(run_id, rec["child_pid"], rec.get("exit_code"),
                                      rec.get("signal"), log=rel, data=data,
                                      mtime_ns=mtime_ns)

    def _write_status(self) -> None:
        a = self.assembler
        hashing = self.hasher.backlog()
        data = {
            "pid": os.getpid(),
            "state": self.state,
            "project": str(self.project),
            "started_at": self.started_wall,
            "updated_at": time.time(),
            "tiers": self.tiers,
            "counts": {
                "runs_open": len(a.open_runs()),
                "runs_started": a.stats.runs_started,
                "runs_finished": a.stats.runs_finished,
                "events": a.stats.events,
                "versions": a.stats.versions,
                "files_hashed": self.hasher.files_hashed,
                "bytes_hashed": self.hasher.bytes_hashed,
                "overflows": a.stats.overflows,
                "unattributed": a.stats.unattributed,
                "versions_no_run": a.stats.no_run,
                "hash_errors": a.stats.hash_errors,
                "watches": getattr(self.inotify, "watch_count", 0),
            },
            "backlog": {
                "queue": self.queue.qsize(),
                "hashing": hashing["files"],
                "hash_bytes": hashing["bytes"],
                "pending_events": len(a.pending) + len(a.pending_late),
                "scanning": self.scanning,
            },
            # Where the bulk work (hashing, copying, packs) runs, and at what priority.
            "bulk": dict(self.hasher.priority),
        }
        path = self.store_dir / "agent.json"
        try:
            private.write_private(path, json.dumps(data, indent=1).encode(), self.owner)
        except OSError as err:
            log.warning("cannot write %s: %s", path, err)


def _ancestors_of_agent() -> set[tuple[int, int]]:
    """(pid, start ticks) of the CLI and shell that started the agent: never runs."""
    out = set()
    for pid in procfs.ancestors(os.getppid()):
        brief = procfs.stat_brief(pid)
        if brief is not None:
            out.add((pid, brief[2]))
    return out


_ENV_CACHE = "python-envs.json"  # under .onlooker/tmp/


def load_env_cache(store_dir: Path) -> None:
    """Seed the interpreters' descriptions (their packages) from the last agent's.

    Reading a venv's metadata costs ~90 ms of CPU (211 packages) at the first run of
    each interpreter, on the event path; an agent started just before a run would pay
    it every time. Each entry is used only while its site-packages mtimes are the
    same (`environment._python` checks them), so a stale file costs a re-read only."""
    try:
        rows = json.loads((store_dir / "tmp" / _ENV_CACHE).read_text(encoding="utf-8"))
        for key, mtimes, result in rows[-64:]:
            stamp = tuple((d, m) for d, m in mtimes)
            environment._py_cache[key] = (stamp, result)
    except (OSError, ValueError, TypeError):
        pass


def save_env_cache(store_dir: Path) -> None:
    rows = [[key, [list(x) for x in stamp], result]
            for key, (stamp, result) in list(environment._py_cache.items())]
    path = store_dir / "tmp" / _ENV_CACHE
    try:
        owner = private.Owner.of(store_dir)
        private.make_dir(path.parent, owner)
        private.write_private(path, json.dumps(rows).encode("utf-8"), owner)
    except (OSError, TypeError, ValueError) as err:
        log.info("cannot keep the interpreters' descriptions: %s", err)


def _env_of(info: ProcInfo) -> dict:
    """The run's environment, from the interpreter as the run named it (a venv's link)."""
    exe = environment.interpreter_path(info.argv[0] if info.argv else "", info.cwd,
                                       dict(info.environ), info.exe)
    return environment.capture(exe, uid=info.uid)


def run(project: Path, *, stop: threading.Event | None = None) -> None:
    """Run the agent in this process until `stop` is set or SIGTERM/SIGINT arrives."""
    agent = Agent(project)
    if stop is not None:
        agent.stop_event = stop
    if threading.current_thread() is threading.main_thread():
        def _signal(signum: int, frame: object) -> None:  # only records; the loop acts
            agent.stop_event.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
    agent.run()


def _memory_hook(out: str) -> None:
    """A developer's tool (`ONLOOKER_TRACEMALLOC=FILE onlooker start`): trace the
    agent's allocations; each SIGUSR2 appends what holds the most memory now, by the
    line that allocated it, to FILE. Slows the agent several times while on."""
    import tracemalloc

    tracemalloc.start(1)

    def dump(signum: int, frame: object) -> None:
        snap = tracemalloc.take_snapshot()
        top = snap.statistics("lineno")
        total = sum(s.size for s in top)
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"-- {time.strftime('%H:%M:%S')} traced {total / 2**20:.1f} MiB, "
                    f"peak {tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB\n")
            for stat in top[:25]:
                frame0 = stat.traceback[0]
                f.write(f"{stat.size / 2**20:8.1f} MiB {stat.count:9d} blocks  "
                        f"{frame0.filename}:{frame0.lineno}\n")

    signal.signal(signal.SIGUSR2, dump)


def _name_threads() -> None:
    """Give the agent's threads their names in the kernel too, so that `top -H`, `ps -L`
    and /proc/<pid>/task/*/comm tell the poller from the hasher (Python 3.11 names them
    for itself only). Best effort: 15 bytes at most, the `onlooker-` prefix dropped."""
    for th in threading.enumerate():
        if th is threading.main_thread() or th.native_id is None:
            continue
        name = th.name.removeprefix("onlooker-")[:15]
        try:
            with open(f"/proc/self/task/{th.native_id}/comm", "w") as f:
                f.write(name)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m onlooker.agent.daemon PROJECT", file=sys.stderr)
        return 2
    level = os.environ.get("ONLOOKER_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("ONLOOKER_TRACEMALLOC"):
        _memory_hook(os.environ["ONLOOKER_TRACEMALLOC"])
    try:
        run(Path(args[0]))
    except CatalogBroken as err:  # it was running: no "cannot start"
        log.error("%s", err)
        return 1
    except (AgentError, StoreError) as err:
        # One sentence, marked so that `onlooker start` can say it as it is.
        log.error("%s%s", lifecycle.FAILED_MARK, err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
