"""The inotify source against the real kernel, in temp dirs, with bounded waits."""

from __future__ import annotations

import errno
import itertools
import os
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import inotify_simple
import psutil
import pytest

from onlooker.agent import events as ev
from onlooker.agent.config import DEFAULTS
from onlooker.agent.rules.ignore import Ignore
from onlooker.agent.sources import inotify as src_mod
from onlooker.agent.sources.inotify import InotifySource


class Harness:
    def __init__(self, root: Path, reads: bool = True) -> None:
        self.root = root
        self.q: queue.Queue = queue.Queue()
        self.ignore = Ignore(root, exclude=DEFAULTS["watch"]["exclude"], outside_ignore=[])
        self.src = InotifySource(self.q, root, self.ignore, reads=reads)
        self.got: list = []
        self._marks = itertools.count()

    def collect(self, until: Callable[[list], bool], timeout: float = 5.0) -> list:
        """Gather events until the condition holds; fail after the deadline."""
        deadline = time.monotonic() + timeout
        while not until(self.got):
            if time.monotonic() > deadline:
                tail = "\n".join(map(repr, self.got[-15:]))
                raise AssertionError(f"condition not met within {timeout} s; last events:\n{tail}")
            try:
                self.got.append(self.q.get(timeout=0.05))
            except queue.Empty:
                pass
        return self.got

    def barrier(self) -> list:
        """Write a marker file and wait for it: everything before it has arrived."""
        mark = self.root / f".mark{next(self._marks)}"
        mark.write_text("m")
        path = str(mark)
        self.collect(lambda got: any(e.path == path and e.op == ev.CLOSE_WRITE
                                     for e in got if isinstance(e, ev.FileEvent)))
        return [e for e in self.got if not getattr(e, "path", "").startswith(
            str(self.root / ".mark"))]

    def ops(self, path: Path | str) -> list[str]:
        """The ops of `path` as they came in the stream (folded ones unfolded)."""
        return [op for e in self.got if isinstance(e, ev.FileEvent) and e.path == str(path)
                for op in (*e.before, e.op)]

    def has(self, op: str, path: Path | str) -> Callable[[list], bool]:
        return lambda got: op in self.ops(path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.csv").write_text("1,2\n")
    return root.resolve()


@pytest.fixture
def h(project: Path) -> Iterator[Harness]:
    harness = Harness(project)
    harness.src.start()
    yield harness
    started = time.monotonic()
    harness.src.stop()
    assert time.monotonic() - started < 0.6
    assert not harness.src._thread.is_alive()


def test_write_close_read_and_delete(h: Harness) -> None:
    f = h.root / "data" / "new.csv"
    f.write_text("x")
    h.collect(h.has(ev.CLOSE_WRITE, f))
    assert h.ops(f)[:3] == [ev.CREATE, ev.OPEN, ev.CLOSE_WRITE]
    f.read_text()
    h.collect(h.has(ev.CLOSE_NOWRITE, f))
    f.unlink()
    h.collect(h.has(ev.DELETE, f))
    assert h.ops(f) == [ev.CREATE, ev.OPEN, ev.CLOSE_WRITE, ev.OPEN, ev.CLOSE_NOWRITE, ev.DELETE]
    assert all(e.pid is None for e in h.got if isinstance(e, ev.FileEvent))


def test_a_file_made_and_written_comes_as_one_event(h: Harness) -> None:
    f = h.root / "data" / "one.csv"
    f.write_text("x")  # create, open, close_write with nothing between
    g = h.root / "data" / "a.csv"
    g.write_text("again")  # open, close_write of a file that was there
    read = h.root / "data" / "r.csv"
    read.write_text("r")
    with open(read) as fh:  # an open for reading, not folded: the close says no write
        fh.read()
    h.barrier()
    (one,) = [e for e in h.got if isinstance(e, ev.FileEvent) and e.path == str(f)]
    assert (one.op, one.before) == (ev.CLOSE_WRITE, (ev.CREATE, ev.OPEN))
    (again,) = [e for e in h.got if isinstance(e, ev.FileEvent) and e.path == str(g)]
    assert (again.op, again.before) == (ev.CLOSE_WRITE, (ev.OPEN,))
    assert h.ops(read) == [ev.CREATE, ev.OPEN, ev.CLOSE_WRITE, ev.OPEN, ev.CLOSE_NOWRITE]
    assert [e.before for e in h.got if isinstance(e, ev.FileEvent) and e.path == str(read)
            and e.op == ev.CLOSE_NOWRITE] == [()]


def test_rename_of_a_temp_file_pairs_by_cookie(h: Harness) -> None:
    tmp, final = h.root / "data" / ".model.pt.tmp", h.root / "data" / "model.pt"
    tmp.write_bytes(b"weights")
    os.replace(tmp, final)
    h.collect(h.has(ev.MOVED_TO, final))
    (moved_from,) = [e for e in h.got if e.op == ev.MOVED_FROM]
    (moved_to,) = [e for e in h.got if e.op == ev.MOVED_TO]
    assert moved_from.path == str(tmp) and moved_to.path == str(final)
    assert moved_from.cookie == moved_to.cookie != 0


def test_files_in_a_new_folder_are_never_lost(h: Harness) -> None:
    expected = set()
    for i in range(40):
        sub = h.root / f"run{i}" / "ckpt"
        sub.mkdir(parents=True)
        for name in ("a.pt", "b.pt"):
            (sub / name).write_bytes(b"w")
            expected.add(str(sub / name))

    def all_written(got: list) -> bool:
        return expected <= {e.path for e in got if getattr(e, "op", None) == ev.CLOSE_WRITE}

    h.collect(all_written)
    assert h.src.watch_count == 2 + 80


def test_own_reads_are_dropped_and_others_kept(h: Harness) -> None:
    f = h.root / "data" / "a.csv"
    with h.src.own_read(str(f)):
        with open(f) as fh:
            fh.read()
    h.src.expect_own_read(str(f))
    f.read_bytes()
    assert h.barrier() == [] and h.ops(f) == []
    # A user's open queued before the agent's stays the user's.
    user = open(f)
    h.src.expect_own_read(str(f))
    f.read_bytes()
    user.close()
    h.barrier()
    assert h.ops(f) == [ev.OPEN, ev.CLOSE_NOWRITE]
    # A failed own open takes its credit back: the next user read is reported.
    missing = h.root / "data" / "gone.csv"
    with pytest.raises(FileNotFoundError), h.src.own_read(str(missing)):
        open(missing)
    missing.write_text("now")
    missing.read_text()
    h.collect(h.has(ev.CLOSE_NOWRITE, missing))
    assert h.ops(missing).count(ev.OPEN) == 2


def test_walking_the_tree_raises_no_file_events(h: Harness) -> None:
    from onlooker.agent.workers import scan

    (h.root / "a" / "b").mkdir(parents=True)
    (h.root / "a" / "b" / "f.txt").write_text("x")
    h.barrier()
    h.got.clear()
    assert len(list(scan.walk(h.root, h.ignore))) >= 2
    assert h.barrier() == []


def test_skipped_folders_are_silent(h: Harness) -> None:
    (h.root / ".git").mkdir()
    (h.root / ".git" / "index").write_text("x")
    env = h.root / "myenv"
    env.mkdir()
    (env / "pyvenv.cfg").write_text("home = /usr\n")
    h.collect(lambda got: h.src.watch_count == 2 and str(env) not in h.src._path_wd)
    (env / "lib").mkdir()
    (env / "lib" / "mod.py").write_text("x")
    (h.root / "src" / "__pycache__").mkdir(parents=True)
    (h.root / "src" / "__pycache__" / "m.pyc").write_bytes(b"x")
    got = h.barrier()
    quiet = [e for e in got if ".git" in e.path or "/lib/" in e.path]
    # __pycache__ is watched for reads and bytecode put in place only: an open may show
    # there once the watch on the new folder is in place before the write, else the
    # listing that follows the watch reports the file as just made (a race either way).
    cache = [e for e in got if "__pycache__" in e.path and e.op not in (ev.OPEN, ev.CREATE)]
    assert quiet == [] and cache == []
    assert str(env) not in h.src._path_wd


def test_folder_rename_keeps_watching_under_the_new_name(h: Harness) -> None:
    old = h.root / "out" / "tmp-ckpt"
    (old / "sub").mkdir(parents=True)
    (old / "sub" / "w.pt").write_text("w")
    h.collect(h.has(ev.CLOSE_WRITE, old / "sub" / "w.pt"))
    new = h.root / "out" / "ckpt-1"
    os.rename(old, new)
    h.collect(h.has(ev.MOVED_TO, new / "sub" / "w.pt"))
    frm = [e for e in h.got if e.op == ev.MOVED_FROM and e.path == str(old / "sub" / "w.pt")]
    to = [e for e in h.got if e.op == ev.MOVED_TO and e.path == str(new / "sub" / "w.pt")]
    assert frm[0].cookie == to[0].cookie
    (new / "sub" / "later.pt").write_text("x")
    h.collect(h.has(ev.CLOSE_WRITE, new / "sub" / "later.pt"))
    assert str(new / "sub") in h.src._path_wd and str(old / "sub") not in h.src._path_wd


def test_folder_moved_out_asks_for_a_rescan(h: Harness, tmp_path: Path) -> None:
    gone = h.root / "leaving"
    (gone / "inner").mkdir(parents=True)
    h.barrier()
    before = h.src.watch_count
    os.rename(gone, tmp_path / "elsewhere")
    h.collect(lambda got: any(isinstance(e, ev.Overflow) for e in got))
    h.collect(lambda got: h.src.watch_count == before - 2)
    (tmp_path / "elsewhere" / "inner" / "x").write_text("x")
    assert not any(getattr(e, "path", "").startswith(str(tmp_path / "elsewhere"))
                   for e in h.barrier())


def test_onlookerignore_change_unwatches_and_silences(h: Harness) -> None:
    (h.root / "scratch").mkdir()
    h.barrier()
    assert str(h.root / "scratch") in h.src._path_wd
    (h.root / ".onlookerignore").write_text("scratch/\n*.tmp\n")
    h.collect(lambda got: str(h.root / "scratch") not in h.src._path_wd)
    (h.root / "scratch" / "x.csv").write_text("x")
    (h.root / "data" / "y.tmp").write_text("x")
    assert [e for e in h.barrier() if "scratch" in e.path or e.path.endswith(".tmp")] == []


def test_stop_is_prompt_and_idle_costs_nothing(h: Harness) -> None:
    h.barrier()
    thread = psutil.Process().threads()
    native = h.src._thread.native_id
    before = sum(t.user_time + t.system_time for t in thread if t.id == native)
    time.sleep(1.0)  # measuring idle cost, not synchronising
    after = sum(t.user_time + t.system_time for t in psutil.Process().threads()
                if t.id == native)
    assert after - before < 0.02


def test_watch_limit_is_reported_and_the_source_keeps_going(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (project / "full").mkdir()

    class Limited(inotify_simple.INotify):
        def add_watch(self, path, mask):
            if str(path).endswith("/full"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().add_watch(path, mask)

    monkeypatch.setattr(src_mod, "INotify", Limited)
    h = Harness(project)
    h.src.start()
    try:
        assert "inotify watch limit reached" in (h.src.problem or "")
        assert "fs.inotify.max_user_watches" in caplog.text
        h.collect(lambda got: any(isinstance(e, ev.Overflow) for e in got))
        (project / "data" / "still.csv").write_text("x")
        h.collect(h.has(ev.CLOSE_WRITE, project / "data" / "still.csv"))
    finally:
        h.src.stop()


QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")


def test_overflow_is_reported_and_folders_made_meanwhile_get_watched(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        original = QUEUE_LIMIT.read_text()
        QUEUE_LIMIT.write_text(original)
    except OSError:
        pytest.skip("cannot set fs.inotify.max_queued_events (needs root)")

    class TinyQueue(inotify_simple.INotify):
        def __init__(self, *a, **kw):
            # The limit is read when the instance is made: lower it for this one only.
            QUEUE_LIMIT.write_text("16")
            try:
                super().__init__(*a, **kw)
            finally:
                QUEUE_LIMIT.write_text(original)

    monkeypatch.setattr(src_mod, "INotify", TinyQueue)
    h = Harness(project)
    h.src.start()
    try:
        assert QUEUE_LIMIT.read_text() == original
        late = project / "made-during-overflow"
        # Hold the reader off the fd so the tiny queue surely overflows.
        with h.src._lock:
            for i in range(100):
                (project / "data" / f"f{i}").write_text("x")
            late.mkdir()
        h.collect(lambda got: any(isinstance(e, ev.Overflow) for e in got))
        h.collect(lambda got: str(late) in h.src._path_wd)
        (late / "after.csv").write_text("x")
        h.collect(h.has(ev.CLOSE_WRITE, late / "after.csv"))
    finally:
        h.src.stop()


def test_structure_only_mode_reports_no_reads(project: Path) -> None:
    h = Harness(project, reads=False)
    h.src.start()
    try:
        f = project / "data" / "a.csv"
        f.read_text()
        out = project / "data" / "b.csv"
        out.write_text("x")
        linked = project / "data" / "l.csv"
        os.link(out, linked)  # made with no open: fanotify would not see it
        held = open(project / "data" / "h.csv", "w")  # made, not yet closed
        marker = project / "data" / "c.csv"
        os.link(out, marker)  # its create comes after everything before it
        h.collect(h.has(ev.CREATE, marker))
        # Beside fanotify a pid-less close is no news, and neither is a file made and
        # written (fanotify reports its open and close with the pid): only the
        # structure fanotify cannot see comes.
        assert h.ops(out) == []
        assert h.ops(linked) == [ev.CREATE]
        assert h.ops(project / "data" / "h.csv") == [ev.CREATE]
        assert h.ops(f) == []
        held.close()
    finally:
        h.src.stop()


def test_a_folder_deleted_and_made_again_is_watched_again(h: Harness) -> None:
    import shutil

    d = h.root / "out"
    (d / "sub").mkdir(parents=True)
    h.barrier()
    shutil.rmtree(d)
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "again.txt").write_text("x")
    h.collect(h.has(ev.CLOSE_WRITE, d / "sub" / "again.txt"))
    h.collect(lambda got: h.src.watch_count == 4)  # root, data, out, out/sub
    (d / "sub" / "later.txt").write_text("x")
    h.collect(h.has(ev.CLOSE_WRITE, d / "sub" / "later.txt"))


def test_a_missing_project_is_a_clear_error(tmp_path: Path) -> None:
    h = Harness(tmp_path / "nope")
    with pytest.raises(src_mod.WatchError, match="cannot watch the project folder"):
        h.src.start()


def test_bytecode_reads_are_reported_but_nothing_else_in_pycache(tmp_path):
    """`import mod` served from __pycache__ opens only the .pyc: it must be seen."""
    import queue as _queue
    import subprocess
    import sys

    from onlooker.agent import config as _config
    from onlooker.agent.events import CLOSE_NOWRITE, FileEvent
    from onlooker.agent.rules.ignore import Ignore
    from onlooker.agent.sources.inotify import InotifySource

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import pkg.mod"], cwd=tmp_path, check=True, env=env)
    w = _config.DEFAULTS["watch"]
    q: _queue.Queue = _queue.Queue()
    src = InotifySource(q, tmp_path, Ignore(tmp_path, exclude=w["exclude"],
                                            outside_ignore=w["outside_ignore"]))
    src.start()
    try:
        subprocess.run([sys.executable, "-c", "import pkg.mod"], cwd=tmp_path, check=True,
                       env=env)
        pyc = next((tmp_path / "pkg" / "__pycache__").glob("mod.*.pyc"))
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            try:
                e = q.get(timeout=0.1)
            except _queue.Empty:
                continue
            if isinstance(e, FileEvent):
                seen.append((e.op, e.path))
                if (CLOSE_NOWRITE, str(pyc)) in seen:
                    break
        assert (CLOSE_NOWRITE, str(pyc)) in seen
        assert all("__pycache__" not in p or p.endswith(".pyc") for _, p in seen)
    finally:
        src.stop()


def test_bytecode_written_is_reported_for_a_first_import_and_a_recompile(tmp_path):
    """The evidence that a source was imported, not read as text: its bytecode written,
    into a cache folder made just then, or renamed into an existing one."""
    import queue as _queue
    import subprocess
    import sys

    from onlooker.agent import config as _config
    from onlooker.agent.events import CREATE, MOVED_TO, FileEvent
    from onlooker.agent.rules.ignore import Ignore
    from onlooker.agent.sources.inotify import InotifySource

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    w = _config.DEFAULTS["watch"]
    q: _queue.Queue = _queue.Queue()
    src = InotifySource(q, tmp_path, Ignore(tmp_path, exclude=w["exclude"],
                                            outside_ignore=w["outside_ignore"]))
    src.start()

    def written(deadline: float) -> set[str]:
        seen: set[str] = set()
        while time.monotonic() < deadline and not any("/mod." in p for p in seen):
            try:
                e = q.get(timeout=0.1)
            except _queue.Empty:
                continue
            if isinstance(e, FileEvent) and "__pycache__" in e.path and e.op in (
                    CREATE, MOVED_TO):
                seen.add(e.path)
        return seen

    try:
        subprocess.run([sys.executable, "-c", "import pkg.mod"], cwd=tmp_path, check=True,
                       env=env)
        first = written(time.monotonic() + 10)
        assert any(p.endswith(".pyc") and "/mod." in p for p in first), first
        (tmp_path / "pkg" / "mod.py").write_text("X = 22\n")  # stale cache: recompiled
        subprocess.run([sys.executable, "-c", "import pkg.mod"], cwd=tmp_path, check=True,
                       env=env)
        again = written(time.monotonic() + 10)
        assert any(p.endswith(".pyc") and "/mod." in p for p in again), again
    finally:
        src.stop()


def test_caught_up_keeps_up_while_idle_with_no_timed_wake_up(h: Harness, project: Path):
    # An idle reader blocks with no timeout (each timed wake-up costs CPU on a small VM);
    # asked, it is caught up with the clock all the same.
    from onlooker.agent import clock

    h.barrier()
    wakes = h.src._idle.gen
    before = clock.now()
    deadline = time.monotonic() + 5
    while h.src.caught_up < before:
        assert time.monotonic() < deadline, "caught_up stayed behind while idle"
        time.sleep(0.01)
    time.sleep(0.3)  # three of the old 100 ms looks
    assert h.src._idle.gen == wakes


def test_idle_wait_says_caught_up_only_for_a_blocked_reader_and_an_empty_queue(
        tmp_path: Path, monkeypatch):
    from onlooker.agent import clock
    from onlooker.agent.sources import reader

    ino = inotify_simple.INotify(nonblocking=True)
    try:
        ino.add_watch(str(tmp_path), inotify_simple.flags.CLOSE_WRITE)
        idle = reader.IdleWait()
        assert idle.caught_up(ino.fileno()) is None  # not blocked: it may be reading
        idle.enter()
        before = clock.now()
        got = idle.caught_up(ino.fileno())
        assert got is not None and got >= before
        (tmp_path / "x").write_text("x")  # queued, not read yet: not past it
        assert idle.caught_up(ino.fileno()) is None
        idle.leave()
        ino.read()
        idle.enter()
        assert idle.caught_up(ino.fileno()) is not None
        # the reader woke (and may have read) while the queue was asked about
        real = reader.queued_bytes
        monkeypatch.setattr(reader, "queued_bytes", lambda fd: (idle.leave(), real(fd))[1])
        assert idle.caught_up(ino.fileno()) is None
        monkeypatch.setattr(reader, "queued_bytes", real)
        idle.enter()
        assert idle.caught_up(-1) is None  # closed
    finally:
        ino.close()


def test_caught_up_keeps_up_after_a_move_out_of_the_project(h: Harness, project: Path,
                                                           tmp_path: Path):
    # A folder moved out leaves a MOVED_FROM with no MOVED_TO: the reader waits a moment
    # for the pair, gives up, and must then still answer `caught_up` while it blocks.
    from onlooker.agent import clock

    (project / "data" / "sub").mkdir()
    h.barrier()
    deadline = time.monotonic() + 5
    while str(project / "data" / "sub") not in h.src._path_wd:
        assert time.monotonic() < deadline, "the new folder was never watched"
        time.sleep(0.01)
    (project / "data" / "sub").rename(tmp_path / "gone")
    h.barrier()
    time.sleep(0.1)  # past the reader's wait for the pair (_MOVE_WAIT, 20 ms)
    before = clock.now()
    deadline = time.monotonic() + 5
    while h.src.caught_up < before:
        assert time.monotonic() < deadline, "caught_up stuck after a move out"
        time.sleep(0.01)
