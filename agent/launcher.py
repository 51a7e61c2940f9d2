"""`onlooker run -- CMD`: run CMD in the foreground unchanged, keep its output as the run's log
and leave its exact exit status where the agent finds it.

The person sees what they would see without it: with a terminal, CMD gets a pty of
its own (colours, progress bars, window size, Ctrl-C through the line discipline);
without one, its stdout and stderr are pipes tee'd to ours. stdin is CMD's own.
The exit status is CMD's (a signal is re-raised on ourselves).

For the agent, `.onlooker/launcher/<launcher pid>.json` holds: `child_pid`,
`child_start_ticks` (with the pid, the process identity in /proc), `argv`, `cwd`,
`log` (project-relative path of the output copy, under `.onlooker/logs/`),
`started` (Unix s) and, once CMD ended, `ended`, `exit_code` and `signal`.

Both folders, the records and the log are the project owner's and private (0700 and
0600, store/private.py) whoever runs the launcher: `sudo onlooker run` leaves nothing
of root's in the owner's store.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onlooker.agent.errors import AgentError
from onlooker.agent.probes import procfs
from onlooker.agent.rules import secrets
from onlooker.store import private
from onlooker.store.errors import StoreError

log = logging.getLogger(__name__)

LAUNCHER_DIR = "launcher"
LOGS_DIR = "logs"
_CHUNK = 65536
_DRAIN_SECONDS = 0.5  # after CMD exits, output still held by its leftovers
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
              signal.SIGUSR1, signal.SIGUSR2)


class LaunchError(AgentError):
    """The command could not be started; the message is one sentence for a person."""


@dataclass
class Outcome:
    """How CMD ended: exactly one of exit_code / signal is set."""

    exit_code: int | None
    signal: int | None
    log_path: Path
    record_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        """The shell's `$?` for this ending: the code, or 128+N for signal N."""
        return self.exit_code if self.exit_code is not None else 128 + (self.signal or 0)


def _write_json(path: Path, data: dict[str, Any], owner: private.Owner) -> None:
    # replaced at once: the agent never reads half a record
    private.write_private(path, json.dumps(data, indent=1).encode("utf-8"), owner)


def _write_all(fd: int, data: bytes) -> bool:
    """Write everything; False when the reader went away (EPIPE)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        except OSError as err:
            if err.errno in (errno.EPIPE, errno.EBADF, errno.EIO):
                return False
            raise
        view = view[n:]
    return True


def _copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _terminal_has_us(fd: int) -> bool:
    """Is our process group the terminal's foreground (so Ctrl-C reached CMD too)?"""
    try:
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


class _Session:
    """One run of CMD: the fds, the tee and the signal plumbing."""

    def __init__(self, argv: list[str], cwd: Path, log_fd: int,
                 env: dict[str, str] | None = None, quiet: bool = False) -> None:
        self.argv, self.cwd, self.log_fd, self.env, self.quiet = argv, cwd, log_fd, env, quiet
        self.use_pty = os.isatty(1) and not quiet
        self.master: int | None = None
        self.readers: dict[int, int] = {}  # our read end -> where to copy it (1 or 2)
        self.signals: list[int] = []
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)

    def start(self) -> subprocess.Popen:
        kwargs: dict[str, Any] = {"cwd": self.cwd, "close_fds": True, "env": self.env}
        close_after: list[int] = []
        if self.use_pty:
            master, slave = os.openpty()
            self.master = master
            _copy_winsize(1, master)
            try:
                attrs = termios.tcgetattr(0 if os.isatty(0) else 1)
                termios.tcsetattr(slave, termios.TCSANOW, attrs)  # same echo, same erase key
            except termios.error:
                pass
            kwargs.update(stdout=slave, start_new_session=True,
                          preexec_fn=lambda: fcntl.ioctl(1, termios.TIOCSCTTY, 0))
            kwargs["stdin"] = slave if os.isatty(0) else None
            if os.isatty(2):
                kwargs["stderr"] = slave
            else:
                r, w = os.pipe()
                kwargs["stderr"] = w
                self.readers[r] = 2
                close_after.append(w)
            close_after.append(slave)
            self.readers[master] = 1
        else:
            for target in (1, 2):
                r, w = os.pipe()
                kwargs["stdout" if target == 1 else "stderr"] = w
                self.readers[r] = target
                close_after.append(w)
        try:
            proc = subprocess.Popen(self.argv, **kwargs)
        except OSError as err:
            for fd in [*close_after, *self.readers]:
                os.close(fd)
            raise LaunchError(f"cannot run {self.argv[0]}: {err.strerror}") from err
        finally:
            for fd in close_after:
                try:
                    os.close(fd)
                except OSError:
                    pass
        return proc

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)

    def pump(self, proc: subprocess.Popen) -> int:
        """Copy output until CMD ended and its output is drained; its wait status."""
        old = {s: signal.signal(s, self._on_signal) for s in (*_FORWARDED, signal.SIGCHLD,
                                                                signal.SIGWINCH)}
        old_wake = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        saved: list[tuple[int, Any]] = []
        if self.use_pty:
            for fd in {0, 1}:
                if os.isatty(fd):
                    try:
                        saved.append((fd, termios.tcgetattr(fd)))
                        tty.setraw(fd, termios.TCSANOW)
                    except termios.error:
                        pass
        forward_stdin = self.use_pty and os.isatty(0)
        try:
            return self._loop(proc, forward_stdin)
        finally:
            for fd, attrs in saved:
                try:
                    termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
                except termios.error:
                    pass
            signal.set_wakeup_fd(old_wake)
            for s, handler in old.items():
                signal.signal(s, handler)

    def _loop(self, proc: subprocess.Popen, forward_stdin: bool) -> int:
        status: int | None = None
        drain_until = None
        while True:
            self._handle_signals(proc)
            if status is None:
                try:
                    pid, raw = os.waitpid(proc.pid, os.WNOHANG)
                except ChildProcessError:
                    pid, raw = proc.pid, 0
                if pid:
                    status = raw
                    proc.returncode = -1  # reaped here; keep Popen from waiting again
                    drain_until = time.monotonic() + _DRAIN_SECONDS
            if not self.readers and status is not None:
                return status
            if drain_until is not None and time.monotonic() > drain_until:
                return status  # type: ignore[return-value]
            watch = [*self.readers, self.wake_r]
            if forward_stdin and self.master is not None:
                watch.append(0)
            timeout = None if drain_until is None else max(0.0, drain_until - time.monotonic())
            try:
                ready, _, _ = select.select(watch, [], [], timeout)
            except InterruptedError:
                continue
            for fd in ready:
                if fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 512)
                    except BlockingIOError:
                        pass
                elif fd == 0:
                    self._forward_input()
                    if self.master is None:
                        forward_stdin = False
                else:
                    self._copy(fd)

    def _forward_input(self) -> None:
        try:
            data = os.read(0, _CHUNK)
        except OSError:
            data = b""
        if data and self.master is not None:
            _write_all(self.master, data)

    def _copy(self, fd: int) -> None:
        try:
            data = os.read(fd, _CHUNK)
        except OSError:  # EIO: the pty's last slave closed
            data = b""
        if not data:
            self._close_reader(fd)
            return
        target = self.readers[fd]
        if self.log_fd >= 0:
            _write_all(self.log_fd, data)
        if self.quiet:
            return
        if not _write_all(target, data):
            # Our reader left (`| head`): let CMD meet the closed pipe as it would bare.
            self._close_reader(fd)

    def _close_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)
        if fd == self.master:
            self.master = None
        os.close(fd)

    def _handle_signals(self, proc: subprocess.Popen) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                continue
            if signum == signal.SIGWINCH:
                if self.master is not None:
                    _copy_winsize(1, self.master)
                continue
            if signum in (signal.SIGINT, signal.SIGQUIT) and not self.use_pty \
                    and _terminal_has_us(0 if os.isatty(0) else 2):
                continue  # the terminal sent it to CMD's process group as well
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, signum)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        for fd in [*self.readers, self.wake_r, self.wake_w]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.readers.clear()


