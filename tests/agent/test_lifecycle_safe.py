"""What root reads in a store its owner can write (store/private.py `read_small`): never
through a link, never a FIFO or a device, never unbounded; and the store folder itself,
never a link or a third user's, for a process acting for the owner (lifecycle, config).

The owner-facing cases need root (to chown to another uid); they are skipped otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onlooker.agent import config, lifecycle
from onlooker.store import private

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to give files to another uid")
OWNER = 4242  # the project's owner, as root sees them (no account needed)
THIRD = 4343


def project(tmp_path: Path, uid: int | None = None) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    config.instrument(p)
    if uid is not None:
        for folder, _dirs, files in os.walk(p):
            os.chown(folder, uid, uid)
            for f in files:
                os.chown(os.path.join(folder, f), uid, uid)
    return p


# -- read_small ----------------------------------------------------------------------------


def test_a_plain_small_file_is_read_whole_and_a_larger_one_refused(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    assert private.read_small(f, limit=100) == b"x" * 100
    with pytest.raises(OSError) as err:
        private.read_small(f, limit=99)
    assert err.value.errno == errno.EFBIG


def test_the_tail_of_a_large_file_is_its_last_bytes_from_an_offset_on(tmp_path):
    f = tmp_path / "log"
    f.write_bytes(b"a" * 10_000 + b"the end\n")
    assert private.read_small(f, limit=8, tail=True) == b"the end\n"
    assert private.read_small(f, limit=100_000, tail=True, since=10_000) == b"the end\n"
    assert private.read_small(f, limit=100, tail=True, since=20_000) == b""


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "folder"])
def test_a_link_a_fifo_or_a_folder_is_refused_at_once(tmp_path, kind):
    f = tmp_path / "agent.json"
    if kind == "fifo":
        os.mkfifo(f)  # nobody writes it: an ordinary open would wait for ever
    elif kind == "folder":
        f.mkdir()
    else:
        f.symlink_to("/dev/zero")
    t = time.monotonic()
    with pytest.raises(OSError) as err:
        private.read_small(f)
    assert time.monotonic() - t < 2.0
    assert err.value.errno in (errno.ELOOP, errno.EINVAL, errno.EISDIR)


@needs_root
def test_for_another_owner_a_hard_link_to_roots_file_is_not_read(tmp_path):
    p = project(tmp_path, OWNER)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"pid": 1, "state": "SECRET"}))
    secret.chmod(0o600)
    os.link(secret, p / ".onlooker" / lifecycle.STATE_NAME)
    owner = private.Owner(OWNER, OWNER)
    with pytest.raises(OSError) as err:
        private.read_small(p / ".onlooker" / lifecycle.STATE_NAME, owner)
    assert err.value.errno == errno.EPERM
    assert lifecycle.read_state(p / ".onlooker") == {}
    # the owner's own file with a second name is theirs to read
    mine = p / ".onlooker" / "mine.json"
    mine.write_text("{}")
    os.chown(mine, OWNER, OWNER)
    os.link(mine, p / "also-mine.json")
    assert private.read_small(mine, owner) == b"{}"


@needs_root
def test_for_another_owner_a_store_that_is_a_link_or_a_third_users_is_refused(tmp_path):
    p = project(tmp_path, OWNER)
    owner = private.Owner(OWNER, OWNER)
    store = p / ".onlooker"
    assert private.store_folder_problem(store, owner) is None
    elsewhere = tmp_path / "elsewhere"
    store.rename(elsewhere)
    store.symlink_to(elsewhere)
    assert "is a symbolic link" in private.store_folder_problem(store, owner)
    (elsewhere / lifecycle.STATE_NAME).write_text('{"pid": 1}')
    with pytest.raises(OSError) as err:  # the folder is pinned without following it
        private.read_small(store / lifecycle.STATE_NAME, owner)
    assert err.value.errno in (errno.ELOOP, errno.ENOTDIR)
    with pytest.raises(lifecycle.LifecycleError, match="is a symbolic link"):
        lifecycle.status(p)
    with pytest.raises(lifecycle.LifecycleError, match="is a symbolic link"):
        lifecycle.start(p, timeout=5)
    store.unlink()
    elsewhere.rename(store)
    os.chown(store, THIRD, THIRD)
    with pytest.raises(lifecycle.LifecycleError, match="belongs to another user"):
        lifecycle.status(p)
    # the owner reads their own links: a process that is the owner is not led anywhere
    # it could not go by itself
    assert private.store_folder_problem(store, private.Owner(os.geteuid(), 0)) is None


# -- lifecycle and config ------------------------------------------------------------------


def _bounded(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`code` in a child with 1 GiB of address space and a time limit: an unbounded read
    of /dev/zero fails there (MemoryError, a timeout) instead of taking the tests down."""
    pre = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
    return subprocess.run([sys.executable, "-c", pre + code], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", [lifecycle.STATE_NAME, lifecycle.PID_NAME])
@pytest.mark.parametrize("kind", ["zero", "fifo"])
def test_status_with_a_store_file_that_is_dev_zero_or_a_fifo_neither_fills_memory_nor_hangs(
        tmp_path, name, kind):
    p = project(tmp_path, OWNER if ROOT else None)
    f = p / ".onlooker" / name
    if kind == "fifo":
        os.mkfifo(f)
    else:
        f.symlink_to("/dev/zero")
    res = _bounded(f"from onlooker.agent import lifecycle\n"
                   f"st = lifecycle.status({str(p)!r})\n"
                   f"print(st['running'], st['state'])\n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["False", "not", "running"]


def test_a_huge_agent_json_is_not_read(tmp_path):
    p = project(tmp_path)
    with open(p / ".onlooker" / lifecycle.STATE_NAME, "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB that cost no disk
    res = _bounded(f"from onlooker.agent import lifecycle\n"
                   f"print(lifecycle.read_state({str(p / '.onlooker')!r}))\n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "{}"


def test_the_log_tail_is_the_last_lines_of_a_huge_log_and_nothing_of_a_link(tmp_path):
    p = project(tmp_path)
    log = p / ".onlooker" / lifecycle.LOG_NAME
    with open(log, "wb") as f:
        f.truncate(1 << 30)
        f.seek(0, os.SEEK_END)
        f.write(b"one\ntwo\ncannot start: the last words\n")
    res = _bounded(f"from pathlib import Path\nfrom onlooker.agent import lifecycle\n"
                   f"print(repr(lifecycle._log_tail(Path({str(log)!r}), 2)))\n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == repr("two\ncannot start: the last words")
    log.unlink()
    log.symlink_to("/dev/zero")
    res = _bounded(f"from pathlib import Path\nfrom onlooker.agent import lifecycle\n"
                   f"log = Path({str(log)!r})\n"
                   f"print(repr(lifecycle._log_tail(log) + lifecycle._agent_output(log, 0)))\n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == repr("")


@pytest.mark.parametrize(("kind", "says"), [
    ("zero", "is not a plain file (a link, FIFO or device)"),
    ("fifo", "is not a plain file (a link, FIFO or device)"),
    ("huge", "is larger than 1 MiB, too large for a config"),
])
def test_a_config_that_is_a_device_a_fifo_or_huge_is_one_sentence(tmp_path, kind, says):
    p = project(tmp_path)
    cfg = p / ".onlooker" / config.CONFIG_NAME
    cfg.unlink()
    if kind == "zero":
        cfg.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(cfg)
    else:
        cfg.write_text("# x\n" * 300_000)
    res = _bounded(f"from onlooker.agent import config\n"
                   f"try:\n    config.load({str(p)!r})\n"
                   f"except config.ConfigError as err:\n    print(err)\n")
    assert res.returncode == 0, res.stderr[-2000:]
    said = res.stdout.rstrip("\n")
    assert says in said and "\n" not in said


def test_a_missing_config_is_the_defaults(tmp_path):
    p = project(tmp_path)
    (p / ".onlooker" / config.CONFIG_NAME).unlink()
    assert config.load(p)["capture"]["poll_hz"] == config.DEFAULTS["capture"]["poll_hz"]


# -- stop: root signals only the project's own agent ---------------------------------------


def _as(uid: int):
    def drop() -> None:
        os.setgid(uid)
        os.setgroups([])
        os.setuid(uid)
    return drop


def _lookalike(uid: int) -> subprocess.Popen:
    """A process of `uid` whose command line names onlooker.agent, as an agent's does, that
    works in no project of ours: a shell that stays (`; :`) with the name as its $0."""
    return subprocess.Popen(["/bin/sh", "-c", "sleep 60; :", "onlooker.agent.daemon", "/x"],
                            preexec_fn=_as(uid), cwd="/", start_new_session=True)


def _end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait(5)


@needs_root
def test_root_stopping_a_project_does_not_signal_another_users_process_its_pidfile_names(
        tmp_path):
    p = project(tmp_path, OWNER)
    victim = _lookalike(THIRD)
    try:
        pidfile = p / ".onlooker" / lifecycle.PID_NAME
        pidfile.write_text(f"{victim.pid}\n")
        os.chown(pidfile, OWNER, OWNER)
        with pytest.raises(lifecycle.LifecycleError,
                           match=rf"^pid {victim.pid}, which .* names, is not this project's "
                                 r"agent: it was not signalled"):
            lifecycle.stop(p, timeout=5)
        time.sleep(0.2)  # a SIGTERM, had one been sent, is delivered by now
        assert victim.poll() is None
    finally:
        _end(victim)


@needs_root
def test_root_stopping_a_project_stops_the_owners_own_agent(tmp_path):
    p = project(tmp_path, OWNER)
    own = _lookalike(OWNER)
    try:
        pidfile = p / ".onlooker" / lifecycle.PID_NAME
        pidfile.write_text(f"{own.pid}\n")
        os.chown(pidfile, OWNER, OWNER)
        assert lifecycle.stop(p, timeout=10) is True
        assert own.wait(5) is not None  # reaped by stop, which waited for it to exit
    finally:
        _end(own)
