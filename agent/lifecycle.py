"""The agent's lifecycle from outside: its pidfile, starting, stopping and its status."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onlooker.agent import config
from onlooker.agent.errors import AgentError
from onlooker.agent.service.common import printable
from onlooker.store import private
from onlooker.store.private import Owner, open_private

log = logging.getLogger(__name__)

PID_NAME = "agent.pid"
STATE_NAME = "agent.json"
LOG_NAME = "agent.log"
# Marks the one sentence an agent that cannot start logs (an AgentError's message).
FAILED_MARK = "cannot start: "

START_TIMEOUT = 60.0
_START_POLL = 0.05
_STOP_POLL = 0.05
_PROGRESS_EVERY = 0.5
# agent.json is rewritten about once a second; older than this means the agent is stuck.
_STALE_AFTER = 10.0
_LOG_TAIL_LINES = 15
_LOG_WINDOW = 16384  # of agent.log read for its last lines
_PID_MAX = 64  # bytes of a pidfile: "12345\n"; more is not a pidfile

# Store dirs whose pidfile this process holds: a pidfile naming our own pid is live
# only if we really took it (and not left by a dead process whose pid we reused).
_held: set[str] = set()


class LifecycleError(AgentError):
    """The agent cannot be started, stopped or inspected; the message is one sentence."""


class NotInstrumented(LifecycleError):
    def __init__(self, project: Path) -> None:
        super().__init__(f"{project} is not instrumented: run 'onlooker init' there first")
        self.project = project


class AlreadyRunning(LifecycleError):
    def __init__(self, pid: int) -> None:
        super().__init__(f"the agent is already running (pid {pid})")
        self.pid = pid


class AgentFailed(LifecycleError):
    """The agent exited (or never got to watching) while being started."""


class StopTimeout(LifecycleError):
    """The agent did not exit within the time `stop` was given."""


def store_dir_of(project: Path) -> Path:
    return Path(project) / config.STORE_DIR


# -- pidfile ---------------------------------------------------------------------------------


def _owner_of(store_dir: Path) -> Owner:
    return Owner.of(Path(store_dir).parent)


def _read_pid(path: Path) -> int | None:
    # The owner can write the store: what root reads there is read as private.read_small
    # reads (never a link, a FIFO or /dev/zero, never unbounded).
    try:
        text = private.read_small(path, _owner_of(path.parent), limit=_PID_MAX).decode(
            "ascii", errors="replace").strip()
    except OSError:
        return None
    try:
        pid = int(text.split()[0]) if text else 0
    except ValueError:
        return None
    return pid if pid > 0 else None


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie child of ours is reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    # The state letter follows the last ')' (the comm may itself hold parentheses).
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    if state in (b"Z", b"X"):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _is_agent(pid: int, store_dir: Path) -> bool:
    """Is `pid` alive and an onlooker agent (not a stranger that reused the pid)?"""
    if pid == os.getpid():
        return str(store_dir.resolve()) in _held
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if any(b"onlooker.agent" in arg for arg in argv):
        return True
    # `onlooker watch` (or `python -m onlooker.cli.main watch`) runs the agent in the CLI.
    names = [os.path.basename(arg) for arg in argv]
    return b"watch" in argv and any(
        name == b"onlooker" or name.startswith(b"onlooker.cli") for name in names
    )


@contextmanager
def acquire_pidfile(store_dir: Path) -> Iterator[int]:
    """Hold `<store_dir>/agent.pid` for the life of the block; yields our pid.

    Raises AlreadyRunning when a live agent holds it; a stale one is replaced.
    """
    store_dir = Path(store_dir)
    path = store_dir / PID_NAME
    pid = os.getpid()
    # Write the pid to a private file first, then link it into place: link() fails if
    # the name exists, like O_EXCL, and no one ever sees an empty pidfile.
    tmp = store_dir / f".{PID_NAME}.{pid}.{threading.get_ident()}"
    tmp.unlink(missing_ok=True)  # left by a dead process that had our pid
    # The project owner's, 0600, as all of the store (store/private.py).
    fd = open_private(tmp, os.O_EXCL | os.O_WRONLY, Owner.of(store_dir.parent))
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)
    try:
        for _ in range(5):
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                other = _read_pid(path)
                if other is not None and _is_agent(other, store_dir):
                    raise AlreadyRunning(other) from None
                log.warning("replacing stale pidfile %s (pid %s is not a live agent)", path, other)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
        else:
            raise LifecycleError(f"cannot take the pidfile {path}: it keeps being recreated")
    finally:
        tmp.unlink(missing_ok=True)
    key = str(store_dir.resolve())
    _held.add(key)
    try:
        yield pid
    finally:
        _held.discard(key)
        # Remove it only if it is still ours (never another agent's).
        if _read_pid(path) == pid:
            try:
                path.unlink()
            except OSError as err:
                log.warning("cannot remove pidfile %s: %s", path, err)


def running_pid(store_dir: Path) -> int | None:
    """The pid of the live agent holding the pidfile in `store_dir`, or None."""
    store_dir = Path(store_dir)
    pid = _read_pid(store_dir / PID_NAME)
    if pid is not None and _is_agent(pid, store_dir):
        return pid
    return None


def read_state(store_dir: Path) -> dict[str, Any]:
    """agent.json as last written, or {} when missing or unreadable."""
    store_dir = Path(store_dir)
    try:
        data = json.loads(private.read_small(store_dir / STATE_NAME, _owner_of(store_dir))
                          .decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _live_pid(store_dir: Path) -> int | None:
    """The live agent's pid, also while it starts (agent.json written, no pidfile yet)."""
    pid = running_pid(store_dir)
    if pid is not None:
        return pid
    state_pid = read_state(store_dir).get("pid")
    if isinstance(state_pid, int) and state_pid > 0 and _is_agent(state_pid, store_dir):
        return state_pid
    return None


