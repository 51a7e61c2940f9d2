"""The assembler as pure logic: injected event records, a fake clock, no threads."""

from __future__ import annotations

import pytest

from onlooker.agent import config
from onlooker.agent.assembly.assembler import Assembler, Probes
from onlooker.agent.events import (
    CLOSE_NOWRITE,
    CLOSE_WRITE,
    CREATE,
    DELETE,
    MOVED_FROM,
    MOVED_TO,
    OPEN,
    FdSeen,
    FileEvent,
    HashDone,
    ProcExec,
    ProcExit,
    ProcFork,
)

from .fakes import FakeCatalog, FakeClock, FakeHasher, FakeIgnore, info

T0 = 1000.0


@pytest.fixture
def project(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print(1)\n")
    return tmp_path


def make(project, *, pids_known=False, probes=None, objects=None):
    cfg = config.load(project)
    cat, hasher = FakeCatalog(), FakeHasher()
    asm = Assembler(cfg, cat, hasher, FakeIgnore(project), probes=probes or Probes(),
                    tier="test", agent_started=T0 - 100, pids_known=pids_known,
                    clock=FakeClock(T0))
    return asm, cat, hasher


def fh(path, n):
    """A fake BLAKE3 hash, different per (path, n)."""
    return "blake3:" + (str(abs(hash((str(path), n)))) * 8)[:64]


def finish_hashes(asm, hasher, t, contents=None):
    """Answer every hash request the way the hasher would."""
    contents = contents or {}
    while hasher.requests:
        path = hasher.requests.pop(0)
        asm.handle(HashDone(t, path, contents.get(path, fh(path, 0)), size=10))


def exec_(asm, pid, argv, project, t, *, script_open=True, **kw):
    """A process starts; like a real interpreter it opens its script first."""
    asm.handle(ProcExec(t, info(pid, argv, cwd=str(project), started=t, **kw)))
    if script_open and len(argv) > 1 and argv[1].endswith(".py"):
        asm.handle(FileEvent(t + 0.001, OPEN, f"{project}/{argv[1]}",
                             pid=pid if asm.pids_known else None))


def test_one_run_inputs_outputs_params_and_status(project):
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 100, ["python", "src/train.py", "data/x.csv", "--lr", "0.1"], project, T0)
    asm.handle(FileEvent(T0 + 0.01, CLOSE_NOWRITE, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.02, CLOSE_NOWRITE, f"{p}/data/x.csv"))
    asm.handle(FileEvent(T0 + 0.03, CREATE, f"{p}/model.pkl"))
    asm.handle(FileEvent(T0 + 0.04, CLOSE_WRITE, f"{p}/model.pkl"))
    asm.handle(ProcExit(T0 + 0.05, 100, exit_code=0))
    asm.tick(T0 + 0.3)
    assert hasher.requests == []  # grace window still open
    asm.tick(T0 + 1.0)
    finish_hashes(asm, hasher, T0 + 1.1)
    asm.tick(T0 + 2.0)
    run = cat.runs[1]
    assert run["command"] == ["python", "src/train.py", "data/x.csv", "--lr", "0.1"]
    assert run["status"] == "completed" and run["exit_code"] == 0
    assert set(cat.io(1, "input")) == {"data/x.csv"}
    assert set(cat.io(1, "code")) == {"src/train.py"}
    assert set(cat.io(1, "output")) == {"model.pkl"}
    assert cat.params[1]["lr"] == (0.1, "argv")
    assert cat.params[1]["argv[1]"] == ("data/x.csv", "argv")
    assert cat.versions[next(iter(cat.versions))]["run_id"] is None  # inputs have no producer
    out = [v for v in cat.versions.values() if v["path"] == "model.pkl"]
    assert out[0]["run_id"] == 1


def test_file_event_before_process_is_seen_lands_on_the_run(project):
    asm, cat, hasher = make(project)
    p = str(project)
    # The poller sees the process 40 ms after it started and after its first write.
    asm.handle(FileEvent(T0 + 0.005, CLOSE_NOWRITE, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.01, CLOSE_WRITE, f"{p}/out.csv"))
    asm.handle(ProcExec(T0 + 0.05, info(7, ["python", "src/train.py"], cwd=p, started=T0)))
    asm.tick(T0 + 0.6)
    finish_hashes(asm, hasher, T0 + 0.7)
    assert set(cat.io(1, "output")) == {"out.csv"}


def test_changes_no_run_made_are_versions_without_a_run(project):
    asm, cat, hasher = make(project)
    p = str(project)
    asm.handle(FileEvent(T0, CLOSE_WRITE, f"{p}/data/new.csv"))
    asm.handle(FileEvent(T0, CLOSE_NOWRITE, f"{p}/data/old.csv"))  # a read by nobody
    asm.tick(T0 + 1)
    assert hasher.requests == [f"{p}/data/new.csv"]
    finish_hashes(asm, hasher, T0 + 1)
    assert [v["path"] for v in cat.versions.values()] == ["data/new.csv"]
    assert cat.versions[1]["run_id"] is None and cat.links == []


def test_concurrent_runs_with_pids_are_exact(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py", "--seed", "1"], project, T0)
    exec_(asm, 20, ["python", "src/train.py", "--seed", "2"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/a.pkl", pid=10))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/b.pkl", pid=20))
    asm.handle(FileEvent(T0 + 0.1, OPEN, f"{p}/shared.csv", pid=20))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/shared.csv", pid=20))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/other.csv", pid=999))  # not a run
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(1, "output")) == {"a.pkl"} and set(cat.io(1, "input")) == set()
    assert set(cat.io(2, "output")) == {"b.pkl"} and set(cat.io(2, "input")) == {"shared.csv"}


def test_concurrent_runs_without_pids_use_fd_evidence_or_share_it_labelled(project):
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    exec_(asm, 20, ["python", "src/train.py"], project, T0)
    asm.handle(FdSeen(T0 + 0.05, 20, f"{p}/b.pkl", True))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/b.pkl"))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/unknown.pkl"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(2, "output")) == {"b.pkl", "unknown.pkl"}
    assert set(cat.io(1, "output")) == {"unknown.pkl"}
    # which of the two wrote it is not known: both have it, labelled, neither produced it
    unknown = [vid for vid, v in cat.versions.items() if v["path"] == "unknown.pkl"]
    assert unknown and cat.versions[unknown[0]]["run_id"] is None
    assert {cat.basis[k] for k in cat.links if k[1] == unknown[0]} == {"ambiguous"}
    b = next(vid for vid, v in cat.versions.items() if v["path"] == "b.pkl")
    assert cat.versions[b]["run_id"] == 2 and cat.basis[(2, b, "output", 2)] == "fd"
    assert asm.stats.unattributed == 1


def test_a_script_two_concurrent_runs_name_is_code_of_both(project):
    # `python worker.py alpha & python worker.py beta &` without pids: each read of the
    # script could be either run's, and both surely read it.
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/worker.py", "alpha"], project, T0)
    exec_(asm, 20, ["python", "src/worker.py", "beta"], project, T0 + 0.01)
    for t in (T0 + 0.002, T0 + 0.012):
        asm.handle(FileEvent(t, CLOSE_NOWRITE, f"{p}/src/worker.py"))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/data/shared.csv"))  # named by none
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(1, "code")) == set(cat.io(2, "code")) == {"src/worker.py"}
    # either may have read it: both have it, labelled as a guess
    assert set(cat.io(1, "input")) == set(cat.io(2, "input")) == {"data/shared.csv"}
    assert {b for (r, v, ro, s), b in cat.basis.items() if ro == "input"} == {"ambiguous"}


def test_a_script_read_as_the_run_before_it_ends_is_the_new_runs_own(project):
    # A sweep's runs start a moment apart: run 2 reads its script while run 1, which
    # read the same script, is ending. The close is run 2's (or a re-read of run 1's):
    # either way run 2 surely read its script, not as a guess shared with run 1.
    asm, cat, hasher = make(project)
    p = str(project)
    script = f"{p}/src/train.py"
    exec_(asm, 10, ["python", "src/train.py", "--seed", "1"], project, T0)
    asm.handle(FileEvent(T0 + 0.002, CLOSE_NOWRITE, script))
    exec_(asm, 20, ["python", "src/train.py", "--seed", "2"], project, T0 + 0.05,
          script_open=False)
    asm.handle(ProcExit(T0 + 0.10, 10, exit_code=0))
    asm.handle(FileEvent(T0 + 0.15, OPEN, script))
    asm.handle(FileEvent(T0 + 0.16, CLOSE_NOWRITE, script))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    asm.tick(T0 + 3)
    assert set(cat.io(1, "code")) == set(cat.io(2, "code")) == {"src/train.py"}
    assert cat.basis[next(k for k in cat.links if k[0] == 2)] == "argv"
    assert asm.stats.unattributed == 0


def test_a_shared_read_goes_to_the_readers_seen_and_a_close_none_explains_to_all(project):
    # A sweep of three reads one data file, named by none. fd sampling saw run 1 and run
    # 2 holding it (each sighting explains one close); a third close is unexplained: it
    # may be anyone's, so every candidate has the file, the unseen one labelled.
    asm, cat, hasher = make(project)
    p = str(project)
    for pid in (10, 20, 30):
        exec_(asm, pid, ["python", "src/train.py", "--seed", str(pid)], project, T0)
    data = f"{p}/data/train.csv"
    asm.handle(FdSeen(T0 + 0.10, 10, data, False))
    asm.handle(FdSeen(T0 + 0.10, 20, data, False))
    asm.handle(FileEvent(T0 + 0.15, CLOSE_NOWRITE, data))
    asm.handle(FileEvent(T0 + 0.16, CLOSE_NOWRITE, data))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    vid = next(v for v, row in cat.versions.items() if row["path"] == "data/train.csv")
    got = {r: cat.basis[(r, v, ro, s)] for r, v, ro, s in cat.links if v == vid}
    assert got == {1: "fd", 2: "fd"}  # two closes, two sightings: run 3 read nothing
    asm.handle(FileEvent(T0 + 1.2, CLOSE_NOWRITE, data))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    got = {r: cat.basis[(r, v, ro, s)] for r, v, ro, s in cat.links if v == vid}
    assert got == {1: "fd", 2: "fd", 3: "ambiguous"}
    assert asm.stats.unattributed == 1


