"""What root may trust in a project its owner can change: the checks before each start,
the store files it reads (never through a link, never unbounded) and the processes it may
signal as the project's agent."""

from __future__ import annotations

import errno
import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

from onlooker.agent import config, lifecycle
from onlooker.agent.service.common import open_folder, printable
from onlooker.store import private

_LOG_WINDOW = 16384  # of agent.log read for the reason an agent died


# -- the project checks ----------------------------------------------------------------------


def check_project(path: str, uid: int) -> str | None:
    """Why the service must not run an agent on `path` for owner `uid` now, or None."""
    try:
        fd = open_folder(path)
    except FileNotFoundError:
        return f"the project folder {path} is gone"
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            return f"{path} is no longer a folder (a link or file is there now)"
        return f"cannot open {path}: {err.strerror}"
    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            return f"{path} now belongs to another user"
        # A path that reaches the folder through a link could be turned elsewhere.
        if os.readlink(f"/proc/self/fd/{fd}") != path:
            return f"{path} is reached through a symbolic link now"
        return _store_problem(path, fd)
    finally:
        os.close(fd)


# What root opens in a project's store before the agent runs: never through a link the
# owner planted (root appending to agent.log -> /etc/passwd).
_STORE_FILES = ("catalog.db", lifecycle.LOG_NAME, lifecycle.STATE_NAME, lifecycle.PID_NAME,
                config.CONFIG_NAME)


def _store_problem(path: str, fd: int) -> str | None:
    try:
        store = os.stat(config.STORE_DIR, dir_fd=fd, follow_symlinks=False)
        db = os.stat(f"{config.STORE_DIR}/catalog.db", dir_fd=fd, follow_symlinks=False)
    except OSError:
        store = db = None
    if store is None or db is None or not stat.S_ISDIR(store.st_mode):
        return f"{path} is not instrumented: run 'onlooker init' there first"
    for name in _STORE_FILES:
        try:
            st = os.stat(f"{config.STORE_DIR}/{name}", dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as err:
            return f"cannot look at {path}/{config.STORE_DIR}/{name}: {err.strerror}"
        if not stat.S_ISREG(st.st_mode):
            return (f"{path}/{config.STORE_DIR}/{name} is not a plain file: the service "
                    "follows no links in a project's store")
    return None


# -- what root reads in a store the owner can write ------------------------------------------


def _read_store_file(project: str, uid: int, name: str, *, tail: bool = False,
                     since: int = 0, limit: int = private.SMALL_MAX) -> bytes | None:
    """At most `limit` bytes of the plain file `name` in the project's store (with `tail`
    its last ones from `since` on), or None. No link is followed at the folder, the store
    or the file, the folder must still be `uid`'s, and the file is read as
    private.read_small reads what an owner can write."""
    try:
        pfd = open_folder(project)
    except OSError:
        return None
    try:
        st = os.fstat(pfd)
        if st.st_uid != uid:
            return None
        sfd = os.open(config.STORE_DIR, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY
                      | os.O_CLOEXEC, dir_fd=pfd)
    except OSError:
        return None
    finally:
        os.close(pfd)
    try:
        if os.fstat(sfd).st_uid not in (uid, os.geteuid()):
            return None
        return private.read_small(name, private.Owner(uid, st.st_gid), limit=limit,
                                  tail=tail, since=since, dir_fd=sfd)
    except OSError:
        return None
    finally:
        os.close(sfd)


def agent_tiers(project: str, uid: int) -> dict[str, Any]:
    """The tiers agent.json names."""
    data = _read_store_file(project, uid, lifecycle.STATE_NAME)
    try:
        tiers = json.loads(data).get("tiers") if data is not None else None
    except (ValueError, AttributeError):
        return {}
    if not isinstance(tiers, dict):
        return {}
    return {printable(str(k)): printable(str(v.get("name")))
            for k, v in tiers.items() if isinstance(v, dict)}


def log_reason(project: str, uid: int, since: int) -> str | None:
    """The last sentence the agent logged as an error since offset `since`."""
    data = _read_store_file(project, uid, lifecycle.LOG_NAME, tail=True, since=since,
                            limit=_LOG_WINDOW)
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace")
    for line in reversed(text.splitlines()):
        # "<time> ERROR <logger>: <message>", the daemon's format
        level = line.split(" ", 3)[2:3]
        if level in (["ERROR"], ["CRITICAL"]) and ": " in line:
            said = line.split(": ", 1)[1].strip()
            return printable(said.removeprefix(lifecycle.FAILED_MARK).strip())
    return None


# -- processes -------------------------------------------------------------------------------


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def gone(pid: int) -> bool:
    """Dead, or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return text[text.rfind(b")") + 2:text.rfind(b")") + 3] in (b"Z", b"X")


def is_projects_agent(pid: int, project: str, uid: int) -> bool:
    """May root signal `pid` as the agent of `project` (owner `uid`)? The pid comes from
    files the owner can write, so it must be an onlooker process that is the owner's own,
    or root's working in the project or holding a file of its store open: never another
    user's agent, nor any other process (the service itself among them)."""
    if pid == os.getpid():
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not any(b"onlooker" in arg for arg in argv):
        return False
    owner = proc_uid(pid)
    if owner == uid:
        return True
    if owner != 0:
        return False
    try:
        if os.readlink(f"/proc/{pid}/cwd") == project:
            return True
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    store = f"{project}/{config.STORE_DIR}/"
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(store):
                return True
        except OSError:
            continue
    return False


def store_pid(project: str, uid: int) -> int | None:
    """The agent's pid as the store names it (the pidfile, else agent.json while it starts)."""
    raw = _read_store_file(project, uid, lifecycle.PID_NAME, limit=64)
    try:
        pid = int(raw.split()[0]) if raw and raw.split() else None
    except ValueError:
        pid = None
    if pid is None:
        state = _read_store_file(project, uid, lifecycle.STATE_NAME)
        try:
            got = json.loads(state).get("pid") if state is not None else None
        except (ValueError, AttributeError):
            got = None
        pid = got if isinstance(got, int) else None
    return pid if pid is not None and pid > 0 else None
