"""Process exec/fork/exit events from the netlink proc connector (the precise process tier).

Timestamps: the kernel stamps each event with CLOCK_MONOTONIC nanoseconds, while
the agent clock is CLOCK_BOOTTIME. A fork keeps the kernel's stamp (moved onto the
agent clock), so that a pid reused before /proc was read can be told apart; exec and
exit are stamped with `clock.now()` when received, microseconds later unless the
agent falls behind.

Loss: the kernel reports a full receive buffer as ENOBUFS, but drops an event
silently when it cannot allocate the message. Each event carries a per-CPU sequence
number, consecutive over all events sent to listeners, so a gap is a loss too; both
are reported as an Overflow, and the source then lists /proc: a process it never heard
of is reported as exec'd now, one it knew that is gone as ended (exit code unknown).
An exec in place, or a pid that ended and was reused, during the loss stays unseen.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import queue
import random
import socket
import struct
import threading
import time
from collections.abc import Collection

from onlooker.agent import clock
from onlooker.agent.errors import AgentError
from onlooker.agent.events import Overflow, ProcExec, ProcExit, ProcFork, ProcInfo
from onlooker.agent.probes import procfs
from onlooker.agent.sources.reader import pid_set

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_NONE = 0
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_EXIT = 0x80000000
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RCVBUF_BYTES = 8 * 1024 * 1024

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EV_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_HDR = _NLMSGHDR.size + _CN_MSG.size  # where the proc_event starts in a message
_U32X4 = struct.Struct("=IIII")
_U32X2 = struct.Struct("=II")
_ACK_ERR = struct.Struct("=I")
_RECV_TIMEOUT = 0.25  # bounds how long stop() waits for the thread
# How long an exec (or exit) of a process whose fork was not seen yet is held back: the
# kernel sends a fork event after waking the child, which may exec and even exit first.
_HOLD_SECONDS = 0.05
_PARENTS_MAX = 100_000  # fork bookkeeping is dropped past this (lost exit events)
# CLOCK_BOOTTIME - CLOCK_MONOTONIC: suspend time, fixed while the agent runs (mostly 0).
_BOOT_OFFSET = (time.clock_gettime(time.CLOCK_BOOTTIME)
                - time.clock_gettime(time.CLOCK_MONOTONIC))


def _with_forked_parent(info: ProcInfo, ppid: int) -> ProcInfo:
    """`info` read while the process was being reaped shows ppid 0 (the kernel's view of
    a dying task): the parent its fork named stands instead."""
    if info.ppid != 0:
        return info
    return dataclasses.replace(info, ppid=ppid, ancestors=procfs.ancestors(ppid))


class NetlinkUnavailable(AgentError):
    """The netlink proc connector cannot be used here."""


def _subscribe_msg(op: int, ack: int) -> bytes:
    payload = struct.pack("=I", op)
    # The kernel overwrites seq in its reply but answers with our ack + 1.
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, ack, len(payload), 0)
    total = _NLMSGHDR.size + len(cn) + len(payload)
    return _NLMSGHDR.pack(total, NLMSG_DONE, 0, 0, 0) + cn + payload


def _describe(err: OSError) -> str:
    if err.errno in (errno.EPERM, errno.EACCES):
        return "permission denied (needs CAP_NET_ADMIN on this kernel)"
    return os.strerror(err.errno) if err.errno else str(err)


def _open_socket(ack: int) -> socket.socket:
    """Open, bind and subscribe; raises NetlinkUnavailable with the reason."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except OSError as err:
        raise NetlinkUnavailable(f"netlink proc connector: {_describe(err)}") from err
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except OSError:
            # Unprivileged: the kernel caps this at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.bind((0, CN_IDX_PROC))
        sock.send(_subscribe_msg(PROC_CN_MCAST_LISTEN, ack))
    except OSError as err:
        sock.close()
        raise NetlinkUnavailable(f"netlink proc connector: {_describe(err)}") from err
    return sock