def test_a_folder_above_everything_in_argv_names_no_file(project):
    # `--root .` names the whole project: no evidence that a file in it is that run's
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py", "--root", "."], project, T0)
    exec_(asm, 20, ["python", "src/train.py", "--root", "..", "--out", "runs/b"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/runs/a/model.bin"))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/runs/b/model.bin"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(2, "output")) == {"runs/a/model.bin", "runs/b/model.bin"}
    assert set(cat.io(1, "output")) == {"runs/a/model.bin"}
    assert {cat.basis[k] for k in cat.links if k[0] == 1} == {"ambiguous"}


def test_a_read_sighting_after_the_close_does_not_explain_it(project):
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py", "--seed", "1"], project, T0)
    exec_(asm, 20, ["python", "src/train.py", "--seed", "2"], project, T0)
    data = f"{p}/data/train.csv"
    asm.handle(FileEvent(T0 + 0.15, CLOSE_NOWRITE, data))  # run 2's quick read
    asm.handle(FdSeen(T0 + 0.30, 10, data, False))  # run 1 opened it after that close
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(1, "input")) == set(cat.io(2, "input")) == {"data/train.csv"}
    assert {b for (r, v, ro, s), b in cat.basis.items()} == {"fd", "ambiguous"}
    assert cat.basis[next(k for k in cat.links if k[0] == 2)] == "ambiguous"


def test_a_sighting_of_the_only_candidate_is_spent_by_its_close(project):
    # prepare, then train, each reading params.yaml. fd sampling caught prepare holding
    # it; that close had one candidate. Polling saw prepare's end late and last saw
    # train alive just before its own read: the unspent sighting must not give train's
    # read to prepare (which already has the file, so train's would vanish).
    asm, cat, hasher = make(project)
    p = str(project)
    params = f"{p}/params.yaml"
    exec_(asm, 10, ["python", "src/prepare.py"], project, T0)
    asm.handle(FdSeen(T0 + 0.05, 10, params, False))
    asm.handle(FileEvent(T0 + 0.06, CLOSE_NOWRITE, params))
    exec_(asm, 20, ["python", "src/train.py"], project, T0 + 0.28)
    asm.handle(ProcExit(T0 + 0.30, 10, after=T0 + 0.25))
    asm.handle(FileEvent(T0 + 0.45, CLOSE_NOWRITE, params))
    asm.handle(ProcExit(T0 + 0.50, 20, after=T0 + 0.44))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    asm.tick(T0 + 3)
    assert set(cat.io(1, "input")) == set(cat.io(2, "input")) == {"params.yaml"}
    assert {b for (r, v, ro, s), b in cat.basis.items() if ro == "input"} == {"window"}


def test_a_folder_two_sequential_runs_name_is_read_by_the_later_only(project):
    # train then evaluate, both given data/features: polling saw train's end late, so
    # evaluate's read falls in train's window; it is still evaluate's alone.
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py", "data/features"], project, T0)
    asm.handle(FileEvent(T0 + 0.002, CLOSE_NOWRITE, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/data/features/train.pkl"))
    exec_(asm, 20, ["python", "src/evaluate.py", "data/features"], project, T0 + 0.52)
    asm.handle(ProcExit(T0 + 0.55, 10, after=T0 + 0.5))
    asm.handle(FileEvent(T0 + 0.522, CLOSE_NOWRITE, f"{p}/src/evaluate.py"))
    asm.handle(FileEvent(T0 + 0.6, CLOSE_NOWRITE, f"{p}/data/features/test.pkl"))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    assert set(cat.io(1, "input")) == {"data/features/train.pkl"}
    assert set(cat.io(2, "input")) == {"data/features/test.pkl"}


def test_a_script_copied_into_place_just_before_its_run_is_not_the_runs_output(project):
    # `cp src/train.py src/copy1.py; python src/copy1.py`: without pids, and with event
    # times that lag, cp's events fall inside the run's window. cp's open of the script
    # is a writer's (it ends in a close-write), so the run shows itself only later.
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/copy1.py", "--out", "models/q.pkl"], project, T0,
          script_open=False)
    asm.handle(FileEvent(T0 + 0.010, OPEN, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.012, OPEN, f"{p}/src/copy1.py"))
    asm.handle(FileEvent(T0 + 0.013, CLOSE_WRITE, f"{p}/src/copy1.py"))
    asm.handle(FileEvent(T0 + 0.014, CLOSE_NOWRITE, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.020, OPEN, f"{p}/src/copy1.py"))
    asm.handle(FileEvent(T0 + 0.021, CLOSE_NOWRITE, f"{p}/src/copy1.py"))
    asm.handle(FileEvent(T0 + 0.100, CLOSE_WRITE, f"{p}/models/q.pkl"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(1, "code")) == {"src/copy1.py"}
    assert set(cat.io(1, "output")) == {"models/q.pkl"}
    assert cat.io(1, "input") == {}


def test_argv_named_folder_breaks_a_tie(project):
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py", "out/a"], project, T0)
    exec_(asm, 20, ["python", "src/train.py", "out/b"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/out/b/model.pt"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(2, "output")) == {"out/b/model.pt"}


def test_temp_file_renamed_into_place_is_one_output(project):
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/model.pt.tmp"))
    asm.handle(FileEvent(T0 + 0.2, MOVED_FROM, f"{p}/model.pt.tmp", cookie=5))
    asm.handle(FileEvent(T0 + 0.2, MOVED_TO, f"{p}/model.pt", cookie=5))
    asm.handle(ProcExit(T0 + 0.3, 10, exit_code=0))
    asm.tick(T0 + 1)
    # the temp file vanished before it could be hashed
    asm.handle(HashDone(T0 + 1, f"{p}/model.pt.tmp", None, error="vanished"))
    hasher.requests.remove(f"{p}/model.pt.tmp")
    finish_hashes(asm, hasher, T0 + 1)
    asm.tick(T0 + 2)
    assert set(cat.io(1, "output")) == {"model.pt"}


def test_temp_file_hashed_then_deleted_is_unlinked(project):
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/scratch.bin"))
    asm.tick(T0 + 0.7)
    finish_hashes(asm, hasher, T0 + 0.7)
    assert set(cat.io(1, "output")) == {"scratch.bin"}
    asm.handle(FileEvent(T0 + 0.8, DELETE, f"{p}/scratch.bin"))
    asm.tick(T0 + 1.5)
    assert cat.io(1, "output") == {}


@pytest.mark.parametrize("pids_known", [True, False])
def test_an_output_removed_after_the_run_ended_stays_its_output(project, pids_known):
    # `bash pipe.sh; rm x.csv` or `make clean`: the run made the file all the same.
    asm, cat, hasher = make(project, pids_known=pids_known)
    p = str(project)
    exec_(asm, 10, ["python", "src/gen.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/x.csv", pid=10 if pids_known else None))
    asm.tick(T0 + 0.7)
    finish_hashes(asm, hasher, T0 + 0.7, {f"{p}/x.csv": fh("x", 1)})
    asm.handle(ProcExit(T0 + 1.0, 10, exit_code=0, after=T0 + 0.98 if not pids_known else None))
    asm.handle(FileEvent(T0 + 1.05, DELETE, f"{p}/x.csv"))
    asm.tick(T0 + 2)
    assert cat.io(1, "output") == {"x.csv": fh("x", 1)}


def test_read_then_rewritten_is_the_input_it_was_and_the_output_it_became(project):
    # A checkpoint resumed from and then overwritten: lineage needs both versions.
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, OPEN, f"{p}/state.json", pid=10))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/state.json", pid=10))
    asm.tick(T0 + 0.7)
    finish_hashes(asm, hasher, T0 + 0.7, {f"{p}/state.json": fh("s", 1)})
    assert set(cat.io(1, "input")) == {"state.json"}
    asm.handle(FileEvent(T0 + 0.8, CLOSE_WRITE, f"{p}/state.json", pid=10))
    asm.tick(T0 + 1.5)
    finish_hashes(asm, hasher, T0 + 1.5, {f"{p}/state.json": fh("s", 2)})
    assert cat.io(1, "input") == {"state.json": fh("s", 1)}
    assert cat.io(1, "output") == {"state.json": fh("s", 2)}


def test_a_read_hashed_after_the_file_changed_again_is_no_input(project):
    # Loaded, then overwritten before the grace window let it be hashed: the content
    # hashed is not what was read, and must not pass for it.
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    for name in ("ckpt.pkl", "params.json"):
        asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/{name}", pid=10))
    asm.tick(T0 + 0.7)
    later = int(asm.clock.to_wall(T0 + 0.3) * 1e9)  # rewritten after the read
    earlier = int(asm.clock.to_wall(T0 - 5) * 1e9)
    for name, mtime in (("ckpt.pkl", later), ("params.json", earlier)):
        hasher.requests.remove(f"{p}/{name}")
        asm.handle(HashDone(T0 + 0.7, f"{p}/{name}", fh(name, 1), size=10, mtime_ns=mtime))
    asm.tick(T0 + 1)
    assert set(cat.io(1, "input")) == {"params.json"}


def test_a_hash_begun_before_a_rewrite_was_closed_does_not_answer_for_it(project):
    # The hasher was already reading the old content when the run's close came: that
    # result is not the run's output; the next one (the hasher looks again) is.
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/ckpt.pkl", pid=10))
    asm.clock.t = T0 + 0.7
    asm.tick(T0 + 0.7)
    hasher.requests.remove(f"{p}/ckpt.pkl")
    asm.handle(HashDone(T0 + 0.7, f"{p}/ckpt.pkl", fh("c", 0), size=10,
                        began=T0 + 0.6))  # begun before the request
    assert cat.io(1, "output") == {} and not cat.versions
    assert asm.busy()  # still waiting for its own result
    asm.handle(HashDone(T0 + 0.8, f"{p}/ckpt.pkl", fh("c", 1), size=10, began=T0 + 0.8))
    assert cat.io(1, "output") == {"ckpt.pkl": fh("c", 1)}
    assert not asm.busy()


def test_a_file_written_then_read_back_is_an_output_only(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/model.pkl", pid=10))
    asm.tick(T0 + 0.7)
    finish_hashes(asm, hasher, T0 + 0.7, {f"{p}/model.pkl": fh("m", 1)})
    asm.handle(FileEvent(T0 + 0.8, CLOSE_NOWRITE, f"{p}/model.pkl", pid=10))  # reloaded
    asm.tick(T0 + 1.5)
    finish_hashes(asm, hasher, T0 + 1.5, {f"{p}/model.pkl": fh("m", 1)})
    asm.handle(FileEvent(T0 + 1.6, CLOSE_WRITE, f"{p}/model.pkl", pid=10))  # and rewritten
    asm.tick(T0 + 2.5)
    finish_hashes(asm, hasher, T0 + 2.5, {f"{p}/model.pkl": fh("m", 2)})
    assert cat.io(1, "input") == {}
    assert cat.io(1, "output") == {"model.pkl": fh("m", 2)}


def test_steps_tree_exit_codes_and_workers(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["bash", "run.sh"], cwd=p, started=T0, exe="/bin/bash")))
    asm.handle(ProcExec(T0 + 0.1, info(11, ["python", "src/train.py"], ppid=10, cwd=p,
                                       started=T0 + 0.1)))
    asm.handle(ProcFork(T0 + 0.2, 11, 12))  # a dataloader worker, no exec
    asm.handle(FileEvent(T0 + 0.3, CLOSE_NOWRITE, f"{p}/data/x.csv", pid=12))
    asm.handle(ProcExit(T0 + 0.4, 12, exit_code=0))
    asm.handle(ProcExit(T0 + 0.5, 11, exit_code=3))
    asm.handle(ProcExit(T0 + 0.6, 10, exit_code=3))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    assert len(cat.runs) == 1
    assert [s["argv"] for s in cat.steps.values()] == [["bash", "run.sh"],
                                                       ["python", "src/train.py"]]
    assert cat.steps[2]["parent_step_id"] == 1
    assert cat.steps[2]["status"] == "failed" and cat.steps[2]["exit_code"] == 3
    assert cat.runs[1]["status"] == "failed" and cat.runs[1]["exit_code"] == 3
    assert [(v, s) for _, v, r, s in cat.links if r == "input"] == [(1, 2)]  # the step


@pytest.mark.parametrize("forked_first", [True, False])
def test_onlooker_run_inside_a_run_is_never_one_of_its_steps(project, forked_first):
    # `onlooker show 3 --json | ...` in a script that is a run: the CLI reads its own
    # code and the catalog; none of it is the run's.
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["bash", "run.sh"], cwd=p, started=T0, exe="/bin/bash")))
    if forked_first:  # netlink: the fork is seen before the exec
        asm.handle(ProcFork(T0 + 0.1, 10, 11))
    asm.handle(ProcExec(T0 + 0.1, info(11, ["/venv/bin/python3", "/venv/bin/onlooker", "show",
                                            "3", "--json"], ppid=10, cwd=p,
                                       started=T0 + 0.1)))
    asm.handle(FileEvent(T0 + 0.2, CLOSE_NOWRITE, f"{p}/src/helper.py", pid=11))
    asm.handle(ProcExit(T0 + 0.3, 11, exit_code=0))
    asm.handle(ProcExit(T0 + 0.4, 10, exit_code=0))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    assert [s["argv"] for s in cat.steps.values()] == [["bash", "run.sh"]]
    assert cat.links == []


