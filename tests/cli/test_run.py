"""`onlooker run -- CMD` is indistinguishable from CMD: output bytes, exit status, signals,
with and without a terminal; and it leaves the log and the exact status for the agent."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ONLOOKER = [sys.executable, "-m", "onlooker.cli.main", "run", "--no-agent", "--"]

# Colours, a progress bar redrawn with \r, both streams, what it sees of its terminal.
SHOWY = r"""
import os, sys, time
print("\x1b[32mgreen\x1b[0m", "tty" if sys.stdout.isatty() else "notty",
      os.get_terminal_size().columns if sys.stdout.isatty() else "-")
for i in range(3):
    sys.stdout.write(f"\r{i}/3 [{'#' * i}]"); sys.stdout.flush()
print()
print("to stderr", file=sys.stderr)
print("loss=0.25 step=1")
sys.exit(int(sys.argv[1]))
"""

TRAP = r"""
import os, signal, sys, time
def bye(sig, frame):
    # os.write, not print: the signal may come while print("ready") is still flushing,
    # and a print inside it would be a reentrant call (a RuntimeError, not our output).
    os.write(1, f"got {signal.Signals(sig).name}\n".encode())
    sys.exit(7)
signal.signal(signal.SIGINT, bye)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(30)
sys.exit(1)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".onlooker").mkdir()
    return tmp_path


def records(project: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (project / ".onlooker" / "launcher").glob("*.json")]


def piped(argv: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, timeout=30)


def under_pty(argv: list[str], cwd: Path, *, send: bytes | None = None,
              timeout: float = 30.0) -> tuple[bytes, int]:
    """Run argv with a fresh terminal as stdin/stdout/stderr; (all it showed, wait status).
    `send` is typed once the program's 'ready' line has come through."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 97, 0, 0))
    proc = subprocess.Popen(argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal is gone
                    break
                if not chunk:
                    break
                out += chunk
                # The whole line first: an interrupt flushes terminal output not yet read.
                if send is not None and b"ready\r\n" in out:
                    os.write(master, send)
                    send = None
        else:
            raise AssertionError(f"no end within {timeout} s; got {out!r}")
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = 0
    finally:
        os.close(master)
    return out, status


def test_pipes_same_bytes_code_and_log(project):
    bare = piped([sys.executable, "-c", SHOWY, "3"], project)
    ours = piped([*ONLOOKER, sys.executable, "-c", SHOWY, "3"], project)
    assert ours.returncode == bare.returncode == 3
    assert ours.stdout == bare.stdout and b"notty" in ours.stdout
    assert ours.stderr == bare.stderr == b"to stderr\n"
    [rec] = records(project)
    assert rec["exit_code"] == 3 and rec["signal"] is None
    assert rec["argv"] == [sys.executable, "-c", SHOWY, "3"]
    assert rec["log"].startswith(".onlooker/logs/")
    logged = (project / rec["log"]).read_bytes()
    assert b"loss=0.25 step=1\n" in logged and b"to stderr\n" in logged
    assert rec["child_start_ticks"] is not None and rec["ended"] >= rec["started"]


def test_a_broken_config_never_stops_the_command(project):
    (project / ".onlooker" / "config.toml").write_text("this is [not toml\n")
    bare = piped([sys.executable, "-c", SHOWY, "3"], project)
    ours = piped([*ONLOOKER[:-2], "--", sys.executable, "-c", SHOWY, "3"], project)
    assert ours.returncode == bare.returncode == 3
    assert ours.stdout == bare.stdout
    assert b"no capture for this run" in ours.stderr and b"not valid TOML" in ours.stderr
    assert ours.stderr.endswith(b"to stderr\n") and b"Traceback" not in ours.stderr


def test_stdin_passes_through(project):
    ours = piped([*ONLOOKER, "cat"], project, stdin=b"hello\nworld")
    assert ours.returncode == 0 and ours.stdout == b"hello\nworld"


def test_death_by_signal_is_reraised(project):
    code = "import os, signal; print('bye', flush=True); os.kill(os.getpid(), signal.SIGTERM)"
    bare = piped([sys.executable, "-c", code], project)
    ours = piped([*ONLOOKER, sys.executable, "-c", code], project)
    assert ours.returncode == bare.returncode == -signal.SIGTERM
    assert ours.stdout == bare.stdout == b"bye\n"
    [rec] = records(project)
    assert rec["exit_code"] is None and rec["signal"] == signal.SIGTERM


def test_signals_sent_to_the_launcher_reach_the_command(project):
    proc = subprocess.Popen([*ONLOOKER, sys.executable, "-c", TRAP], cwd=project,
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.read() == b"got SIGTERM\n"
    assert proc.wait(timeout=20) == 7


def test_missing_program_fails_like_a_shell(project):
    ours = piped([*ONLOOKER, "no-such-program-xyz"], project)
    assert ours.returncode == 127 and b"no-such-program-xyz" in ours.stderr


def test_terminal_same_bytes_size_and_code(project):
    bare, bare_status = under_pty([sys.executable, "-c", SHOWY, "4"], project)
    ours, our_status = under_pty([*ONLOOKER, sys.executable, "-c", SHOWY, "4"], project)
    assert b"\x1b[32mgreen\x1b[0m tty 97" in bare
    assert ours == bare
    assert os.waitstatus_to_exitcode(our_status) == os.waitstatus_to_exitcode(bare_status) == 4
    [rec] = records(project)
    assert rec["exit_code"] == 4
    assert b"loss=0.25 step=1" in (project / rec["log"]).read_bytes()


def test_ctrl_c_reaches_the_command_through_the_terminal(project):
    bare, bare_status = under_pty([sys.executable, "-c", TRAP], project, send=b"\x03")
    ours, our_status = under_pty([*ONLOOKER, sys.executable, "-c", TRAP], project,
                                 send=b"\x03")
    assert b"got SIGINT" in bare and ours == bare
    assert os.waitstatus_to_exitcode(our_status) == os.waitstatus_to_exitcode(bare_status) == 7


def test_ctrl_c_killing_the_command_kills_the_launcher_the_same_way(project):
    code = "import time; print('ready', flush=True); time.sleep(30)"
    env_code = f"import signal; signal.signal(signal.SIGINT, signal.SIG_DFL); exec({code!r})"
    _, bare_status = under_pty([sys.executable, "-c", env_code], project, send=b"\x03")
    _, our_status = under_pty([*ONLOOKER, sys.executable, "-c", env_code], project,
                              send=b"\x03")
    assert os.WIFSIGNALED(bare_status) and os.WTERMSIG(bare_status) == signal.SIGINT
    assert os.WIFSIGNALED(our_status) and os.WTERMSIG(our_status) == signal.SIGINT
    [rec] = records(project)
    assert rec["signal"] == signal.SIGINT
