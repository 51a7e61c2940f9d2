"""One registered project's agent, run by root: its start, its restarts with backoff,
and its stop, through the checks of guard.py (the owner can write its store)."""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onlooker.agent import config, lifecycle
from onlooker.agent.errors import AgentError
from onlooker.agent.service.common import printable
from onlooker.agent.service.guard import (
    agent_tiers,
    check_project,
    gone,
    is_projects_agent,
    log_reason,
    proc_uid,
    store_pid,
    user_name,
)

log = logging.getLogger(__name__)

# Seconds between restarts of an agent that died; `FAIL_AFTER` deaths within
# `FAIL_WINDOW` seconds mark the project failed instead of looping.
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
FAIL_AFTER = 5
FAIL_WINDOW = 600.0
_STOP_POLL = 0.05


def _exit_words(code: int | None) -> str:
    if code is None:
        return "the agent exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the agent was killed by {name}"
    return f"the agent exited with status {code}"


def stop_agent(project: Path, *, uid: int, pid: int | None = None,
               timeout: float = 600.0) -> bool:
    """SIGTERM the project's agent (`pid`, else the one its store names) and wait until it
    has exited, having committed; False when none was running.

    Root's own lifecycle.stop, made safe for a store its owner can write: the pid is
    signalled only when it is this project's agent (`is_projects_agent`), checked through a
    pidfd so that the process checked is the process signalled."""
    project_s = str(project)
    pid = pid or store_pid(project_s, uid)
    if pid is None:
        return False
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError as err:
        if err.errno != errno.ENOSYS:  # EINVAL: a thread's id, not a process's
            return False
        pidfd = None  # a kernel without pidfds (before 5.3)
    try:
        if not is_projects_agent(pid, project_s, uid):
            log.info("%s: pid %d is not this project's agent: not signalled", printable(project),
                     pid)
            return False
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        log.info("%s: sent SIGTERM to agent pid %d", printable(project), pid)
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.waitpid(pid, os.WNOHANG)  # our child's zombie is reaped here
            except ChildProcessError:
                pass
            if pidfd is not None:
                if select.select([pidfd], [], [], 0)[0]:  # readable once it has exited
                    return True
            elif gone(pid):
                return True
            if time.monotonic() > deadline:
                raise lifecycle.StopTimeout(
                    f"the agent (pid {pid}) is still committing after {timeout:.0f} s")
            time.sleep(_STOP_POLL)
    finally:
        if pidfd is not None:
            os.close(pidfd)


# -- the keeper ------------------------------------------------------------------------------


class Keeper:
    """One registered project's agent: started as root, watched, restarted with backoff
    when it dies, marked failed (with the agent's own reason) when it keeps dying."""

    def __init__(self, project: str, uid: int, *,
                 start: Callable[[Path], int] = lifecycle.start,
                 stop: Callable[..., bool] = stop_agent,
                 backoff: tuple[float, ...] = BACKOFF) -> None:
        self.project, self.uid = project, uid
        self.shown = printable(project)  # for root's log: the owner chose the name
        self._start, self._stopper, self._backoff = start, stop, backoff
        self.state, self.reason, self.pid, self.restarts = "starting", None, None, 0
        self.since = time.time()
        self.first = threading.Event()  # set once the first start has succeeded or failed
        self._ending = threading.Event()
        self._lock = threading.Lock()  # held while starting: an end waits for its agent
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"onlooker-keeper-{printable(Path(project).name)}")

    def begin(self) -> Keeper:
        self._thread.start()
        return self

    def view(self) -> dict[str, Any]:
        out = {"project": self.project, "uid": self.uid, "user": user_name(self.uid),
               "state": self.state, "reason": self.reason, "pid": self.pid,
               "restarts": self.restarts, "since": self.since}
        if self.state == "watching":
            out["tiers"] = agent_tiers(self.project, self.uid)
        return out

    def end(self, timeout: float = 600.0) -> bool:
        """Stop the agent (it commits first); True when one was running."""
        self._ending.set()
        with self._lock:
            try:
                stopped = self._stopper(Path(self.project), uid=self.uid, pid=self.pid,
                                        timeout=timeout)
            except lifecycle.NotInstrumented:
                stopped = False
        self._thread.join(timeout=5.0)
        self._set("stopped", None)
        return stopped

    def _set(self, state: str, reason: str | None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state, self.reason = state, reason

    def _loop(self) -> None:
        deaths: list[float] = []
        try:
            while not self._ending.is_set():
                problem = check_project(self.project, self.uid)
                if problem is not None:
                    self._set("missing", problem)
                    log.warning("not watching %s: %s", self.shown, printable(problem))
                    return
                reason, final = self._once()
                if reason is None:
                    if final:  # ended on purpose
                        return
                    continue  # took over from another agent: start again at once
                now = time.monotonic()
                deaths = [t for t in deaths if now - t < FAIL_WINDOW] + [now]
                if final or len(deaths) >= FAIL_AFTER:
                    self._set("failed", reason)
                    log.error("%s: the agent is not restarted: %s", self.shown, printable(reason))
                    return
                delay = self._backoff[min(len(deaths), len(self._backoff)) - 1]
                self._set("restarting", reason)
                self.first.set()
                log.warning("%s: %s; restarting in %.0f s", self.shown, printable(reason), delay)
                self._ending.wait(delay)
                self.restarts += 1
        finally:
            self.pid = None
            self.first.set()

    def _once(self) -> tuple[str | None, bool]:
        """Start (or adopt) the agent and wait for it to end: (why it ended, whether a
        restart is pointless); (None, True) when it was ended on purpose."""
        store = lifecycle.store_dir_of(Path(self.project))
        with self._lock:
            if self._ending.is_set():
                return None, True
            try:
                since = (store / lifecycle.LOG_NAME).stat().st_size
            except OSError:
                since = 0
            try:
                pid = self._start(Path(self.project))
            except lifecycle.AlreadyRunning as err:
                pid = err.pid
                if not is_projects_agent(pid, self.project, self.uid):
                    # Someone else's process named in the store: never signalled, adopted
                    # or waited on, or the owner could have root stop any agent.
                    return (f"{store} names pid {pid} as its agent, but that process is not "
                            f"this project's agent: remove {store / lifecycle.PID_NAME} if "
                            "no agent runs there"), False
                if proc_uid(pid) != 0:
                    # The owner's own (unprivileged) agent: the service takes over.
                    log.info("%s: stopping the agent pid %d to watch it as root",
                             self.shown, pid)
                    try:
                        self._stopper(Path(self.project), uid=self.uid, pid=pid,
                                      timeout=600.0)
                    except AgentError as stop_err:
                        return str(stop_err), False
                    return None, False
                log.info("%s: adopting the running agent pid %d", self.shown, pid)
            except (config.ConfigError, lifecycle.NotInstrumented) as err:
                return str(err), True  # the same again until someone changes the project
            except AgentError as err:
                return str(err), False
            self.pid = pid
            self._set("watching", None)
            self.first.set()
        code = self._wait(pid)
        self.pid = None
        if self._ending.is_set():
            return None, True
        return log_reason(self.project, self.uid, since) or _exit_words(code), False

    def _wait(self, pid: int) -> int | None:
        """Until agent `pid` ends (its exit code, when it was our child) or we end it."""
        while not self._ending.wait(0.2):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # adopted, or reaped by subprocess's own cleanup
                # An adopted agent's zombie may never be reaped (its parent is gone): it
                # counts as dead; so does its pid taken by someone else's process.
                if gone(pid) or proc_uid(pid) != 0:
                    return None
                continue
            if got == pid:
                return os.waitstatus_to_exitcode(status)
        return None