def test_a_run_through_a_pyenv_shim_is_named_by_the_program_it_runs(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    (project / "train.py").write_text("print(1)\n")  # the shim names it: a run from the start
    shim = ["bash", "/root/.pyenv/libexec/pyenv", "exec", "python3", "train.py", "--lr", "0.1"]
    asm.handle(ProcExec(T0, info(10, shim, cwd=p, started=T0, exe="/bin/bash")))
    assert cat.runs[1]["command"] == shim
    real = ["/root/.pyenv/versions/3.11.7/bin/python3", "train.py", "--lr", "0.1"]
    asm.handle(ProcExec(T0 + 0.05, info(10, real, cwd=p, started=T0)))
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.tick(T0 + 2)
    assert cat.runs[1]["command"] == real
    assert cat.params[1]["lr"] == (0.1, "argv")


def test_signal_and_unknown_exit(project):
    asm, cat, _ = make(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    exec_(asm, 20, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 1, 10, signal=9))
    asm.handle(ProcExit(T0 + 1, 20))
    asm.tick(T0 + 3)
    assert cat.runs[1]["status"] == "failed" and cat.runs[1]["signal"] == 9
    assert cat.runs[2]["status"] == "ended" and cat.runs[2]["exit_code"] is None


def test_processes_that_are_not_runs(project):
    asm, cat, _ = make(project)
    p = str(project)
    exec_(asm, 10, ["bash"], project, T0, exe="/bin/bash")  # an interactive shell
    exec_(asm, 11, ["git", "status"], project, T0, exe="/usr/bin/git")
    exec_(asm, 12, ["vim", "src/train.py"], project, T0, exe="/usr/bin/vim")
    asm.handle(ProcExec(T0, info(13, ["python", "/elsewhere/x.py"], cwd="/elsewhere",
                                 started=T0)))
    # started long before the agent: not ours
    asm.handle(ProcExec(T0, info(14, ["python", "src/train.py"], cwd=p, started=T0 - 500)))
    assert cat.runs == {}
    # but a script started from that interactive shell is a run
    exec_(asm, 15, ["python", "src/train.py"], project, T0 + 1, ppid=10)
    assert len(cat.runs) == 1


def test_exec_in_place_makes_a_new_step(project):
    asm, cat, _ = make(project)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["sh", "run.sh"], cwd=p, started=T0, exe="/bin/sh")))
    asm.handle(ProcExec(T0 + 0.5, info(10, ["python", "src/train.py"], cwd=p, started=T0)))
    assert [s["argv"] for s in cat.steps.values()] == [["sh", "run.sh"],
                                                       ["python", "src/train.py"]]
    assert cat.steps[1]["status"] == "ended"


def test_pyc_open_maps_to_its_source_as_code(project):
    asm, cat, hasher = make(project)
    p = str(project)
    (project / "src" / "util.py").write_text("X = 1\n")
    (project / "src" / "__pycache__").mkdir()
    pyc = project / "src" / "__pycache__" / "util.cpython-311.pyc"
    pyc.write_bytes(b"\x00")
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, str(pyc)))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, str(pyc)))  # python caching bytecode
    asm.tick(T0 + 1)
    assert hasher.requests == [f"{p}/src/util.py"]
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(1, "code")) == {"src/util.py"}


def _bytecode_run(project, *, pids_known, environ=(), argv=("python", "src/train.py")):
    """A run that imports src/util.py (its bytecode written) and whose library reads
    src/other.py as text (a hash of the project's scripts): returns (catalog, run id)."""
    asm, cat, hasher = make(project, pids_known=pids_known)
    p = str(project)
    for name in ("util", "other"):
        (project / "src" / f"{name}.py").write_text("X = 1\n")
    (project / "src" / "__pycache__").mkdir(exist_ok=True)
    pid = 10 if pids_known else None
    asm.handle(ProcExec(T0, info(10, list(argv), cwd=p, started=T0, environ=environ)))
    asm.handle(FileEvent(T0 + 0.001, OPEN, f"{p}/src/train.py", pid=pid))
    asm.handle(FileEvent(T0 + 0.01, CLOSE_NOWRITE, f"{p}/src/train.py", pid=pid))
    asm.handle(FileEvent(T0 + 0.02, CLOSE_NOWRITE, f"{p}/src/util.py", pid=pid))
    cache = f"{p}/src/__pycache__/util.cpython-311.pyc"
    if pids_known:  # fanotify names the temporary file the import system writes
        asm.handle(FileEvent(T0 + 0.03, CLOSE_WRITE, cache + ".140213", pid=pid))
    else:  # inotify sees it renamed into place
        asm.handle(FileEvent(T0 + 0.03, MOVED_TO, cache))
    asm.handle(FileEvent(T0 + 0.04, CLOSE_NOWRITE, f"{p}/src/other.py", pid=pid))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert len(cat.links) == 3  # hashed while the run is alive: provisional roles
    asm.handle(ProcExit(T0 + 1.1, 10, exit_code=0))
    asm.tick(T0 + 2)
    assert cat.runs[1]["status"] == "completed"
    return asm, cat


@pytest.mark.parametrize("pids_known", [True, False], ids=["fanotify", "inotify"])
def test_a_source_read_as_text_is_meta_and_an_imported_one_code(project, pids_known):
    asm, cat = _bytecode_run(project, pids_known=pids_known)
    assert set(cat.io(1, "code")) == {"src/train.py", "src/util.py"}
    assert set(cat.io(1, "meta")) == {"src/other.py"}
    (key,) = [k for k in cat.links if k[2] == "meta"]
    assert cat.access[key] == "read"
    assert set(cat.io(1, "input")) == set()
    assert cat.versions[key[1]]["path"] == "src/other.py"  # versioned all the same


