"""The root supervisor: the registry of projects, a keeper per project, and the answers to
requests that arrive on the unix socket (one JSON line each way; the caller known by
SO_PEERCRED)."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onlooker.agent import lifecycle
from onlooker.agent.service.common import (
    DEFAULT_SOCKET,
    DEFAULT_STATE,
    ServiceError,
    need_root,
    open_folder,
    printable,
    write_atomic,
)
from onlooker.agent.service.guard import check_project, user_name
from onlooker.agent.service.keeper import Keeper

log = logging.getLogger(__name__)

REGISTRY_NAME = "projects.json"
MAX_REQUEST = 64 * 1024
MAX_PER_USER = 64  # each project is a root agent: a user may not start thousands
MAX_CONNECTIONS = 32  # answered at once; more wait in the listen backlog
# Of those, one user's (root's are not counted): one user holding every slot open would
# leave the others no service.
MAX_CONNECTIONS_PER_USER = 4
_PEERCRED = struct.Struct("3i")


class Registry:
    """{project path: {"uid", "registered_at"}} in a root-only file, written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / REGISTRY_NAME
        self.projects: dict[str, dict[str, Any]] = {}

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            projects = data["projects"]
            self.projects = {str(k): {"uid": int(v["uid"]),
                                      "registered_at": float(v.get("registered_at", 0))}
                             for k, v in projects.items()}
        except FileNotFoundError:
            self.projects = {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self.path.with_suffix(".json.bad")
            log.error("%s cannot be read (%s); kept as %s, starting with no projects",
                      self.path, err, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            self.projects = {}

    def save(self) -> None:
        data = json.dumps({"version": 1, "projects": self.projects}, indent=1, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, data.encode(), 0o600)


# -- the supervisor --------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def _refuse(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}


def _only_root_changes(folder: Path) -> None:
    """Root chmods the socket, truncates its locks and replaces the registry by name: in
    a folder where another user could swap those names (not root's, or writable by others
    without the sticky bit), that would be done to a file of their choosing."""
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise ServiceError(f"{folder} is not a folder (a link or file is there)")
    if st.st_uid != os.geteuid() or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
        raise ServiceError(f"{folder} can be changed by users other than root: the service "
                           "keeps its socket and state only where root alone can")


class Service:
    """The registry, the keepers and the answers to requests (socket-free: `handle`)."""

    def __init__(self, socket_path: Path, state_dir: Path, *,
                 keeper: Callable[[str, int], Keeper] = Keeper) -> None:
        self.socket_path = Path(socket_path)
        self.state_dir = Path(state_dir)
        self.registry = Registry(self.state_dir)
        self.keepers: dict[str, Keeper] = {}
        self._new_keeper = keeper
        self._lock = threading.Lock()
        self._locks: list[int] = []
        self._listener: socket.socket | None = None
        self._socket_id: tuple[int, int] | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open_by_uid: dict[int, int] = {}
        self._open_lock = threading.Lock()

    # -- requests -----------------------------------------------------------------

    def handle(self, peer: Peer, request: Any, fds: list[int]) -> dict[str, Any]:
        if not isinstance(request, dict):
            return _refuse("a request is one JSON object")
        op = request.get("op")
        if op == "list":
            with self._lock:
                mine = [k for k in self.keepers.values() if peer.uid in (0, k.uid)]
            rows = [k.view() for k in mine]  # reads agent.json: never under the lock
            return {"ok": True, "pid": os.getpid(), "projects": rows}
        project = request.get("project")
        if not isinstance(project, str) or not project.startswith("/"):
            return _refuse("a request names its project by an absolute path")
        if op == "register":
            return self._register(peer, project, fds, wait=request.get("wait") is True)
        if op == "unregister":
            return self._unregister(peer, project)
        return _refuse(f"unknown request {op!r}: the service knows register, unregister, list")

    def _register(self, peer: Peer, asked: str, fds: list[int], *, wait: bool) -> dict[str, Any]:
        if len(fds) != 1:
            return _refuse("a register request carries the project folder's open file "
                           "descriptor: use 'onlooker service register'")
        try:
            st = os.fstat(fds[0])
            path = os.readlink(f"/proc/self/fd/{fds[0]}")
        except OSError as err:
            return _refuse(f"cannot look at the folder sent: {err.strerror}")
        if not stat.S_ISDIR(st.st_mode):
            return _refuse(f"{asked} is not a folder")
        if not path.startswith("/") or path.endswith(" (deleted)"):
            return _refuse(f"{asked} was deleted")
        # The folder sent must be what its path names now, to root too.
        try:
            fd = open_folder(path)
            now = os.fstat(fd)
            os.close(fd)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return _refuse(f"{asked} changed while it was being registered")
        if peer.uid not in (0, st.st_uid):
            return _refuse(f"{path} belongs to another user: only its owner can register it")
        problem = check_project(path, st.st_uid)
        if problem is not None:
            return _refuse(problem)
        with self._lock:
            stale = self.keepers.get(path)
            if stale is not None and stale.uid != st.st_uid:
                # The folder changed hands: its agent works (and gives the store) for
                # the former owner, so it is stopped, not returned, and replaced below.
                del self.keepers[path]
            else:
                stale = None
        if stale is not None:
            log.info("%s now belongs to %s, no longer to %s: its agent is replaced",
                     printable(path), user_name(st.st_uid), user_name(stale.uid))
            stale.end()
        with self._lock:
            old = self.keepers.get(path)
            already = old is not None and old.state not in ("failed", "missing", "stopped")
            if not already:
                mine = sum(1 for k in self.keepers.values() if k.uid == st.st_uid)
                if old is None and mine >= MAX_PER_USER:
                    return _refuse(f"{user_name(st.st_uid)} already has {mine} projects "
                                   "registered, the most the service runs for one user")
                self.registry.projects[path] = {"uid": st.st_uid, "registered_at": time.time()}
                try:
                    self.registry.save()
                except OSError as err:
                    self.registry.projects.pop(path, None)
                    return _refuse(f"cannot save the registry {self.registry.path}: "
                                   f"{err.strerror}")
                self.keepers[path] = keeper = self._new_keeper(path, st.st_uid).begin()
                log.info("registered %s for %s (by pid %d, uid %d)", printable(path),
                         user_name(st.st_uid), peer.pid, peer.uid)
            else:
                keeper = old  # type: ignore[assignment]
        if wait:
            keeper.first.wait(lifecycle.START_TIMEOUT + 10)
        return {"ok": True, "already": already, **keeper.view()}

    def _unregister(self, peer: Peer, project: str) -> dict[str, Any]:
        with self._lock:
            keeper = self.keepers.get(project)
            if keeper is None or peer.uid not in (0, keeper.uid):
                # the same words whether it is someone else's or no one's: nothing leaks
                return _refuse(f"{project} is not one of your registered projects")
            entry = self.registry.projects.pop(project, None)
            try:
                self.registry.save()
            except OSError as err:
                if entry is not None:
                    self.registry.projects[project] = entry
                return _refuse(f"cannot save the registry {self.registry.path}: "
                               f"{err.strerror}")
            del self.keepers[project]
        log.info("unregistered %s (by pid %d, uid %d)", printable(project), peer.pid,
                 peer.uid)
        stopped = keeper.end()
        return {"ok": True, "project": project, "stopped": stopped}

    # -- start, serve, stop ---------------------------------------------------------

    def _lock_file(self, path: Path, what: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            os.close(fd)  # never truncated: it could be a link to a file of root's
            raise ServiceError(f"{path} is not the service's own lock file: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise ServiceError(f"another onlooker service (pid {other or '?'}) already "
                               f"{what}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._locks.append(fd)

    def claim(self) -> None:
        """Take the socket and the state folder, or say in one sentence who has them."""
        folder = self.socket_path.parent
        if not folder.is_dir():
            folder.mkdir(parents=True, mode=0o755)
            folder.chmod(0o755)  # any user reaches the socket, whatever the umask
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _only_root_changes(folder)
        _only_root_changes(self.state_dir)
        self._lock_file(folder / f".{self.socket_path.name}.lock",
                        f"listens on {self.socket_path}")
        self._lock_file(self.state_dir / "service.lock", f"keeps {self.state_dir}")
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise ServiceError(f"{self.socket_path} exists and is not a socket")
            self.socket_path.unlink()  # left by a service that died: the lock is ours
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o666)  # who may do what is decided per request
        listener.listen(64)
        listener.settimeout(0.5)
        st = os.lstat(self.socket_path)
        self._socket_id = (st.st_dev, st.st_ino)
        self._listener = listener

    def relaunch(self) -> None:
        """Agents for the projects registered before, where they still are."""
        self.registry.load()
        with self._lock:
            for path, entry in sorted(self.registry.projects.items()):
                self.keepers[path] = self._new_keeper(path, entry["uid"]).begin()
        log.info("%d projects registered", len(self.keepers))

    def serve(self, stop: threading.Event) -> None:
        assert self._listener is not None
        log.info("onlooker service listening on %s", self.socket_path)
        while not stop.is_set():
            # a thread per connection, but never more than MAX_CONNECTIONS of them
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                self._slots.release()
                continue
            except OSError as err:
                self._slots.release()
                if err.errno in (errno.EINTR, errno.ECONNABORTED, errno.EMFILE, errno.ENFILE):
                    stop.wait(0.1)
                    continue
                raise
            peer = self._admit(conn)
            if peer is None:
                self._slots.release()
                continue
            threading.Thread(target=self._connection, args=(conn, peer), daemon=True,
                             name="onlooker-service-conn").start()

    def _admit(self, conn: socket.socket) -> Peer | None:
        """The caller, counted against its user's connections; None (the connection
        answered no and closed) when it has as many open as one user may."""
        try:
            peer = Peer(*_PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)))
        except OSError:
            conn.close()
            return None
        with self._open_lock:
            held = self._open_by_uid.get(peer.uid, 0)
            if peer.uid == 0 or held < MAX_CONNECTIONS_PER_USER:
                self._open_by_uid[peer.uid] = held + 1
                return peer
        reply = _refuse(f"{user_name(peer.uid)} already has {held} requests open at the "
                        "onlooker service, the most one user may have at once: try again "
                        "when they have been answered")
        try:
            conn.setblocking(False)  # a caller that reads nothing cannot hold this loop
            conn.send((json.dumps(reply) + "\n").encode())
        except OSError:
            pass
        conn.close()
        return None

    def _connection(self, conn: socket.socket, peer: Peer) -> None:
        fds: list[int] = []
        try:
            conn.settimeout(10.0)
            deadline = time.monotonic() + 10.0  # a request trickled byte by byte ends too
            data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 1)
            while b"\n" not in data and len(data) < MAX_REQUEST:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the request took longer than 10 s to arrive")
                conn.settimeout(left)
                more = conn.recv(MAX_REQUEST)
                if not more:
                    break
                data += more
            if len(data) >= MAX_REQUEST and b"\n" not in data:
                reply = _refuse(f"a request is one line of at most {MAX_REQUEST} bytes")
            else:
                try:
                    request = json.loads(data.split(b"\n", 1)[0])
                except ValueError:
                    reply = _refuse("a request is one line of JSON")
                else:
                    reply = self.handle(peer, request, fds)
            conn.sendall((json.dumps(reply) + "\n").encode())
        except OSError as err:
            log.info("a connection ended early: %s", err)
        except Exception:  # one bad request must not take the service down
            log.exception("could not answer a request")
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
            with self._open_lock:
                left = self._open_by_uid.get(peer.uid, 1) - 1
                if left > 0:
                    self._open_by_uid[peer.uid] = left
                else:
                    self._open_by_uid.pop(peer.uid, None)
            self._slots.release()

    def shutdown(self) -> None:
        """Stop every agent (each commits first), then give up the socket and the locks."""
        if self._listener is not None:
            self._listener.close()
            try:
                st = os.lstat(self.socket_path)
                if (st.st_dev, st.st_ino) == self._socket_id:
                    self.socket_path.unlink()
            except OSError:
                pass
        with self._lock:
            keepers = list(self.keepers.values())
        ends = [threading.Thread(target=k.end, daemon=True) for k in keepers]
        for t in ends:
            t.start()
        for t in ends:
            t.join()
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()


def run_service(socket_path: Path = DEFAULT_SOCKET, state_dir: Path = DEFAULT_STATE, *,
        stop: threading.Event | None = None) -> None:
    """Be the service until SIGTERM/SIGINT (or `stop`)."""
    need_root("the onlooker service")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _s, _f: stop.set())
    svc = Service(socket_path, state_dir)
    try:
        svc.claim()
    except BaseException:
        svc.shutdown()
        raise
    try:
        svc.relaunch()
        svc.serve(stop)
    finally:
        log.info("onlooker service stopping: its agents commit what they saw")
        svc.shutdown()