def run(argv: list[str], *, project: Path, store_dir: Path, cwd: Path | None = None,
        env: dict[str, str] | None = None, quiet: bool = False) -> Outcome:
    """Run `argv` in the foreground as described in the module docstring; how it ended.
    `env`: the command's whole environment (default: ours); `quiet`: its output goes to
    the log only, not to our stdout and stderr."""
    if not argv:
        raise LaunchError("no command given: write it after '--', e.g. onlooker run -- python"
                          " train.py")
    cwd = Path(cwd or os.getcwd())
    records = store_dir / LAUNCHER_DIR
    logs = store_dir / LOGS_DIR
    owner = private.Owner.of(project)
    try:
        if owner.chown_needed:
            # root for another user: no link of theirs in the store is followed, and
            # folders an older version left root's are given to them (store/private.py)
            private.secure_store(store_dir, owner)
        private.make_dir(records, owner)
        private.make_dir(logs, owner)
    except StoreError as err:
        raise LaunchError(str(err)) from err
    except OSError as err:
        raise LaunchError(f"cannot write under {store_dir}: {err.strerror}") from err
    started = time.time()
    log_path = logs / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}-{os.getpid()}.log"
    record_path = records / f"{os.getpid()}.json"
    try:
        log_fd = private.open_private(log_path, os.O_WRONLY | os.O_APPEND, owner)
    except OSError as err:
        log.warning("cannot keep the output in %s: %s", log_path, err.strerror)
        log_fd = -1
    session = _Session(list(argv), cwd, log_fd, env, quiet)
    try:
        proc = session.start()
        brief = procfs.stat_brief(proc.pid)
        record: dict[str, Any] = {
            "launcher_pid": os.getpid(), "child_pid": proc.pid,
            "child_start_ticks": brief[2] if brief else None, "argv": secrets.redact_argv(argv),
            "cwd": str(cwd), "log": log_path.relative_to(project).as_posix(),
            "started": started,
        }
        _write_json(record_path, record, owner)
        raw = session.pump(proc)
    finally:
        session.close()
        if log_fd >= 0:
            os.close(log_fd)
    exit_code, sig = procfs.decode_wait_status(raw)
    record.update(ended=time.time(), exit_code=exit_code, signal=sig)
    try:
        _write_json(record_path, record, owner)
    except OSError as err:
        log.warning("cannot record how the command ended in %s: %s", record_path, err.strerror)
    return Outcome(exit_code, sig, log_path, record_path)


def live_launchers(store_dir: Path) -> list[int]:
    """Pids of other `onlooker run` launchers still running for this project."""
    out = []
    try:
        names = os.listdir(store_dir / LAUNCHER_DIR)
    except OSError:
        return []
    for name in names:
        stem = name[:-5] if name.endswith(".json") else ""
        if stem.isdigit() and int(stem) != os.getpid() and procfs.stat_brief(int(stem)):
            out.append(int(stem))
    return out


def exit_like(outcome: Outcome) -> None:
    """End this process as CMD ended: the same code, or die of the same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if outcome.signal:
        sig = outcome.signal
        try:
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
    os._exit(outcome.status)