def test_bytecode_listed_before_its_sources_read_is_still_evidence(project):
    """A cache folder made during the run is listed when its watch is placed, which can
    report a module's new .pyc before the read of its source comes in the stream."""
    asm, cat, hasher = make(project)
    p = str(project)
    for name in ("conf", "other"):
        (project / "src" / f"{name}.py").write_text("X = 1\n")
    (project / "src" / "__pycache__").mkdir()
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.01, CLOSE_NOWRITE, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.02, CREATE, f"{p}/src/__pycache__/conf.cpython-311.pyc"))
    asm.handle(FileEvent(T0 + 0.03, CLOSE_NOWRITE, f"{p}/src/conf.py"))
    asm.handle(FileEvent(T0 + 0.04, CLOSE_NOWRITE, f"{p}/src/other.py"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    asm.handle(ProcExit(T0 + 1.1, 10, exit_code=0))
    asm.tick(T0 + 2)
    assert set(cat.io(1, "code")) == {"src/train.py", "src/conf.py"}
    assert set(cat.io(1, "meta")) == {"src/other.py"}


@pytest.mark.parametrize("how", ["env", "flag", "prefix"])
def test_without_bytecode_to_see_every_source_read_is_code(project, how):
    env = {"env": (("PYTHONDONTWRITEBYTECODE", "1"),),
           "prefix": (("PYTHONPYCACHEPREFIX", "/tmp/pyc"),)}.get(how, ())
    argv = ("python", "-B", "src/train.py") if how == "flag" else ("python", "src/train.py")
    asm, cat = _bytecode_run(project, pids_known=True, environ=env, argv=argv)
    assert set(cat.io(1, "code")) == {"src/train.py", "src/util.py", "src/other.py"}
    assert set(cat.io(1, "meta")) == set()


def test_a_step_script_is_code_without_bytecode(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    (project / "src" / "prep.py").write_text("print(2)\n")
    asm.handle(ProcExec(T0, info(10, ["bash", "run.sh"], cwd=p, started=T0)))
    asm.handle(ProcFork(T0 + 0.01, 10, 11))
    asm.handle(ProcExec(T0 + 0.02, info(11, ["python", "src/prep.py"], ppid=10, cwd=p,
                                        started=T0 + 0.02)))
    asm.handle(FileEvent(T0 + 0.03, CLOSE_NOWRITE, f"{p}/src/prep.py", pid=11))
    asm.handle(ProcExit(T0 + 0.1, 11, exit_code=0))
    asm.handle(ProcExit(T0 + 0.2, 10, exit_code=0))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    asm.tick(T0 + 2)
    assert set(cat.io(1, "code")) == {"src/prep.py"}


def _reads_without_bytecode(project, *, imports_util: bool):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    for name in ("util", "other"):
        (project / "src" / f"{name}.py").write_text("X = 1\n")
    (project / "src" / "__pycache__").mkdir(exist_ok=True)
    pyc = project / "src" / "__pycache__" / "util.cpython-311.pyc"
    pyc.write_bytes(b"\x00")
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.01, CLOSE_NOWRITE, f"{p}/src/train.py", pid=10))
    if imports_util:  # util imported from its cached bytecode
        asm.handle(FileEvent(T0 + 0.015, CLOSE_NOWRITE, str(pyc), pid=10))
    asm.handle(FileEvent(T0 + 0.02, CLOSE_NOWRITE, f"{p}/src/other.py", pid=10))
    asm.handle(ProcExit(T0 + 0.1, 10, exit_code=0))
    asm.tick(T0 + 1)
    assert cat.runs[1]["status"] == "completed"
    finish_hashes(asm, hasher, T0 + 1.1)  # the hasher was behind: results after the end
    return cat


def test_a_source_hashed_after_the_run_closed_is_settled_then(project):
    cat = _reads_without_bytecode(project, imports_util=True)
    assert set(cat.io(1, "code")) == {"src/train.py", "src/util.py"}
    assert set(cat.io(1, "meta")) == {"src/other.py"}


def test_a_run_that_left_no_bytecode_at_all_keeps_its_sources_as_code(project):
    """A project folder the run cannot cache bytecode in (a read-only mount): its
    imports look like reads, so none is taken for a text read."""
    cat = _reads_without_bytecode(project, imports_util=False)
    assert set(cat.io(1, "code")) == {"src/train.py", "src/other.py"}
    assert set(cat.io(1, "meta")) == set()


def test_config_read_becomes_params(project):
    blob = b"train:\n  seed: 7\n  lr: 0.01\n"
    probes = Probes(read_object=lambda h: blob)
    asm, cat, hasher = make(project, probes=probes)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/params.yaml"))
    asm.tick(T0 + 1)
    path = hasher.requests.pop()
    asm.handle(HashDone(T0 + 1, path, fh(path, 0), size=len(blob), stored=True, head=blob))
    assert cat.params[1]["params.yaml:train.seed"] == (7, "params.yaml")
    assert cat.params[1]["params.yaml:train.lr"] == (0.01, "params.yaml")
    assert set(cat.io(1, "input")) == {"params.yaml"}


PREP = (b"import argparse\nap = argparse.ArgumentParser()\nap.add_argument('src')\n"
        b"ap.add_argument('dst')\nap.add_argument('--shuffle', action='store_true')\n"
        b"args = ap.parse_args()\n")


@pytest.mark.parametrize("via_make", [False, True], ids=["run", "step"])
def test_positionals_take_the_names_the_scripts_parser_declares(project, via_make):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    (project / "src" / "prep.py").write_bytes(PREP)
    argv = ["python", "src/prep.py", "--shuffle", "data/raw.csv", "out", "--seed", "3"]
    pid = 10
    if via_make:
        asm.handle(ProcExec(T0, info(9, ["make", "prep"], cwd=p, started=T0)))
        asm.handle(ProcFork(T0 + 0.01, 9, 10))
    asm.handle(ProcExec(T0 + 0.02, info(pid, argv, ppid=9 if via_make else 1, cwd=p,
                                        started=T0 + 0.02)))
    first = {k: v for k, (v, _) in cat.params[1].items()}
    assert first["shuffle"] == "data/raw.csv"  # before the script is known: a guess
    asm.handle(FileEvent(T0 + 0.03, CLOSE_NOWRITE, f"{p}/src/prep.py", pid=pid))
    asm.tick(T0 + 1)
    path = hasher.requests.pop()
    asm.handle(HashDone(T0 + 1, path, fh(path, 0), size=len(PREP), stored=True, head=PREP))
    got = {k: v for k, (v, src) in cat.params[1].items() if src == "argv"}
    want = {"shuffle": True, "src": "data/raw.csv", "dst": "out", "seed": 3}
    assert got == (dict(want, **{"argv[1]": "prep"}) if via_make else want), got


def test_secrets_never_reach_the_catalog(project):
    asm, cat, _ = make(project)
    exec_(asm, 10, ["python", "src/train.py", "--api-key", "sk-abcdefghijklmnopqrstuvwx",
                    "--lr", "0.1"], project, T0,
          environ=(("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz"), ("OMP_NUM_THREADS", "4")))
    assert "sk-abcdefghijklmnopqrstuvwx" not in repr(cat.runs) + repr(cat.steps)
    assert "sk-abcdefghijklmnopqrstuvwx" not in repr(cat.params)
    assert cat.params[1]["env:OMP_NUM_THREADS"][0] in (4, "4")


def test_rescan_change_lands_on_the_only_run_alive_at_its_mtime(project):
    asm, cat, _ = make(project)
    p = str(project)
    now = asm.clock.t = T0 + 10
    asm.handle(ProcExec(now, info(10, ["python", "src/train.py"], cwd=p, started=now - 5)))
    mtime_ns = int(asm.clock.to_wall(now - 2) * 1e9)  # written 2 s ago, while the run was alive
    asm.handle(HashDone(now, f"{p}/lost.bin", fh("lost", 0), size=1, mtime_ns=mtime_ns))
    assert set(cat.io(1, "output")) == {"lost.bin"}


def test_outside_inputs_from_argv(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("imagenet") / "train.csv"
    outside.write_text("a\n")
    asm, cat, hasher = make(project)
    exec_(asm, 10, ["python", "src/train.py", "--data", str(outside)], project, T0)
    assert str(outside) in hasher.requests
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(1, "input")) == {str(outside)}


def test_an_outside_input_changed_long_before_its_read_is_linked(project, tmp_path_factory):
    # Staleness is judged against the read's own time, not the last file event's.
    outside = tmp_path_factory.mktemp("shared") / "train.csv"
    outside.write_text("a\n")
    asm, cat, hasher = make(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    asm.handle(FdSeen(T0 + 60, 10, str(outside), False))  # regenerated at T0+30, read now
    hasher.requests.remove(str(outside))
    asm.handle(HashDone(T0 + 61, str(outside), fh("t", 1), size=2,
                        mtime_ns=int(asm.clock.to_wall(T0 + 30) * 1e9)))
    assert cat.io(1, "input") == {str(outside): fh("t", 1)}


def test_sequential_runs_when_polling_sees_the_first_end_late(project):
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/prepare.py"], project, T0)
    # prepare was last seen alive at T0+0.10, its end noticed at T0+0.14; featurize was
    # forked at T0+0.12 and read params.yaml at T0+0.13.
    exec_(asm, 11, ["python", "src/featurize.py"], project, T0 + 0.12)
    asm.handle(FileEvent(T0 + 0.13, CLOSE_NOWRITE, f"{p}/params.yaml"))
    asm.handle(ProcExit(T0 + 0.14, 10, after=T0 + 0.10))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert cat.io(1, "input") == {} and set(cat.io(2, "input")) == {"params.yaml"}


def test_truly_overlapping_runs_without_evidence_share_it_labelled(project):
    asm, cat, hasher = make(project, probes=Probes(read_object=lambda h: b"lr: 0.1\n"))
    p = str(project)
    exec_(asm, 10, ["python", "src/a.py"], project, T0)
    exec_(asm, 11, ["python", "src/b.py"], project, T0 + 0.05)
    asm.handle(FileEvent(T0 + 0.13, CLOSE_NOWRITE, f"{p}/params.yaml"))
    asm.handle(ProcExit(T0 + 0.14, 10, after=T0 + 0.10))  # alive after b started
    asm.tick(T0 + 1)
    assert asm.stats.unattributed == 1
    assert hasher.requests == [f"{p}/params.yaml"] * 2
    asm.handle(HashDone(T0 + 1, f"{p}/params.yaml", fh("params", 0), size=8, stored=True))
    assert set(cat.io(1, "input")) == set(cat.io(2, "input")) == {"params.yaml"}
    assert set(cat.basis.values()) == {"ambiguous"}
    assert 1 not in cat.params and 2 not in cat.params  # a guessed read gives no params


def test_a_process_seen_before_its_exec_is_judged_by_the_program_it_becomes(project):
    asm, cat, _ = make(project)
    p = str(project)
    # the poller caught the child of a test runner between fork and exec
    asm.handle(ProcExec(T0, info(10, ["python", "-m", "pytest"], cwd="/elsewhere", started=T0)))
    assert cat.runs == {}
    asm.handle(ProcExec(T0 + 0.04, info(10, ["python", "src/train.py"], cwd=p, started=T0)))
    assert len(cat.runs) == 1 and cat.runs[1]["command"] == ["python", "src/train.py"]


def test_an_open_for_writing_hashed_after_the_write_is_not_an_input(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, OPEN, f"{p}/out.txt", pid=10))
    asm.tick(T0 + 0.7)
    # the file was still being written: its hash comes once it settled, same content
    finish_hashes(asm, hasher, T0 + 0.8, {f"{p}/out.txt": fh("o", 1)})
    asm.handle(FileEvent(T0 + 0.6, CLOSE_WRITE, f"{p}/out.txt", pid=10))
    asm.tick(T0 + 1.2)
    finish_hashes(asm, hasher, T0 + 1.3, {f"{p}/out.txt": fh("o", 1)})
    assert cat.io(1, "input") == {} and set(cat.io(1, "output")) == {"out.txt"}


def test_files_holding_credentials_are_hashed_but_never_copied(project):
    asm, cat, hasher = make(project)
    p = str(project)
    copies = []
    hasher.request = lambda path, *, copy, prio=0, delay=0.0, settled=False: copies.append(
        (path, copy))
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/.env"))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_NOWRITE, f"{p}/params.yaml"))
    asm.tick(T0 + 1)
    assert (f"{p}/.env", False) in copies and (f"{p}/params.yaml", True) in copies


def test_module_runs_are_not_waiting_for_a_script_open(project):
    """`python -m pkg.train` may import its module from __pycache__ only."""
    asm, cat, hasher = make(project)
    p = str(project)
    (project / "pkg").mkdir()
    (project / "pkg" / "train.py").write_text("")
    exec_(asm, 10, ["python", "-m", "pkg.train", "out.txt"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/out.txt"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert set(cat.io(1, "output")) == {"out.txt"}


def test_a_shell_one_liner_that_execs_python_gets_the_python_params(project):
    asm, cat, _ = make(project)
    p = str(project)
    (project / "logs").mkdir()
    (project / "logs" / "train.log").write_text("")
    (project / "pkg").mkdir()
    (project / "pkg" / "train.py").write_text("")  # project code: its argv holds params
    line = "python -m pkg.train lr=0.1 model.depth=3 > logs/train.log"
    asm.handle(ProcExec(T0, info(10, ["bash", "-c", line], cwd=p, started=T0, exe="/bin/bash")))
    assert len(cat.runs) == 1
    asm.handle(ProcExec(T0 + 0.01, info(10, ["python", "-m", "pkg.train", "lr=0.1",
                                             "model.depth=3"], cwd=p, started=T0)))
    assert cat.params[1]["lr"] == (0.1, "argv") and cat.params[1]["model.depth"] == (3, "argv")


def test_a_file_renamed_into_a_new_folder_before_it_was_watched(project):
    """fanotify tier: the writer closed d/m.tmp, renamed it to d/m.pkl inside a folder
    inotify had not watched yet; inotify's walk then found d/m.pkl with no pid."""
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/new/m.tmp", pid=10))
    asm.handle(FileEvent(T0 + 0.1, CREATE, f"{p}/new/m.pkl"))
    asm.handle(FileEvent(T0 + 0.1, CREATE, f"{p}/elsewhere/by-hand.txt"))
    asm.tick(T0 + 2)
    asm.handle(HashDone(T0 + 2, f"{p}/new/m.tmp", None, error="vanished"))
    hasher.requests.remove(f"{p}/new/m.tmp")
    finish_hashes(asm, hasher, T0 + 2)
    assert set(cat.io(1, "output")) == {"new/m.pkl"}


def test_a_move_seen_before_the_write_of_its_source(project):
    """fanotify and inotify streams are not ordered against each other."""
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.10, MOVED_FROM, f"{p}/m.tmp", cookie=7))
    asm.handle(FileEvent(T0 + 0.10, MOVED_TO, f"{p}/m.pkl", cookie=7))
    asm.handle(FileEvent(T0 + 0.12, CLOSE_WRITE, f"{p}/m.tmp", pid=10))  # read later
    asm.tick(T0 + 2)
    asm.handle(HashDone(T0 + 2, f"{p}/m.tmp", None, error="vanished"))
    hasher.requests.remove(f"{p}/m.tmp")
    finish_hashes(asm, hasher, T0 + 2)
    assert set(cat.io(1, "output")) == {"m.pkl"}


def test_each_step_of_a_pipeline_script_has_its_own_reads_and_writes(project):
    """`bash run.sh` running prepare then train: both read params.yaml; train reads what
    prepare wrote. At the step level that is an input of train and an output of prepare."""
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["bash", "run.sh"], cwd=p, started=T0, exe="/bin/bash")))
    asm.handle(ProcExec(T0 + 0.1, info(11, ["python", "prep.py"], ppid=10, cwd=p,
                                       started=T0 + 0.1)))
    asm.handle(FileEvent(T0 + 0.15, CLOSE_NOWRITE, f"{p}/params.yaml", pid=11))
    asm.handle(FileEvent(T0 + 0.2, CLOSE_WRITE, f"{p}/clean.csv", pid=11))
    asm.handle(ProcExit(T0 + 0.3, 11, exit_code=0))
    asm.tick(T0 + 1.0)
    finish_hashes(asm, hasher, T0 + 1.0)
    asm.handle(ProcExec(T0 + 1.1, info(12, ["python", "train.py"], ppid=10, cwd=p,
                                       started=T0 + 1.1)))
    asm.handle(FileEvent(T0 + 1.15, CLOSE_NOWRITE, f"{p}/params.yaml", pid=12))
    asm.handle(FileEvent(T0 + 1.2, CLOSE_NOWRITE, f"{p}/clean.csv", pid=12))
    asm.handle(FileEvent(T0 + 1.25, CLOSE_WRITE, f"{p}/model.pkl", pid=12))
    asm.tick(T0 + 2.0)
    finish_hashes(asm, hasher, T0 + 2.0)

    def step_io(step_id, role):
        return {cat.versions[v]["path"] for r, v, ro, s in cat.links if s == step_id and ro == role}

    assert step_io(2, "input") == {"params.yaml"} and step_io(2, "output") == {"clean.csv"}
    assert step_io(3, "input") == {"params.yaml", "clean.csv"}
    assert step_io(3, "output") == {"model.pkl"}


