"""inotify folds a file's create and open into the close_write after them (one event
instead of three, `FileEvent.before`): the assembler must come to the same records as
from the events one by one."""

from __future__ import annotations

import pytest

from onlooker.agent.events import CLOSE_NOWRITE, CLOSE_WRITE, CREATE, OPEN, FileEvent

from .test_assembler import T0, exec_, finish_hashes, make


@pytest.fixture
def project(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print(1)\n")
    return tmp_path


def _feed(project, folded: bool, writes: list[tuple[str, tuple[str, ...]]],
          *, script_open: bool = True, reads_after: tuple[str, ...] = ()):
    """One unprivileged-tier run of src/train.py writing `writes` (path, ops before the
    close), folded or not; the records it leaves."""
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 100, ["python", "src/train.py"], project, T0, script_open=script_open)
    t = T0 + 0.01
    for rel, before in writes:
        path = f"{p}/{rel}"
        if folded:
            asm.handle(FileEvent(t, CLOSE_WRITE, path, before=before))
        else:
            for op in (*before, CLOSE_WRITE):
                asm.handle(FileEvent(t, op, path))
        t += 0.01
    for rel in reads_after:
        asm.handle(FileEvent(t, OPEN, f"{p}/{rel}"))
        asm.handle(FileEvent(t, CLOSE_NOWRITE, f"{p}/{rel}"))
        t += 0.01
    asm.tick(T0 + 1.0)
    asked = sorted(set(hasher.requests))  # (the hasher asks once per path queued)
    finish_hashes(asm, hasher, T0 + 1.1)
    asm.tick(T0 + 2.0)
    (run,) = asm.runs
    versions = sorted((v["path"], v.get("run_id")) for v in cat.versions.values())
    return {"asked": asked, "versions": versions, "links": sorted(cat.links),
            "basis": sorted(cat.basis.items()), "seen": run.script_seen,
            "read": run.script_read, "unattributed": asm.stats.unattributed,
            "no_run": asm.stats.no_run}


def test_files_made_and_written_record_the_same_folded_or_not(project):
    writes = [("out/a.bin", (CREATE, OPEN)), ("out/b.json", (CREATE, OPEN)),
              ("out/a.bin", (OPEN,))]
    one_by_one = _feed(project, False, writes)
    assert _feed(project, True, writes) == one_by_one
    assert one_by_one["versions"] and all(r is not None for _, r in one_by_one["versions"])


def _two_runs(project, folded: bool):
    """Two runs of one script, the first past its script's open, the second not yet,
    when something rewrites the script; then a file is written."""
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 100, ["python", "src/train.py"], project, T0)
    exec_(asm, 101, ["python", "src/train.py"], project, T0 + 0.01, script_open=False)
    t = T0 + 0.02
    for rel, before in (("src/train.py", (OPEN,)), ("out/d.txt", (CREATE, OPEN))):
        if folded:
            asm.handle(FileEvent(t, CLOSE_WRITE, f"{p}/{rel}", before=before))
        else:
            for op in (*before, CLOSE_WRITE):
                asm.handle(FileEvent(t, op, f"{p}/{rel}"))
        t += 0.01
    asm.tick(T0 + 1.0)
    finish_hashes(asm, hasher, T0 + 1.1)
    asm.tick(T0 + 2.0)
    return ([(r.script_seen, r.script_read) for r in asm.runs], sorted(cat.links),
            sorted(cat.basis.items()))


def test_a_script_rewritten_while_its_runs_start_is_taken_event_by_event(project):
    # The rewrite's open marks the run that had not shown itself yet and its close
    # unmarks every run not past its script's read: the next open decides, and the file
    # written meanwhile is no run's, folded or not.
    one_by_one = _two_runs(project, False)
    assert _two_runs(project, True) == one_by_one
    assert [seen for seen, _ in one_by_one[0]] == [False, False]
