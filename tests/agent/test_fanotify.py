"""The fanotify source against the real kernel (needs CAP_SYS_ADMIN; skipped otherwise)."""

from __future__ import annotations

import os
import py_compile
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onlooker.agent import events as ev
from onlooker.agent.config import DEFAULTS
from onlooker.agent.rules.ignore import Ignore
from onlooker.agent.sources import fanotify as fan_mod
from onlooker.agent.sources.fanotify import FanotifySource

OK, WHY = FanotifySource.probe()
pytestmark = [pytest.mark.privileged, pytest.mark.skipif(not OK, reason=WHY)]


class Harness:
    def __init__(self, root: Path, outside_ignore: list[str]) -> None:
        self.root = root
        self.q: queue.Queue = queue.Queue()
        self.run_pids: set[int] = set()
        ignore = Ignore(root, exclude=DEFAULTS["watch"]["exclude"], outside_ignore=outside_ignore)
        self.src = FanotifySource(self.q, root, ignore, ignore_pid=os.getpid(),
                                  run_pids=lambda: self.run_pids)
        self.got: list = []

    def collect(self, until: Callable[[list], bool], timeout: float = 10.0) -> list:
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

    def of(self, path: Path | str, pid: int | None = None) -> list[str]:
        return [e.op for e in self.got if isinstance(e, ev.FileEvent) and e.path == str(path)
                and (pid is None or e.pid == pid)]

    def child(self, code: str, *, run: bool = True) -> int:
        """Run Python code in a child that waits for a go line; returns its pid."""
        proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.stdin.readline()\n{code}"],
                                stdin=subprocess.PIPE, text=True)
        if run:
            self.run_pids.add(proc.pid)
        proc.communicate("go\n", timeout=20)
        assert proc.returncode == 0
        return proc.pid


@pytest.fixture(params=["names", "fds"])
def h(request: pytest.FixtureRequest, tmp_path: Path,
      monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    if request.param == "fds":  # the older kernels' way: an open fd per event
        real_init = fan_mod._init

        def no_names(names: bool = False) -> int:
            if names:
                raise fan_mod.FanotifyUnavailable("fanotify: no name reporting", 22)
            return real_init()

        monkeypatch.setattr(fan_mod, "_init", no_names)
    root = (tmp_path / "proj").resolve()
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.csv").write_text("1,2\n")
    # tmp_path lives under /tmp, which the default config ignores outside the project.
    harness = Harness(root, outside_ignore=["/usr", "/etc", "/lib", "/proc", "/dev", "/sys"])
    harness.src.start()
    assert harness.src._names == (request.param == "names")
    yield harness
    started = time.monotonic()
    harness.src.stop()
    assert time.monotonic() - started < 0.6


def test_child_reads_and_writes_carry_its_pid(h: Harness) -> None:
    src, out = h.root / "data" / "in.csv", h.root / "data" / "out.csv"
    pid = h.child(f"open({str(src)!r}).read(); open({str(out)!r}, 'w').write('y')", run=False)
    h.collect(lambda got: ev.CLOSE_WRITE in h.of(out, pid))
    # An open the kernel merged with its close comes as the close alone.
    assert h.of(src, pid) in ([ev.OPEN, ev.CLOSE_NOWRITE], [ev.CLOSE_NOWRITE])
    assert h.of(out, pid) in ([ev.OPEN, ev.CLOSE_WRITE], [ev.CLOSE_WRITE])


def test_the_agents_own_reads_are_not_reported(h: Harness) -> None:
    mine = h.root / "data" / "in.csv"
    mine.read_text()
    (h.root / "data" / "agent-wrote.txt").write_text("x")
    marker = h.root / "marker"
    pid = h.child(f"open({str(marker)!r}, 'w').close()")
    h.collect(lambda got: ev.CLOSE_WRITE in h.of(marker, pid))
    assert not [e for e in h.got if isinstance(e, ev.FileEvent) and e.pid == os.getpid()]


def test_outside_reads_only_for_run_processes_and_kept_paths(h: Harness, tmp_path: Path) -> None:
    data = tmp_path / "shared" / "train.csv"
    data.parent.mkdir()
    data.write_text("a\n")
    site = tmp_path / "lib" / "site-packages" / "mod.py"
    site.parent.mkdir(parents=True)
    site.write_text("")
    marker = h.root / "marker"
    reader = f"open({str(data)!r}).read(); open({str(site)!r}).read()"
    stranger = h.child(reader, run=False)
    runner = h.child(reader + f"; open({str(marker)!r}, 'w').close()")
    h.collect(lambda got: ev.CLOSE_WRITE in h.of(marker, runner))
    assert h.of(data, runner) in ([ev.OPEN, ev.CLOSE_NOWRITE], [ev.CLOSE_NOWRITE])
    assert h.of(data, stranger) == []
    assert h.of(site) == []
    assert not [e for e in h.got if isinstance(e, ev.FileEvent)
                and not e.path.startswith((str(h.root), str(tmp_path)))]


def test_deleted_and_skipped_paths_are_dropped(h: Harness) -> None:
    gone = h.root / "data" / "scratch.bin"
    (h.root / ".git").mkdir()
    marker = h.root / "marker"
    pid = h.child(
        f"import os\nf = open({str(gone)!r}, 'w'); os.unlink({str(gone)!r}); f.close()\n"
        f"open({str(h.root / '.git' / 'index')!r}, 'w').close()\n"
        f"open({str(marker)!r}, 'w').close()"
    )
    h.collect(lambda got: ev.CLOSE_WRITE in h.of(marker, pid))
    assert not any(" (deleted)" in e.path or ".git" in e.path
                   for e in h.got if isinstance(e, ev.FileEvent))
    # With an fd per event the path is read when the event is, and one read after
    # the unlink is dropped; with names the name at the time is reported.
    assert set(h.of(gone)) <= {ev.OPEN, ev.CLOSE_WRITE}


def test_a_renamed_folder_is_reported_under_its_new_name(h: Harness) -> None:
    old, new = h.root / "ckpt-tmp", h.root / "ckpt-1"
    old.mkdir()
    (old / "w.pt").write_text("w")
    pid = h.child(f"open({str(old / 'w.pt')!r}).read()")
    h.collect(lambda got: ev.CLOSE_NOWRITE in h.of(old / "w.pt", pid))
    os.rename(old, new)
    pid = h.child(f"open({str(new / 'w.pt')!r}).read()")
    h.collect(lambda got: ev.CLOSE_NOWRITE in h.of(new / "w.pt", pid))
    assert h.of(old / "w.pt", pid) == []


def test_a_project_modules_bytecode_read_is_reported(h: Harness) -> None:
    (h.root / "pkg").mkdir()
    (h.root / "pkg" / "helpers.py").write_text("X = 1\n")
    (h.root / "pkg" / "__init__.py").write_text("")
    for name in ("__init__.py", "helpers.py"):  # the cache a first import would write
        py_compile.compile(str(h.root / "pkg" / name), doraise=True)
    code = f"import sys; sys.path.insert(0, {str(h.root)!r}); import pkg.helpers"
    pid = h.child(code, run=False)  # reads the cache: the source is only stat'ed
    pyc = str(h.root / "pkg" / "__pycache__" / f"helpers.{sys.implementation.cache_tag}.pyc")
    h.collect(lambda got: ev.CLOSE_NOWRITE in h.of(pyc, pid))
    assert h.of(h.root / "pkg" / "helpers.py", pid) == []
