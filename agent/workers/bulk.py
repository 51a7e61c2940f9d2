"""The bulk process: the agent's reading, hashing and storing, at idle CPU and IO priority.

The agent (`Hasher`) keeps the queue; this process only does the work, one batch per
message on a socket per lane, and answers with the outcomes (`hasher.hash_batch`). It
is a process, not a thread of the agent, because priority is per thread but the GIL is
per process: an idle-priority thread preempted while it holds the GIL would stall the
event path for as long as the run keeps the cores busy (`priority.py`). Here a starved
worker stalls only its own kind.

It lowers itself (SCHED_IDLE, else nice 19; the idle IO class) before it makes any
thread, so every thread of it inherits that, BLAKE3's pool included. It ends when the
agent closes its sockets or dies (end of file), and ignores SIGINT (a Ctrl-C meant for
`onlooker watch` reaches the whole process group; the agent decides when it ends).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HURRY_WAIT = 2.0  # once stopping, a batch the starved process holds longer is redone here


class BulkProcess:
    """The agent's handle on its bulk process (one socket per lane)."""

    def __init__(self, proc: subprocess.Popen, conns: list[Connection]) -> None:
        self._proc = proc
        self._conns = conns
        self.pid = proc.pid
        self.priority: dict[str, Any] = {"cpu": "starting", "io": "starting"}
        self._ready = threading.Event()
        self._failed: str | None = None
        self.hurried = False
        self._closed = False
        # The hand-shake happens off the caller's thread: the agent's start does not
        # wait for Python to start.
        threading.Thread(target=self._handshake, name="onlooker-bulk-start",
                         daemon=True).start()

    @classmethod
    def spawn(cls, *, lanes: int, objects_root: Path, quiet: float, copy_max: int,
              door: Path | None) -> BulkProcess:
        ours: list[Connection] = []
        theirs: list[int] = []
        for _ in range(lanes):
            a, b = socket.socketpair()
            ours.append(Connection(a.detach()))
            theirs.append(b.detach())
        from onlooker.store import private

        cfg = {"fds": theirs, "objects": str(objects_root), "quiet": quiet,
               "copy_max": copy_max, "door": str(door) if door is not None else None,
               "reader": private.reader_state()}  # the owner's read right, as the agent's
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "onlooker.agent.workers.bulk", json.dumps(cfg)],
                pass_fds=theirs, stdin=subprocess.DEVNULL, close_fds=True)
        except BaseException:
            for c in ours:
                c.close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return cls(proc, ours)

    def _handshake(self) -> None:
        try:
            self._conns[0].send(("init", None))
            # No time limit: at idle priority beside a busy run it may start only when
            # the run is done, and that is as meant (the jobs wait, nothing is lost).
            while not self._conns[0].poll(0.5):
                if self._closed or self.hurried:
                    raise TimeoutError("stopping before the bulk process started")
                if self._proc.poll() is not None:
                    raise RuntimeError(f"it exited with {self._proc.returncode}")
            kind, prio = self._conns[0].recv()
            if kind != "ready":
                raise RuntimeError(f"unexpected answer {kind!r}")
            self.priority = dict(prio)
            log.info("bulk process %d: CPU %s, IO %s", self.pid, prio.get("cpu"), prio.get("io"))
        except Exception as err:
            self._failed = str(err) or type(err).__name__
        finally:
            self._ready.set()

    def run(self, lane: int, specs: list[tuple]) -> list[tuple]:
        """The outcomes of one batch. Raises when the process cannot do it (the
        caller then hashes in the agent)."""
        while not self._ready.wait(0.5):
            if self.hurried or self._closed:
                raise TimeoutError("stopping before the bulk process started")
        if self._failed is not None:
            raise RuntimeError(self._failed)
        conn = self._conns[lane]
        conn.send(specs)
        began = time.monotonic()
        # Wait in slices only so that a stopping agent is not held by a starved batch.
        while not conn.poll(0.5):
            if self.hurried and time.monotonic() - began > _HURRY_WAIT:
                raise TimeoutError("stopping, and the bulk process is starved")
            if self._proc.poll() is not None:
                raise RuntimeError(f"it exited with {self._proc.returncode}")
        return conn.recv()

    def close(self, *, kill: bool = False) -> None:
        """Close the sockets: the process ends after its batch in hand (at once with
        `kill`, when it failed or is starved while the agent stops)."""
        if self._closed:
            return
        self._closed = True
        if kill:
            self._proc.kill()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # Starved mid-batch: what it had not finished is redone by the agent, and
            # a half-written pack without its index is never read.
            self._proc.kill()
            self._proc.wait(timeout=5)


def _serve(conn: Connection, door, objects, quiet: float, copy_max: int) -> None:
    from onlooker.agent.workers.hasher import hash_batch

    while True:
        try:
            specs = conn.recv()
        except (EOFError, OSError):
            return  # the agent closed the socket or died
        # probe_only: a lease held by a starved process would make a run's writer wait.
        # No stat cache here: each job carries the agent's entry for its file (a hint).
        outcomes = hash_batch(specs, door, objects=objects, cache=None, quiet=quiet,
                              copy_max=copy_max, probe_only=True)
        try:
            conn.send(outcomes)
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cfg = json.loads(args[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    level = os.environ.get("ONLOOKER_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s[bulk]: %(message)s")
    from onlooker.agent.workers import priority

    # First of all, before the imports and before any thread exists: even this
    # process's start must not compete with a run, and every thread inherits it.
    prio = priority.lower_this_thread()
    if os.environ.get("ONLOOKER_TRACEMALLOC"):  # the agent's developer hook, here too
        from onlooker.agent.daemon import _memory_hook

        _memory_hook(os.environ["ONLOOKER_TRACEMALLOC"] + ".bulk")
    from onlooker.agent.workers.hasher import SideDoor
    from onlooker.store import private
    from onlooker.store.objects import ObjectStore

    private.set_reader_state(cfg.get("reader"))
    conns = [Connection(fd) for fd in cfg["fds"]]
    try:
        conns[0].recv()  # ("init", None): the agent is there
    except (EOFError, OSError):
        return 0
    conns[0].send(("ready", prio))
    objects = ObjectStore(Path(cfg["objects"]))
    door = (SideDoor(Path(cfg["door"]), fallback=None, clean=False)
            if cfg.get("door") else None)
    threads = [threading.Thread(target=_serve, name=f"onlooker-bulk-{i}", daemon=True,
                                args=(c, door, objects, float(cfg["quiet"]),
                                      int(cfg["copy_max"])))
               for i, c in enumerate(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