def _wait_ack(sock: socket.socket, ack: int, timeout: float) -> int | None:
    """The error number the kernel acknowledged our subscription with, None if none came."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError as err:
            if err.errno == errno.ENOBUFS:
                continue
            raise
        if len(data) < _HDR + _EV_HEAD.size + 4:
            continue
        cn_ack = _CN_MSG.unpack_from(data, _NLMSGHDR.size)[3]
        what = _EV_HEAD.unpack_from(data, _HDR)[0]
        if what == PROC_EVENT_NONE and cn_ack == ack + 1:
            return _ACK_ERR.unpack_from(data, _HDR + _EV_HEAD.size)[0]


class NetlinkProcSource:
    """Emits ProcExec, ProcFork (processes only, not threads) and ProcExit onto `out`."""

    def __init__(self, out: queue.Queue, *, ignore_pid: int | Collection[int]) -> None:
        self._out = out
        self._ignore = pid_set(ignore_pid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        # child tgid -> (parent tgid, fork time): what an exec of a process that
        # vanished before /proc could be read still lets us say.
        self._parents: dict[int, tuple[int, float]] = {}
        self._seq: dict[int, int] = {}  # cpu -> sequence number of its last event
        # Processes alive as far as the events said (listed from /proc at start): what
        # a loss of events is reconciled against.
        self._live: set[int] = set()
        # pid -> (release time, events): exec/exit of a child whose fork is yet to come;
        # an exec whose /proc was gone is kept as None until the fork names its parent.
        self._held: dict[int, tuple[float, list]] = {}

    @staticmethod
    def probe(timeout: float = 1.0) -> tuple[bool, str]:
        """Try to open, bind and subscribe; (True, "ok") or (False, why not)."""
        ack = random.randrange(1, 2**31)
        try:
            sock = _open_socket(ack)
        except NetlinkUnavailable as err:
            return False, str(err)
        try:
            err = _wait_ack(sock, ack, timeout)
            try:
                sock.send(_subscribe_msg(PROC_CN_MCAST_IGNORE, 0))
            except OSError:
                pass
        except OSError as exc:
            return False, f"netlink proc connector: {_describe(exc)}"
        finally:
            sock.close()
        if err is None:
            return False, ("netlink proc connector: no acknowledgement from the kernel "
                           "(not in the initial user, PID or network namespace?)")
        if err:
            return False, f"netlink proc connector: {_describe(OSError(err, os.strerror(err)))}"
        return True, "netlink proc connector: exec, fork and exit events with exit codes"

    def start(self) -> None:
        """Subscribe and start the reader thread; raises NetlinkUnavailable."""
        if self._thread is not None:
            return
        self._sock = _open_socket(random.randrange(1, 2**31))
        self._sock.settimeout(_RECV_TIMEOUT)
        # After subscribing: a process made from now on comes with its events.
        try:
            self._live = set(procfs.list_pids())
        except procfs.ProcfsError as err:
            log.warning("netlink proc source: %s (a loss of events cannot be made up)", err)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="onlooker-netlink", daemon=True)
        self._thread.start()
        log.info("netlink proc source started")

    def stop(self) -> None:
        """Stop the thread (returns within about 0.3 s) and unsubscribe."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=2.0)
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                # The kernel counts listeners; without this it keeps producing events.
                sock.send(_subscribe_msg(PROC_CN_MCAST_IGNORE, 0))
            except OSError:
                pass
            sock.close()
        log.info("netlink proc source stopped")

    def cpu_seconds(self) -> float:
        """CPU time the reader thread has used so far (0.0 when not running)."""
        thread = self._thread
        if thread is None or thread.ident is None:
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:
            return 0.0

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        recv = sock.recv_into
        buf = bytearray(65536)
        view = memoryview(buf)
        stopping = self._stop.is_set
        while not stopping():
            sock.settimeout(_HOLD_SECONDS if self._held else _RECV_TIMEOUT)
            try:
                n = recv(buf)
            except TimeoutError:
                self._release_due(clock.now())
                continue
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    log.warning("netlink proc source: receive buffer overflowed, events lost")
                    self._parents.clear()
                    self._seq.clear()  # the gap is this loss, already reported
                    self._lost()
                    continue
                if stopping():
                    break
                log.error("netlink proc source: receive failed: %s", err)
                break
            try:
                self._handle(view[:n])
            except Exception:  # one malformed message must not end the source
                log.exception("netlink proc source: cannot parse a message")
            if self._held:
                self._release_due(clock.now())
        # Asked to stop: what the kernel already queued (a run's exit) still counts.
        try:
            sock.setblocking(False)
            while True:
                n = recv(buf)
                if not n:
                    break
                try:
                    self._handle(view[:n])
                except Exception:
                    log.exception("netlink proc source: cannot parse a message")
        except OSError:
            pass
        self._release_due(float("inf"))

    def _release_due(self, now: float) -> None:
        """Emit what was held for a fork that never came (a child of the agent, or of a
        process forked before the subscription): as known, the parent unknown."""
        for pid in [p for p, (due, _) in self._held.items() if due <= now]:
            self._release(pid)

    def _release(self, pid: int) -> None:
        _, events = self._held.pop(pid)
        parent = self._parents.get(pid)
        for ev in events:
            if isinstance(ev, tuple):  # an exec whose /proc was gone: built now
                ev = ProcExec(ev[0], self._vanished_info(pid, ev[0]))
            elif isinstance(ev, ProcExec) and parent is not None:
                ev = ProcExec(ev.t, _with_forked_parent(ev.info, parent[0]))
            if isinstance(ev, ProcExit):
                self._parents.pop(pid, None)
            self._out.put(ev)

    def _handle(self, data: memoryview) -> None:
        offset = 0
        size = len(data)
        while offset + _HDR + _EV_HEAD.size <= size:
            msg_len = _NLMSGHDR.unpack_from(data, offset)[0]
            if msg_len < _HDR:
                return
            self._check_seq(data, offset)
            self._event(data, offset + _HDR)
            offset += (msg_len + 3) & ~3

    def _check_seq(self, data: memoryview, at: int) -> None:
        seq = _CN_MSG.unpack_from(data, at + _NLMSGHDR.size)[2]
        what, cpu, _stamp = _EV_HEAD.unpack_from(data, at + _HDR)
        if what == PROC_EVENT_NONE and cpu == 0xFFFFFFFF:
            # A subscription reply from an older kernel: its seq is the subscriber's.
            # (Newer kernels number replies, to us or to any other listener, like events.)
            return
        last = self._seq.get(cpu)
        self._seq[cpu] = seq
        if last is not None and seq != (last + 1) & 0xFFFFFFFF:
            log.warning("netlink proc source: the kernel dropped %d event(s)",
                        (seq - last - 1) & 0xFFFFFFFF)
            self._lost()

    def _lost(self) -> None:
        """Events were lost: say so, and make up from /proc for what can be known."""
        now = clock.now()
        self._out.put(Overflow(now, "netlink"))
        try:
            current = set(procfs.list_pids())
        except procfs.ProcfsError as err:
            log.warning("netlink proc source: cannot reconcile with /proc: %s", err)
            return
        for pid in sorted(self._live - current):
            self._parents.pop(pid, None)
            self._out.put(ProcExit(now, pid, None, None))
        for pid in sorted(current - self._live):  # lower pids first: parents first
            if pid in self._ignore or not procfs.alive_pid(pid):
                continue  # the agent, or a zombie whose exit was already reported
            info = procfs.read_info(pid)
            if info is not None:
                self._out.put(ProcExec(now, info))
        self._live = current

    def _event(self, data: memoryview, at: int) -> None:
        what, _cpu, stamp_ns = _EV_HEAD.unpack_from(data, at)
        body = at + _EV_HEAD.size
        if what == PROC_EVENT_FORK:
            _ppid, ptgid, cpid, ctgid = _U32X4.unpack_from(data, body)
            if cpid != ctgid or ptgid in self._ignore:
                return  # a new thread, or the agent's own child
            if len(self._parents) > _PARENTS_MAX:
                self._parents.clear()
            # The kernel's own time of the fork (CLOCK_MONOTONIC) on the agent clock.
            forked = stamp_ns / 1e9 + _BOOT_OFFSET if stamp_ns else clock.now()
            self._parents[ctgid] = (ptgid, forked)
            self._live.add(ctgid)
            self._out.put(ProcFork(forked, ptgid, ctgid))
            if ctgid in self._held:  # its exec (and exit) came first: now, in order
                self._release(ctgid)
        elif what == PROC_EVENT_EXEC:
            tgid = _U32X2.unpack_from(data, body)[1]
            if tgid in self._ignore:
                return
            now = clock.now()
            self._live.add(tgid)
            info = procfs.read_info(tgid)
            forked = self._parents.get(tgid)
            if info is not None and forked is not None and abs(info.started - forked[1]) > 0.05:
                # The process ended and its pid went to another before /proc was read:
                # what /proc says is someone else's.
                info = None
            if info is not None and forked is not None:
                info = _with_forked_parent(info, forked[0])
            if forked is None or tgid in self._held:
                # No fork seen for it yet: hold it until the fork comes (or briefly).
                # An exec whose /proc was gone is built once the fork names the parent.
                held = self._held.setdefault(tgid, (now + _HOLD_SECONDS, []))
                held[1].append((now,) if info is None else ProcExec(now, info))
                return
            if info is None:
                info = self._vanished_info(tgid, now)
            self._out.put(ProcExec(now, info))
        elif what == PROC_EVENT_EXIT:
            pid, tgid, status, _sig = _U32X4.unpack_from(data, body)
            if pid != tgid or tgid in self._ignore:
                return  # a thread ended, not the process
            self._live.discard(tgid)
            code, sig = procfs.decode_wait_status(status)
            if tgid in self._held:
                self._held[tgid][1].append(ProcExit(clock.now(), tgid, code, sig))
                return
            self._parents.pop(tgid, None)
            self._out.put(ProcExit(clock.now(), tgid, code, sig))
        elif what == PROC_EVENT_NONE:
            err = _ACK_ERR.unpack_from(data, body)[0]
            if err:
                log.warning("netlink proc source: subscription refused: %s", os.strerror(err))

    def _vanished_info(self, pid: int, now: float) -> ProcInfo:
        """What we know of a process that exec'd and exited before /proc could be read."""
        ppid, forked = self._parents.get(pid, (0, now))
        return ProcInfo(pid=pid, ppid=ppid, argv=(), cwd=None, exe=None, uid=None,
                        start_ticks=0, started=forked, ancestors=(ppid,) if ppid else ())