# -- start / stop ----------------------------------------------------------------------------


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES, since: int = 0) -> str:
    """The last lines of agent.log (from offset `since` on)."""
    try:
        data = private.read_small(path, _owner_of(path.parent), limit=_LOG_WINDOW,
                                  tail=True, since=since)
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").rstrip().splitlines()[-lines:])


def _check_store(project: Path, store_dir: Path) -> None:
    """Root acting for the project's owner uses no store folder that is a link or a third
    user's: the owner could otherwise have it make files in any folder. Checked at each
    start, stop and status, and by the agent every 2 s (daemon.Agent._project_gone)."""
    problem = private.store_folder_problem(store_dir, Owner.of(project))
    if problem is not None:
        raise LifecycleError(problem)


def _open_log(project: Path, store_dir: Path) -> int:
    owner = Owner.of(project)
    if not private.acting_for(owner):
        return open_private(store_dir / LOG_NAME, os.O_WRONLY | os.O_APPEND, owner)
    # Through the store folder's fd, checked once taken: `.onlooker` swapped for a link
    # since _check_store cannot have root make agent.log in another folder.
    sfd = os.open(store_dir, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if os.fstat(sfd).st_uid not in (owner.uid, os.geteuid()):
            raise OSError(errno.EPERM, "the store folder is not the owner's")
        return open_private(f"/proc/self/fd/{sfd}/{LOG_NAME}", os.O_WRONLY | os.O_APPEND,
                            owner)
    finally:
        os.close(sfd)


def start(project: Path, *, timeout: float = START_TIMEOUT) -> int:
    """Start the agent for `project` in the background; return its pid once it watches."""
    project = Path(project).resolve()
    store_dir = store_dir_of(project)
    if not store_dir.is_dir():
        raise NotInstrumented(project)
    _check_store(project, store_dir)
    config.load(project)  # a bad config fails here, in one sentence, not in agent.log
    pid = _live_pid(store_dir)
    if pid is not None:
        raise AlreadyRunning(pid)
    log_path = store_dir / LOG_NAME
    # The owner's and 0600 even when root starts it: the owner must be able to read and
    # remove it, and nobody else to read it.
    try:
        log_fd = _open_log(project, store_dir)
    except OSError as err:  # ELOOP: a link there is never followed (store/private.py)
        raise LifecycleError(f"cannot open the agent's log {log_path}: "
                             f"{os.strerror(err.errno) if err.errno else err}") from err
    with os.fdopen(log_fd, "ab") as log_file:
        log_file.write(f"--- onlooker agent starting {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                       .encode())
        log_file.flush()
        log_start = log_file.tell()
        child = subprocess.Popen(
            [sys.executable, "-m", "onlooker.agent.daemon", str(project)],
            cwd=project, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            close_fds=True, start_new_session=True,
        )
    # printable: this is root's log when the service starts it, and the owner named it
    log.info("agent spawned (pid %d) for %s", child.pid, printable(str(project)))
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(store_dir)
        if state.get("pid") == child.pid and state.get("state") == "watching":
            return child.pid
        code = child.poll()
        if code is not None:
            other = _live_pid(store_dir)
            if other is not None and other != child.pid:
                raise AlreadyRunning(other)
            tail = _agent_output(log_path, log_start)
            said = _sentence_in(tail)
            if said:
                raise AgentFailed(f"{said.rstrip('.')} (the agent did not start; see {log_path})")
            raise AgentFailed(f"the agent exited with status {code} before it was watching"
                              + (f"; its last words:\n{tail}" if tail else f"; see {log_path}"))
        if time.monotonic() > deadline:
            raise AgentFailed(
                f"the agent (pid {child.pid}) is not watching after {timeout:.0f} s; it is still "
                f"running: see 'onlooker status' and {log_path}"
            )
        time.sleep(_START_POLL)


def _sentence_in(tail: str) -> str | None:
    """The sentence an agent that could not start logged (after FAILED_MARK), if any."""
    said = [ln.split(FAILED_MARK, 1)[1] for ln in tail.splitlines() if FAILED_MARK in ln]
    return said[-1].strip() if said else None


def _agent_output(log_path: Path, since: int) -> str:
    """The last lines this start's agent wrote to agent.log."""
    return _log_tail(log_path, since=since)


def stop(
    project: Path,
    *,
    timeout: float = 600.0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> bool:
    """SIGTERM the agent and wait until it exits (after committing what it saw).

    Returns False when no agent was running. `progress(agent_json)` is called about
    every half second while waiting. Raises StopTimeout after `timeout` seconds.
    """
    project = Path(project).resolve()
    store_dir = store_dir_of(project)
    if not store_dir.is_dir():
        raise NotInstrumented(project)
    _check_store(project, store_dir)
    pid = _live_pid(store_dir)
    if pid is None:
        return False
    if pid == os.getpid():
        raise LifecycleError("the agent runs in this very process; stop it with its stop event")
    try:
        _signal_agent(pid, project)
    except ProcessLookupError:
        return True
    except PermissionError as err:
        raise LifecycleError(
            f"not allowed to stop the agent (pid {pid}): it belongs to another user"
        ) from err
    log.info("sent SIGTERM to agent pid %d", pid)
    deadline = time.monotonic() + timeout
    next_progress = time.monotonic() + _PROGRESS_EVERY
    while _alive(pid):
        now = time.monotonic()
        if now > deadline:
            raise StopTimeout(
                f"the agent (pid {pid}) is still committing after {timeout:.0f} s; run "
                f"'onlooker stop' again to keep waiting"
            )
        if progress is not None and now >= next_progress:
            next_progress = now + _PROGRESS_EVERY
            progress(read_state(store_dir))
        time.sleep(_STOP_POLL)
    return True


def _signal_agent(pid: int, project: Path) -> None:
    """SIGTERM `pid`, the agent the store names. Root acting for the project's owner (`sudo
    onlooker stop` in their project) signals it only if it is this project's agent, the
    check the service makes (service/guard.py), through a pidfd: the owner writes the
    pidfile, and could otherwise name any onlooker process, another user's among them."""
    if os.geteuid() != 0 or not private.acting_for(Owner.of(project)):
        os.kill(pid, signal.SIGTERM)
        return
    # guard imports this module: imported here, on root's stop only
    from onlooker.agent.service.guard import is_projects_agent

    try:
        pidfd = os.pidfd_open(pid)
    except OSError as err:
        if err.errno != errno.ENOSYS:  # ESRCH: gone already; EINVAL: not a process
            raise ProcessLookupError(pid) from err
        pidfd = None  # a kernel without pidfds (before 5.3)
    try:
        if not is_projects_agent(pid, str(project), Owner.of(project).uid):
            raise LifecycleError(
                f"pid {pid}, which {store_dir_of(project) / PID_NAME} names, is not this "
                "project's agent: it was not signalled (remove the pidfile if no agent runs)")
        if pidfd is None:
            os.kill(pid, signal.SIGTERM)
        else:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def status(project: Path) -> dict[str, Any]:
    """What agent.json says, corrected by whether the agent is really alive."""
    project = Path(project).resolve()
    store_dir = store_dir_of(project)
    if not store_dir.is_dir():
        raise NotInstrumented(project)
    _check_store(project, store_dir)
    state = read_state(store_dir)
    pid = _live_pid(store_dir)
    now = time.time()
    updated = state.get("updated_at")
    started = state.get("started_at")
    same_agent = pid is not None and state.get("pid") == pid
    out: dict[str, Any] = {
        "project": str(project),
        "running": pid is not None,
        "pid": pid,
        "state": state.get("state", "unknown") if same_agent else (
            "starting" if pid is not None else "not running"),
        "started_at": started if same_agent else None,
        "uptime": round(now - started, 1) if same_agent and _num(started) else None,
        "updated_at": updated if _num(updated) else None,
        # Seconds since the agent last wrote agent.json: a live agent writes each second.
        "last_seen": round(now - updated, 1) if _num(updated) else None,
        "responsive": None,
        # When not running: the last state it wrote ("stopped" after a clean stop).
        "last_state": None if same_agent else state.get("state"),
        "tiers": state.get("tiers", {}) if same_agent else {},
        "counts": state.get("counts", {}) if same_agent else {},
        "backlog": state.get("backlog", {}) if same_agent else {},
        "bulk": state.get("bulk", {}) if same_agent else {},
        "log": str(store_dir / LOG_NAME),
    }
    if same_agent and out["last_seen"] is not None:
        out["responsive"] = out["last_seen"] < _STALE_AFTER
    return out


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
