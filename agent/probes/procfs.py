"""Cheap reads of /proc that answer None or [] for vanished processes instead of raising."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from onlooker.agent import clock
from onlooker.agent.errors import AgentError
from onlooker.agent.events import ProcInfo

log = logging.getLogger(__name__)

_PF_KTHREAD = 0x00200000  # task flag in /proc/<pid>/stat field 9
_O_ACCMODE = 0o3
_O_DIRECTORY = 0o200000
_DELETED = " (deleted)"
# Pseudo files that look like paths in /proc/<pid>/fd but are never inputs or outputs.
_SKIP_PREFIXES = ("/dev/", "/proc/", "/sys/", "/memfd:")
# Ancestor chains are short; the cap only guards against a loop on a racing reparent.
_MAX_ANCESTORS = 64
_HAS_CHILDREN: bool | None = None


class ProcfsError(AgentError):
    """/proc could not be read at all (not mounted, or hidden by hidepid)."""


def _read(path: str) -> bytes | None:
    """Whole file content, or None when it is gone or not permitted.

    os.open/os.read skip the buffered-file machinery; these run at 20+ Hz.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
        if len(data) < 4096:
            return data
        chunks = [data]
        while True:
            data = os.read(fd, 65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
    except OSError:
        # ESRCH/EIO when the process dies mid-read, EACCES for environ of others.
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str | None:
    try:
        target = os.readlink(path)
    except OSError:
        return None
    if target.endswith(_DELETED):
        target = target[: -len(_DELETED)]
    return target


def _stdio_target(pid: int, fd: int) -> str | None:
    """The regular file behind fd 1 or 2 (a redirected stdout), else None."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    # Terminals (/dev/pts/N), /dev/null, pipes ("pipe:[..]"), sockets and deleted
    # files are not logs anyone can read back.
    if not target.startswith("/") or target.endswith(_DELETED) \
            or target.startswith(_SKIP_PREFIXES):
        return None
    return target


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat split after the comm field; index 0 is field 3 (state)."""
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    # comm may hold spaces and parens, so the fixed fields start after the *last* ')'.
    cut = data.rfind(b")")
    if cut < 0:
        return None
    return data[cut + 2 :].split()


def stat_brief(pid: int) -> tuple[str, int, int] | None:
    """(state letter, ppid, start ticks) from one read of /proc/<pid>/stat, None if gone."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return fields[0].decode("ascii", "replace"), int(fields[1]), int(fields[19])
    except ValueError:
        return None


def _split_nul(data: bytes) -> tuple[str, ...]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return tuple(os.fsdecode(p) for p in parts)


def _environ(pid: int) -> tuple[tuple[str, str], ...]:
    data = _read(f"/proc/{pid}/environ")
    if not data:
        return ()
    pairs = []
    for item in data.split(b"\0"):
        if not item:
            continue
        key, sep, value = item.partition(b"=")
        if sep:
            pairs.append((os.fsdecode(key), os.fsdecode(value)))
    return tuple(pairs)


def _status_ids(pid: int) -> tuple[int | None, int | None]:
    """(tgid, real uid) from /proc/<pid>/status."""
    data = _read(f"/proc/{pid}/status")
    if not data:
        return None, None
    tgid = uid = None
    for line in data.split(b"\n"):
        if line.startswith(b"Tgid:"):
            tgid = int(line.split()[1])
        elif line.startswith(b"Uid:"):
            uid = int(line.split()[1])
            break  # Uid comes after Tgid; nothing further is needed
    return tgid, uid


def ancestors(ppid: int) -> tuple[int, ...]:
    """The chain ppid, its parent, ... up to and including pid 1 (nearest first)."""
    chain: list[int] = []
    pid = ppid
    while pid > 0 and len(chain) < _MAX_ANCESTORS:
        chain.append(pid)
        if pid == 1:
            break
        brief = stat_brief(pid)
        if brief is None:
            break
        pid = brief[1]
    return tuple(chain)


def read_info(pid: int, *, with_environ: bool = True) -> ProcInfo | None:
    """What /proc says about process `pid` now.

    None when it vanished, is a kernel thread, or is a thread rather than a
    process. A zombie yields a ProcInfo with argv=() and cwd/exe None.
    """
    # argv, exe and cwd first: a short-lived process may be gone a moment later.
    cmdline = _read(f"/proc/{pid}/cmdline")
    if cmdline is None:
        return None
    exe = _readlink(f"/proc/{pid}/exe")
    cwd = _readlink(f"/proc/{pid}/cwd")
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        ppid = int(fields[1])
        flags = int(fields[6])
        start_ticks = int(fields[19])
    except ValueError:
        return None
    if flags & _PF_KTHREAD or (not cmdline and (pid == 2 or ppid == 2)):
        return None
    tgid, uid = _status_ids(pid)
    if tgid is not None and tgid != pid:
        return None  # a thread; tgid None means it just ended, and what we read stands
    info = ProcInfo(
        pid=pid,
        ppid=ppid,
        argv=_split_nul(cmdline),
        cwd=cwd,
        exe=exe,
        uid=uid,
        start_ticks=start_ticks,
        started=clock.ticks_to_clock(start_ticks),
        environ=_environ(pid) if with_environ else (),
        ancestors=ancestors(ppid),
        stdio=(_stdio_target(pid, 1), _stdio_target(pid, 2)),
    )
    # A recycled pid between the first read and now would mix two processes.
    again = stat_brief(pid)
    if again is not None and again[2] != start_ticks:
        return None
    return info


def exe_and_argv(pid: int) -> tuple[str | None, tuple[str, ...]] | None:
    """The current exe and argv only (cheap check for an exec in place), None if gone."""
    cmdline = _read(f"/proc/{pid}/cmdline")
    if cmdline is None:
        return None
    return _readlink(f"/proc/{pid}/exe"), _split_nul(cmdline)


def alive_pid(pid: int) -> bool:
    """Whether some process (not a zombie) has this pid now."""
    brief = stat_brief(pid) if isinstance(pid, int) and pid > 0 else None
    return brief is not None and brief[0] not in ("Z", "X")


def alive(pid: int, start_ticks: int) -> bool:
    """True while the process (pid, start_ticks) runs; a zombie counts as ended."""
    brief = stat_brief(pid)
    return brief is not None and brief[2] == start_ticks and brief[0] not in ("Z", "X")


def list_pids() -> list[int]:
    """The pids of all processes (not threads) visible in /proc."""
    try:
        names = os.listdir("/proc")
    except OSError as err:
        raise ProcfsError(f"cannot list /proc: {err.strerror}") from err
    return [int(n) for n in names if n.isdigit()]


def _has_children_files() -> bool:
    """Whether the kernel has CONFIG_PROC_CHILDREN (asked once, then cached)."""
    global _HAS_CHILDREN
    if _HAS_CHILDREN is None:
        me = os.getpid()
        _HAS_CHILDREN = os.path.exists(f"/proc/{me}/task/{me}/children")
    return _HAS_CHILDREN


def open_loadavg() -> int | None:
    """/proc/loadavg kept open for `fork_counters(fd)`, or None where it cannot be."""
    try:
        return os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def fork_counters(fd: int | None = None) -> tuple[bytes, bytes] | None:
    """(tasks in the system, last pid allocated) from /proc/loadavg, or None.

    Both stay the same between two calls only if no task was created (the last
    pid moves) and none was reaped (the count drops): a poller can then skip
    listing /proc. One small read instead of a directory walk; with `fd` (from
    `open_loadavg`) one pread, which the kernel answers afresh each time: a poller
    calls this 20 times a second, and the open and close cost it more than the read.
    """
    if fd is not None:
        try:
            data = os.pread(fd, 256, 0)
        except OSError:
            data = _read("/proc/loadavg")
    else:
        data = _read("/proc/loadavg")
    if not data:
        return None
    fields = data.split()
    if len(fields) < 5:
        return None
    return fields[3].partition(b"/")[2], fields[4]


def _children(pid: int) -> list[int]:
    """Children from /proc/<pid>/task/*/children; [] when it is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/children")
        if data:
            found.extend(int(c) for c in data.split())
    return found


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (children first, breadth-first); [] if it is gone."""
    if not _has_children_files():
        return _descendants_by_scan(pid)
    first = _children(pid)
    out: list[int] = []
    queue = first
    seen = {pid}
    while queue:
        nxt: list[int] = []
        for child in queue:
            if child in seen:
                continue
            seen.add(child)
            out.append(child)
            nxt.extend(_children(child))
        queue = nxt
    return out


def _descendants_by_scan(pid: int) -> list[int]:
    by_parent: dict[int, list[int]] = {}
    for p in list_pids():
        brief = stat_brief(p)
        if brief is not None:
            by_parent.setdefault(brief[1], []).append(p)
    out: list[int] = []
    queue = [pid]
    seen = {pid}
    while queue:
        nxt: list[int] = []
        for parent in queue:
            for child in by_parent.get(parent, ()):
                if child not in seen:
                    seen.add(child)
                    out.append(child)
                    nxt.append(child)
        queue = nxt
    return out


def _fd_flags(pid: int, fd: str) -> int | None:
    data = _read(f"/proc/{pid}/fdinfo/{fd}")
    if not data:
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"flags:"):
            return int(line.split()[1], 8)
    return None


def open_files(
    pid: int, *, keep: Callable[[str], bool] | None = None
) -> list[tuple[str, bool]]:
    """(path, writable) for the regular files `pid` holds open, [] if it is gone.

    Skips sockets, pipes, anonymous inodes, devices, deleted files and
    directories. `keep`, when given, filters paths before their fdinfo is read
    (saves a read per uninteresting fd).
    """
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return []
    out: list[tuple[str, bool]] = []
    seen: set[tuple[str, bool]] = set()
    for fd in fds:
        try:
            target = os.readlink(f"{base}/{fd}")
        except OSError:
            continue  # closed since the listing
        # Sockets, pipes and anon inodes read "socket:[..]", "pipe:[..]", "anon_inode:..".
        if not target.startswith("/") or target.endswith(_DELETED):
            continue
        if target.startswith(_SKIP_PREFIXES):
            continue
        if keep is not None and not keep(target):
            continue
        flags = _fd_flags(pid, fd)
        if flags is None or flags & _O_DIRECTORY:
            continue
        item = (target, (flags & _O_ACCMODE) != os.O_RDONLY)
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def decode_wait_status(status: int) -> tuple[int | None, int | None]:
    """A wait(2) status -> (exit_code, None) or (None, signal)."""
    sig = status & 0x7F
    if sig:
        return None, sig
    return (status >> 8) & 0xFF, None


def zombie_exit(pid: int) -> tuple[int | None, int | None] | None:
    """(exit_code, signal) of a zombie from /proc/<pid>/stat field 52; None if not a zombie."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 50 or fields[0] != b"Z":
        return None
    try:
        return decode_wait_status(int(fields[49]))
    except ValueError:
        return None