def test_a_shell_waiting_on_its_child_leaves_the_files_to_the_child(project):
    asm, cat, hasher = make(project)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["bash", "run.sh"], cwd=p, started=T0, exe="/bin/bash")))
    asm.handle(FileEvent(T0 + 0.01, CLOSE_NOWRITE, f"{p}/run.sh"))
    asm.handle(ProcExec(T0 + 0.1, info(11, ["python", "src/train.py"], ppid=10, cwd=p,
                                       started=T0 + 0.1)))
    asm.handle(FileEvent(T0 + 0.2, CLOSE_WRITE, f"{p}/model.pkl"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    assert [s for _, _, ro, s in cat.links if ro == "output"] == [2]


def test_metrics_files_and_redirected_stdout_give_metrics(project):
    import dataclasses

    blobs = {
        "blake3:" + "a" * 64: b'{"test": {"f1": 0.91, "acc": 0.95}}',
        "blake3:" + "b" * 64: b"epoch 1 loss=0.50\nepoch 2 loss=0.25\n",
    }
    asm, cat, hasher = make(project, probes=Probes(read_object=blobs.get))
    p = str(project)
    log_path = f"{p}/logs/train.txt"  # `python src/train.py > logs/train.txt 2>&1`
    proc = dataclasses.replace(info(10, ["python", "src/train.py"], cwd=p, started=T0),
                               stdio=(log_path, log_path))
    asm.handle(ProcExec(T0, proc))
    asm.handle(FileEvent(T0 + 0.001, OPEN, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/summary.json"))
    asm.tick(T0 + 1)
    for path in list(hasher.requests):
        hasher.requests.remove(path)
        letter = "a" if path.endswith(".json") else "b"
        asm.handle(HashDone(T0 + 1, path, "blake3:" + letter * 64, size=40, stored=True))
    got = {src: {m[0]: (m[1], m[2]) for m in rows} for _, src, rows in cat.metrics}
    assert got["summary.json"] == {"summary.json:test.f1": (None, 0.91),
                                   "summary.json:test.acc": (None, 0.95)}
    assert "loss" in got["logs/train.txt"]
    kinds_ = {v["path"]: v["kind"] for v in cat.versions.values()}
    assert kinds_["logs/train.txt"] == "log"
    assert set(cat.io(1, "output")) == {"summary.json", "logs/train.txt"}


def test_poll_tier_steps_are_judged_at_the_time_of_the_event(project):
    """run.sh: a.py (reads in.txt, writes a.out), then b.py (writes b.out). The events
    are attributed half a second later, when b.py (or nothing) is alive."""
    asm, cat, hasher = make(project)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["bash", "run.sh"], cwd=p, started=T0, exe="/bin/bash")))
    asm.handle(FileEvent(T0 + 0.01, CLOSE_NOWRITE, f"{p}/run.sh"))
    asm.handle(ProcExec(T0 + 0.1, info(11, ["python", "a.py"], ppid=10, cwd=p,
                                       started=T0 + 0.1)))
    asm.handle(FileEvent(T0 + 1.1, CLOSE_NOWRITE, f"{p}/in.txt"))
    asm.handle(FileEvent(T0 + 1.2, CLOSE_WRITE, f"{p}/a.out"))
    asm.handle(ProcExit(T0 + 1.3, 11, after=T0 + 1.25))
    asm.handle(ProcExec(T0 + 1.3, info(12, ["python", "b.py"], ppid=10, cwd=p,
                                       started=T0 + 1.27)))
    asm.handle(FileEvent(T0 + 3.3, CLOSE_WRITE, f"{p}/b.out"))
    asm.tick(T0 + 4)
    finish_hashes(asm, hasher, T0 + 4)
    by_step = {}
    for _, v, ro, s in cat.links:
        by_step.setdefault(s, set()).add((cat.versions[v]["path"], ro))
    assert by_step[2] == {("in.txt", "input"), ("a.out", "output")}
    assert by_step[3] == {("b.out", "output")}


def test_a_fork_of_a_process_that_is_no_run_waits_for_its_exec(project):
    asm, cat, _ = make(project)
    p = str(project)
    # a test runner started before the agent forks a child that will exec a script
    asm.handle(ProcExec(T0, info(10, ["python", "tool.py"], cwd=p, started=T0 - 500)))
    asm.handle(ProcExec(T0 + 1, info(11, ["python", "tool.py"], ppid=10, cwd=p,
                                     started=T0 + 1)))
    assert cat.runs == {}
    asm.handle(ProcExec(T0 + 1.05, info(11, ["python", "src/train.py"], ppid=10, cwd=p,
                                        started=T0 + 1)))
    assert [r["command"] for r in cat.runs.values()] == [["python", "src/train.py"]]


def test_a_shell_seen_after_its_child_became_a_run_is_not_a_second_run(project):
    asm, cat, _ = make(project)
    p = str(project)
    (project / "logs").mkdir()
    (project / "logs" / "x.log").write_text("")
    asm.handle(ProcExec(T0 + 0.05, info(11, ["python", "src/train.py"], ppid=10, cwd=p,
                                        started=T0 + 0.02, ancestors=(10, 1))))
    asm.handle(ProcExec(T0 + 0.06, info(10, ["bash", "-c", "python src/train.py > logs/x.log"],
                                        cwd=p, started=T0, exe="/bin/bash")))
    assert len(cat.runs) == 1 and cat.runs[1]["command"] == ["python", "src/train.py"]


def test_a_one_liner_that_forks_its_program_gets_the_program_params(project):
    asm, cat, _ = make(project)
    p = str(project)
    (project / "logs").mkdir()
    (project / "logs" / "train.log").write_text("")
    (project / "pkg").mkdir()
    (project / "pkg" / "train.py").write_text("")  # project code: its argv holds params
    line = "python -m pkg.train lr=0.1 > logs/train.log"
    asm.handle(ProcExec(T0, info(10, ["bash", "-c", line], cwd=p, started=T0, exe="/bin/bash")))
    asm.handle(ProcExec(T0 + 0.01, info(11, ["python", "-m", "pkg.train", "lr=0.1"], ppid=10,
                                        cwd=p, started=T0 + 0.01)))
    assert cat.params[1]["lr"] == (0.1, "argv")


def test_fanotify_creates_do_not_land_on_the_root_step(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["bash", "run.sh"], cwd=p, started=T0, exe="/bin/bash")))
    asm.handle(ProcExec(T0 + 0.1, info(11, ["python", "w.py"], ppid=10, cwd=p,
                                       started=T0 + 0.1)))
    asm.handle(FileEvent(T0 + 0.2, CREATE, f"{p}/out/a.txt"))  # inotify, no pid
    asm.handle(FileEvent(T0 + 0.2, CLOSE_WRITE, f"{p}/out/a.txt", pid=11))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    assert [s for _, _, ro, s in cat.links if ro == "output"] == [2]


def test_back_to_back_runs_renaming_the_same_temp_name(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    for n, pid in enumerate((10, 20, 30)):
        t = T0 + n * 0.3
        exec_(asm, pid, ["python", "w.py", "old"], project, t)
        asm.handle(FileEvent(t + 0.15, CLOSE_WRITE, f"{p}/old/m.tmp", pid=pid))
        asm.handle(FileEvent(t + 0.16, MOVED_FROM, f"{p}/old/m.tmp", cookie=pid))
        asm.handle(FileEvent(t + 0.16, MOVED_TO, f"{p}/old/m.pkl", cookie=pid))
        asm.handle(ProcExit(t + 0.2, pid, exit_code=0))
    asm.tick(T0 + 3)
    for path in list(hasher.requests):
        hasher.requests.remove(path)
        if path.endswith(".tmp"):
            asm.handle(HashDone(T0 + 3, path, None, error="vanished"))
    for rid in (1, 2, 3):
        assert cat.io(rid, "output") == {} or set(cat.io(rid, "output")) == {"old/m.pkl"}
    waiting = [w.run.db_id for w in asm.waiting_on(f"{p}/old/m.pkl") if w.run]
    assert sorted(set(waiting)) == [1, 2, 3]


def test_bookkeeping_of_gone_processes_and_unpaired_moves_is_forgotten(project):
    asm, cat, _ = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FdSeen(T0 + 0.1, 10, f"{p}/big.bin", False))
    asm.handle(FileEvent(T0 + 0.1, MOVED_FROM, f"{p}/gone.txt", cookie=9))  # moved out
    exec_(asm, 20, ["python", "src/train.py"], project, T0)
    asm.handle(FdSeen(T0 + 0.1, 20, f"{p}/held.bin", False))  # still running
    asm.handle(ProcExit(T0 + 0.2, 10, exit_code=0))
    asm.tick(T0 + 0.7)  # the move is attributed; nothing is stale yet
    assert set(asm.fd_seen) == {f"{p}/big.bin", f"{p}/held.bin"} and asm.moves
    asm.tick(T0 + 200)
    assert asm.moves == {} and set(asm.fd_seen) == {f"{p}/held.bin"}


# -- no output loses its run: backlogs of the file sources ----------------------------


def test_a_run_closes_only_once_the_file_sources_are_past_its_end(project):
    asm, cat, hasher = make(project, pids_known=True)
    asm.files_caught_up = T0  # the fanotify reader is behind (a backlog)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.tick(T0 + 5.0)
    assert cat.runs[1]["status"] == "running"  # its last writes may still be queued
    asm.handle(FileEvent(T0 + 4.0, CLOSE_WRITE, f"{p}/out/final.pkl", pid=10))
    asm.files_caught_up = T0 + 4.1
    asm.tick(T0 + 4.2)
    assert cat.runs[1]["status"] == "running"  # that event's grace window is still open
    asm.tick(T0 + 6.0)
    finish_hashes(asm, hasher, T0 + 6.0)
    assert cat.runs[1]["status"] == "completed"
    assert set(cat.io(1, "output")) == {"out/final.pkl"}


def test_a_late_event_of_a_closed_runs_process_still_lands_on_that_run(project):
    # A source stuck past the wait (or an event the kernel held back): the pid says whose.
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.tick(T0 + 2.0)
    assert cat.runs[1]["status"] == "completed"
    asm.handle(FileEvent(T0 + 3.0, CLOSE_WRITE, f"{p}/out/last.csv", pid=10))
    asm.tick(T0 + 4.0)
    finish_hashes(asm, hasher, T0 + 4.0)
    assert set(cat.io(1, "output")) == {"out/last.csv"}
    assert asm.stats.no_run == 0


def test_a_reused_pid_is_the_new_process_not_the_closed_runs(project):
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.tick(T0 + 2.0)
    # pid 10 is now an editor's helper (not a run), seen by the process source
    asm.handle(ProcExec(T0 + 3.0, info(10, ["vim", "notes.txt"], cwd="/", started=T0 + 3.0)))
    asm.handle(FileEvent(T0 + 3.1, CLOSE_WRITE, f"{p}/notes.txt", pid=10))
    asm.tick(T0 + 4.0)
    finish_hashes(asm, hasher, T0 + 4.0)
    assert cat.io(1, "output") == {}
    assert asm.stats.no_run == 1  # counted, so `status` shows it


def test_a_stuck_file_source_does_not_keep_runs_open_forever(project):
    asm, cat, _ = make(project, pids_known=True)
    asm.files_caught_up = T0
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.tick(T0 + 60)
    assert cat.runs[1]["status"] == "running"
    asm.tick(T0 + 200)
    assert cat.runs[1]["status"] == "completed"


# -- files changed while the agent was down -------------------------------------------


def _reattached(asm, project, pid, started):
    row = {"id": 1, "pid": pid, "pid_start": int(started * 100), "root_step": None,
           "started_at": asm.clock.to_wall(started)}
    asm.catalog.runs[1] = {"status": "running"}
    asm.reattach(row, info(pid, ["python", "src/train.py"], cwd=str(project), started=started),
                 [])


def test_a_file_changed_while_down_lands_on_the_only_run_alive_then(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _reattached(asm, project, 10, T0 - 30)
    changed = int(asm.clock.to_wall(T0 - 2) * 1e9)  # while the agent was down
    asm.handle(HashDone(T0 + 1, f"{project}/ckpt/epoch3.pt", fh("c", 3), size=1,
                        mtime_ns=changed))
    assert set(cat.io(1, "output")) == {"ckpt/epoch3.pt"}
    assert asm.runs[0].files[f"{project}/ckpt/epoch3.pt"].basis == "rescan"


def test_a_file_changed_while_down_is_nobodys_when_a_lost_run_may_have_written_it(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _reattached(asm, project, 10, T0 - 30)
    asm.note_lost(asm.clock.to_wall(T0 - 20))  # ended while down, alive from T0-20 on
    asm.watched_since = asm.clock.to_wall(T0 - 30)
    changed = int(asm.clock.to_wall(T0 - 2) * 1e9)
    asm.handle(HashDone(T0 + 1, f"{project}/out/b.txt", fh("b", 0), size=1, mtime_ns=changed))
    assert cat.io(1, "output") == {}
    assert asm.stats.no_run == 1


def test_a_file_changed_before_the_reattached_run_started_is_not_its(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _reattached(asm, project, 10, T0 - 5)
    changed = int(asm.clock.to_wall(T0 - 8) * 1e9)
    asm.handle(HashDone(T0 + 1, f"{project}/notes.md", fh("n", 0), size=1, mtime_ns=changed))
    assert cat.io(1, "output") == {}


def test_a_file_a_live_runs_process_holds_open_is_that_runs(project):
    asm, cat, _ = make(project)
    asm.agent_started = T0
    _reattached(asm, project, 10, T0 - 30)
    asm.note_lost(asm.clock.to_wall(T0 - 40))  # would leave it unclaimed by time alone
    asm.handle(FdSeen(T0 + 0.5, 10, f"{project}/train.log", True))
    changed = int(asm.clock.to_wall(T0 - 2) * 1e9)
    asm.handle(HashDone(T0 + 1, f"{project}/train.log", fh("l", 0), size=1, mtime_ns=changed))
    assert set(cat.io(1, "output")) == {"train.log"}


def test_system_tools_a_library_starts_give_no_params(project):
    # GitPython's `git version`, platform's `uname -p`: steps, but not the experiment's.
    asm, cat, _ = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py", "data/a.csv", "--lr", "0.1"], project, T0)
    for pid, argv in ((11, ["git", "version"]), (12, ["/bin/sh", "-c", "uname -p"]),
                      (13, ["uname", "-p"])):
        asm.handle(ProcExec(T0 + 0.1, info(pid, argv, ppid=10, cwd=p, started=T0 + 0.1,
                                           exe="/usr/bin/" + argv[0].rsplit("/", 1)[-1])))
    assert cat.params[1] == {"argv[1]": ("data/a.csv", "argv"), "lr": (0.1, "argv")}


def test_a_sweep_wrapper_keys_each_jobs_params_by_its_step(project):
    asm, cat, _ = make(project)
    p = str(project)
    (project / "sweep.py").write_text("")
    exec_(asm, 10, ["python", "sweep.py"], project, T0)
    asm.handle(ProcExec(T0 + 0.1, info(11, ["python", "src/train.py", "--lr", "0.1"], ppid=10,
                                       cwd=p, started=T0 + 0.1)))
    assert cat.params[1]["lr"] == (0.1, "argv")
    asm.handle(ProcExec(T0 + 0.2, info(12, ["python", "src/train.py", "--lr", "0.01"], ppid=10,
                                       cwd=p, started=T0 + 0.2)))
    argv = {k: v for k, (v, src) in cat.params[1].items() if src == "argv"}
    assert argv == {"src/train.py#1:lr": 0.1, "src/train.py#2:lr": 0.01}


def test_stopping_closes_ended_runs_whatever_the_sources_said(project):
    # The sources are stopped first and have passed on all they held: drain closes.
    asm, cat, _ = make(project, pids_known=True)
    asm.files_caught_up = T0
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.drain(T0 + 0.6)
    assert cat.runs[1]["status"] == "completed"


def test_a_file_a_non_run_wrote_and_renamed_is_not_the_next_runs(project):
    # A job script outside the project: `sed -i s/a/b/ config.yaml` (a temp file renamed
    # over the config), then `python train.py`, which reads it.
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    asm.handle(ProcExec(T0, info(20, ["sed", "-i", "s/a/b/", "config.yaml"], cwd=p,
                                 started=T0, exe="/usr/bin/sed")))
    asm.handle(FileEvent(T0 + 0.01, CLOSE_WRITE, f"{p}/sedX1a2b3", pid=20))
    exec_(asm, 10, ["python", "src/train.py"], project, T0 + 0.02)
    asm.handle(FileEvent(T0 + 0.025, CLOSE_WRITE, f"{p}/model.pkl", pid=10))
    asm.handle(FileEvent(T0 + 0.01, CREATE, f"{p}/sedX1a2b3"))  # inotify's, read late
    asm.handle(FileEvent(T0 + 0.03, MOVED_FROM, f"{p}/sedX1a2b3", cookie=7))
    asm.handle(FileEvent(T0 + 0.03, MOVED_TO, f"{p}/config.yaml", cookie=7))
    asm.handle(FileEvent(T0 + 0.05, CLOSE_NOWRITE, f"{p}/config.yaml", pid=10))
    asm.tick(T0 + 2)
    finish_hashes(asm, hasher, T0 + 2)
    assert set(cat.io(1, "output")) == {"model.pkl"}
    assert set(cat.io(1, "input")) == {"config.yaml"}


@pytest.mark.parametrize("pids_known", [True, False])
def test_a_scan_hash_of_a_file_with_events_pending_claims_no_run(project, pids_known):
    # Seen in CI (job_script, privileged, 1 run in 4): the agent's start-up scan hashed
    # config.yaml just after the job script's `sed -i` had renamed its temp file over it
    # and just before `python train.py` started. That result, with no waiter, came in
    # while sed's events were still in the grace window; the rescan rule gave the
    # change to the run alive at its mtime (the run's start is in 10 ms /proc ticks), so
    # the config became the run's output and its read of it was lost.
    asm, cat, hasher = make(project, pids_known=pids_known)
    p = str(project)
    pid = (lambda n: n) if pids_known else (lambda n: None)
    asm.handle(ProcExec(T0, info(20, ["sed", "-i", "s/a/b/", "config.yaml"], cwd=p,
                                 started=T0, exe="/usr/bin/sed")))
    asm.handle(FileEvent(T0 + 0.004, CLOSE_NOWRITE, f"{p}/config.yaml", pid=pid(20)))
    asm.handle(FileEvent(T0 + 0.005, CLOSE_WRITE, f"{p}/sedX1a2b3", pid=pid(20)))
    asm.handle(FileEvent(T0 + 0.006, MOVED_FROM, f"{p}/sedX1a2b3", cookie=7))
    asm.handle(FileEvent(T0 + 0.006, MOVED_TO, f"{p}/config.yaml", cookie=7))
    asm.handle(ProcExit(T0 + 0.007, 20, exit_code=0))
    exec_(asm, 10, ["python", "src/train.py"], project, T0 + 0.01)
    # the scan's result: the sed'ed content, changed 5 ms before the run's start
    mtime_ns = int(asm.clock.to_wall(T0 + 0.005) * 1e9)
    asm.handle(HashDone(T0 + 0.1, f"{p}/config.yaml", fh("config.yaml", 1), size=10,
                        mtime_ns=mtime_ns))
    asm.handle(FileEvent(T0 + 0.2, CLOSE_NOWRITE, f"{p}/config.yaml", pid=pid(10)))
    asm.handle(FileEvent(T0 + 0.3, CLOSE_WRITE, f"{p}/model.pkl", pid=pid(10)))
    asm.handle(ProcExit(T0 + 0.4, 10, exit_code=0))
    for t in (T0 + 1, T0 + 1.5, T0 + 3):
        asm.tick(t)
        finish_hashes(asm, hasher, t, {f"{p}/config.yaml": fh("config.yaml", 1)})
    assert set(cat.io(1, "output")) == {"model.pkl"}
    assert set(cat.io(1, "input")) == {"config.yaml"}
    assert not asm.pending_paths  # every event counted in was counted out


def test_a_scan_hash_with_only_a_read_pending_still_claims_the_lost_write(project):
    # An overflow lost the run's write; its read-back is still in the grace window: that
    # read says nothing of who wrote it, so the rescan rule still decides.
    asm, cat, hasher = make(project)
    p = str(project)
    now = asm.clock.t = T0 + 10
    asm.handle(ProcExec(now, info(10, ["python", "src/train.py"], cwd=p, started=now - 5)))
    asm.handle(FileEvent(now - 0.1, CLOSE_NOWRITE, f"{p}/lost.bin"))
    mtime_ns = int(asm.clock.to_wall(now - 2) * 1e9)
    asm.handle(HashDone(now, f"{p}/lost.bin", fh("lost", 0), size=1, mtime_ns=mtime_ns))
    assert set(cat.io(1, "output")) == {"lost.bin"}


def test_each_link_carries_the_basis_of_its_attribution(project):
    asm, cat, hasher = make(project)  # no pids: the window, argv and fd samples tell
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py", "data/x.csv"], project, T0)
    asm.handle(FileEvent(T0 + 0.02, CLOSE_NOWRITE, f"{p}/data/x.csv"))
    asm.handle(FileEvent(T0 + 0.03, CLOSE_WRITE, f"{p}/model.pkl"))
    asm.tick(T0 + 1)
    finish_hashes(asm, hasher, T0 + 1)
    got = {cat.versions[v]["path"]: cat.basis[(r, v, ro, s)] for r, v, ro, s in cat.links}
    assert got == {"data/x.csv": "window", "model.pkl": "window"}


def test_one_stream_in_stdout_and_a_log_file_is_parsed_once(project):
    lines = [f"epoch={i} loss={1 / (i + 1):.4f} acc={0.5 + i / 20:.3f}" for i in range(5)]
    (project / "logs").mkdir()
    (project / "out.log").write_text("".join(ln + "\n" for ln in lines))  # stdout, redirected
    (project / "logs" / "train.log").write_text(  # the same logger's file handler
        "".join(f"2026-12-01 10:00:0{i},000 - INFO - {ln}\n" for i, ln in enumerate(lines)))
    asm, cat, hasher = make(project, pids_known=True)
    p = str(project)
    asm.handle(ProcExec(T0, info(10, ["python", "src/train.py"], cwd=p, started=T0,
                                 stdio=(f"{p}/out.log", None))))
    for name in ("out.log", "logs/train.log"):
        asm.handle(FileEvent(T0 + 0.1, CLOSE_WRITE, f"{p}/{name}", pid=10))
    asm.tick(T0 + 1)
    for path in list(hasher.requests):
        hasher.requests.remove(path)
        data = open(path, "rb").read()
        asm.handle(HashDone(T0 + 1, path, fh(path, 0), size=len(data), head=data))
    series = {src: ms for r, src, ms in cat.metrics if r == 1 and ms}
    assert len(series) == 1, sorted(series)


def test_files_there_before_onlooker_are_not_counted_as_changes_no_run_made(project):
    asm, cat, _ = make(project)  # a fresh project: no run yet, the first scan
    old = int(asm.clock.to_wall(T0 - 3600) * 1e9)
    asm.handle(HashDone(T0, f"{project}/data/raw.csv", fh("raw", 0), size=1, mtime_ns=old))
    assert asm.stats.no_run == 0 and len(cat.versions) == 1
    asm.handle(HashDone(T0 + 1, f"{project}/data/raw.csv", fh("raw", 1), size=1,
                        mtime_ns=int(asm.clock.to_wall(T0 + 0.5) * 1e9)))  # edited since
    assert asm.stats.no_run == 1


def test_a_shims_helpers_are_no_steps_and_the_program_takes_its_step(project):
    # pyenv: `python3` is `bash shims/python3`, which execs `env bash libexec/pyenv exec`,
    # which runs pyenv-which, readlink... (30-odd processes) and execs the real python.
    asm, cat, _ = make(project, pids_known=True)
    p = str(project)
    (project / "train.py").write_text("print(1)\n")
    asm.handle(ProcExec(T0, info(10, ["bash", "/root/.pyenv/shims/python3", "train.py"],
                                 cwd=p, started=T0, exe="/bin/bash")))
    asm.handle(ProcExec(T0 + 0.01, info(10, ["/usr/bin/env", "bash", "/root/.pyenv/libexec/pyenv",
                                             "exec", "python3", "train.py"], cwd=p, started=T0,
                                        exe="/usr/bin/env")))
    for pid, argv in ((11, ["bash", "/root/.pyenv/libexec/pyenv-which", "python3"]),
                      (12, ["/usr/bin/readlink", "pyenv"])):
        asm.handle(ProcExec(T0 + 0.02, info(pid, argv, ppid=10, cwd=p, started=T0 + 0.02,
                                            exe="/bin/bash")))
        asm.handle(ProcExit(T0 + 0.03, pid, exit_code=1))
    real = ["/root/.pyenv/versions/3.11.7/bin/python3", "train.py"]
    asm.handle(ProcExec(T0 + 0.05, info(10, real, cwd=p, started=T0)))
    asm.handle(ProcExec(T0 + 0.06, info(13, ["git", "version"], ppid=10, cwd=p,
                                        started=T0 + 0.06, exe="/usr/bin/git")))
    asm.handle(ProcExit(T0 + 0.07, 13, exit_code=0))
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.tick(T0 + 2)
    assert [s["argv"] for s in cat.steps.values()] == [real, ["git", "version"]]
    assert cat.runs[1]["command"] == real and cat.runs[1]["status"] == "completed"


def test_helpers_a_completed_run_stopped_with_a_signal_are_not_failures(project):
    asm, cat, _ = make(project, pids_known=True)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    worker = ["python", "-B", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"]
    for pid in (11, 12):
        asm.handle(ProcExec(T0 + 0.1, info(pid, worker, ppid=10, cwd=p, started=T0 + 0.1)))
    asm.handle(ProcExit(T0 + 0.4, 11, signal=15))  # Pool.terminate() at the end of `with`
    asm.handle(ProcExit(T0 + 0.4, 12, exit_code=1))  # a real failure stays one
    asm.handle(ProcExit(T0 + 0.5, 10, exit_code=0))
    asm.tick(T0 + 2)
    by_pid = {s["pid"]: s for s in cat.steps.values()}
    assert by_pid[11]["status"] == "stopped" and by_pid[11]["signal"] == 15
    assert by_pid[12]["status"] == "failed"


def test_a_launcher_record_gives_the_exact_exit_and_the_kept_output(project):
    # `onlooker run -- CMD` in the poll tier: the agent saw no exit code; the launcher did.
    asm, cat, _ = make(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 0.5, 10))
    asm.tick(T0 + 2)
    assert cat.runs[1]["status"] == "ended"
    cat.root_step = lambda run_id, pid: 1
    cat.objects = type("Objects", (), {"put_bytes": staticmethod(lambda data: fh("log", 0))})
    asm.apply_launcher(1, 10, 3, None, log=".onlooker/runs/1.log", data=b"epoch=1 loss=0.5\n")
    assert cat.runs[1]["status"] == "failed" and cat.runs[1]["exit_code"] == 3
    assert cat.steps[1]["status"] == "failed"
    assert set(cat.io(1, "output")) == {".onlooker/runs/1.log"}
    assert [m for r, src, m in cat.metrics if src == ".onlooker/runs/1.log"]


def test_a_pidless_event_read_late_under_a_backlog_lands_on_its_run(project):
    # inotify read these writes 3 s after the run ended; its queue was last empty
    # before the run began writing, so they happened while it was alive.
    asm, cat, hasher = make(project)
    p = str(project)
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(FileEvent(T0 + 0.002, CLOSE_NOWRITE, f"{p}/src/train.py"))
    asm.handle(ProcExit(T0 + 1.0, 10, exit_code=0))
    asm.handle(FileEvent(T0 + 4.0, CLOSE_WRITE, f"{p}/out/f1.txt", since=T0 + 0.5))
    asm.handle(FileEvent(T0 + 4.0, CLOSE_WRITE, f"{p}/late.txt", since=T0 + 3.5))  # not its
    asm.tick(T0 + 5)
    finish_hashes(asm, hasher, T0 + 5)
    assert set(cat.io(1, "output")) == {"out/f1.txt"}


def test_a_pidless_event_waits_for_a_poller_that_is_behind(project):
    """Under load the poller may see a process later than the grace window: the file
    event waits until the poller has looked since it happened."""
    asm, cat, hasher = make(project)
    p = str(project)
    asm.procs_caught_up = T0 - 1  # the poller's last look was before the write
    asm.handle(FileEvent(T0 + 0.005, CLOSE_NOWRITE, f"{p}/src/train.py"))
    asm.handle(FileEvent(T0 + 0.01, CLOSE_WRITE, f"{p}/out.csv"))
    asm.tick(T0 + 0.9)  # grace over, but the poller has not looked since
    assert asm.pending and hasher.requests == []
    asm.handle(ProcExec(T0 + 1.0, info(7, ["python", "src/train.py"], cwd=p, started=T0)))
    asm.procs_caught_up = T0 + 1.0
    asm.tick(T0 + 1.1)
    finish_hashes(asm, hasher, T0 + 1.2)
    assert set(cat.io(1, "output")) == {"out.csv"}


def test_a_stuck_poller_holds_pidless_events_back_only_so_long(project):
    asm, cat, hasher = make(project)
    p = str(project)
    asm.procs_caught_up = T0 - 1  # and never again: a dead poller thread
    asm.handle(FileEvent(T0, CLOSE_WRITE, f"{p}/data/new.csv"))
    asm.tick(T0 + 5)
    assert hasher.requests == []
    asm.tick(T0 + 11)
    assert hasher.requests == [f"{p}/data/new.csv"]  # versioned, with no run


def test_a_run_whose_exit_status_was_not_seen_says_why(project, caplog):
    cfg = config.load(project)
    cat, hasher = FakeCatalog(), FakeHasher()
    asm = Assembler(cfg, cat, hasher, FakeIgnore(project), tier="poll+inotify",
                    agent_started=T0 - 100, clock=FakeClock(T0))
    exec_(asm, 10, ["python", "src/train.py"], project, T0)
    asm.handle(ProcExit(T0 + 0.2, 10, None, None, after=T0 + 0.15))  # reaped unseen
    with caplog.at_level("INFO", logger="onlooker.agent.assembly.assembler"):
        asm.tick(T0 + 2)
    assert cat.runs[1]["status"] == "ended" and cat.runs[1]["exit_code"] is None
    assert "exit status not seen: the poll tier sees a process end" in caplog.text
