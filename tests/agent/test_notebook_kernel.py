"""A Jupyter kernel's run in the assembler, driven as pure logic: the notebook it serves,
its cells as steps from IPython's history database, files on the cell that ran then,
the notebook's saves as its code (agent/assembly/kernel.py)."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime

import pytest

from onlooker.agent.assembly.assembler import Probes
from onlooker.agent.events import (
    CLOSE_NOWRITE,
    CLOSE_WRITE,
    FileEvent,
    HashDone,
    ProcExec,
    ProcExit,
)

from .fakes import FakeClock, info
from .test_assembler import T0, make
from .test_notebook import HISTORY_SCHEMA, code, notebook_bytes

STEP = 0.05  # the daemon's tick


class Kernel:
    """A kernel process as the agent sees it: busy during its cells, idle between, its
    history database written as each cell begins."""

    def __init__(self, tmp_path, project, *, session_name=True, pids_known=False,
                 connection=None):
        self.project = project
        if connection is not None:  # what a jupyter_server writes into the connection file
            (tmp_path / "runtime").mkdir(exist_ok=True)
            (tmp_path / "runtime" / "kernel-k1.json").write_text(json.dumps(connection))
        self.db = tmp_path / "ipy" / "profile_default" / "history.sqlite"
        self.db.parent.mkdir(parents=True)
        self.busy: list[tuple[float, float]] = []
        self.servers: list[tuple[str, str]] = []
        probes = Probes(kernel_idle=self.idle, server_sessions=lambda d: list(self.servers),
                        read_file=lambda path, limit: None)
        self.asm, self.cat, self.hasher = make(project, probes=probes, pids_known=pids_known)
        self.clock: FakeClock = self.asm.clock
        self.conn = sqlite3.connect(self.db)
        self.conn.executescript(HISTORY_SCHEMA)
        self.conn.commit()
        env = [("IPYTHONDIR", str(tmp_path / "ipy")), ("HOME", str(tmp_path))]
        if session_name:
            env.append(("JPY_SESSION_NAME", str(project / "nb" / "a.ipynb")))
        self.pid = 200
        self.now = T0
        argv = ["python", "-m", "ipykernel_launcher", "-f",
                str(tmp_path / "runtime" / "kernel-k1.json")]
        self.asm.handle(ProcExec(T0, info(self.pid, argv, cwd=str(project / "nb"), started=T0,
                                          environ=tuple(env))))
        self._commit("INSERT INTO sessions VALUES (NULL, ?, NULL, NULL, '')",
                     (datetime.fromtimestamp(self.clock.to_wall(T0 + 0.3)).isoformat(" "),),
                     T0 + 0.3)
        self.count = 0
        self.pending: list[tuple[float, object]] = []

    def idle(self, pid):
        assert pid == self.pid
        return not any(a <= self.now < b for a, b in self.busy)

    def _commit(self, sql, args, t):
        self.conn.execute(sql, args)
        self.conn.commit()
        ns = int(self.clock.to_wall(t) * 1e9)
        os.utime(self.db, ns=(ns, ns))

    def cell(self, start, end, source, files=(), commit=None):
        """A cell runs over [start, end) (seconds after T0); `files`: (when, op, path);
        its history row is written at `commit` (just after its start by default)."""
        self.busy.append((T0 + start, T0 + end))
        self.count += 1
        when = T0 + (commit if commit is not None else start + 0.004)
        self.pending.append((when, ("row", self.count, source)))
        for when, op, path in files:
            self.pending.append((T0 + when, FileEvent(T0 + when, op, str(self.project / path),
                                                      pid=self.pid if self.asm.pids_known
                                                      else None)))

    def until(self, t):
        """Time passes, tick by tick, the cells' rows and files happening on the way."""
        end = T0 + t
        while self.now < end:
            self.now = round(self.now + STEP, 6)
            self.clock.t = self.now
            for when, what in sorted((p for p in self.pending if p[0] <= self.now),
                                     key=lambda p: p[0]):
                self.pending.remove((when, what))
                if isinstance(what, tuple):
                    _, n, src = what
                    self._commit("INSERT INTO history VALUES (1, ?, ?, ?)", (n, src, src), when)
                else:
                    self.asm.handle(what)
            self.asm.tick(self.now)

    def exit(self, t):
        self.until(t)
        self.asm.handle(ProcExit(T0 + t, self.pid, exit_code=0))
        self.until(t + 1.5)

    def cells(self):
        return [s for s in self.cat.steps.values() if s.get("cell") is not None]

    def step_files(self, sid, role):
        return {self.cat.versions[v]["path"] for r, v, ro, s in self.cat.links
                if s == sid and ro == role}


@pytest.fixture
def project(tmp_path):
    p = tmp_path / "proj"
    (p / "nb").mkdir(parents=True)
    return p


def answer(k, contents=None):
    """The hasher's answers to what was asked, with the given contents (bytes)."""
    contents = contents or {}
    while k.hasher.requests:
        path = k.hasher.requests.pop(0)
        data = contents.get(path, path.encode())
        k.asm.handle(HashDone(k.now, path, f"blake3:{abs(hash(data)):064d}"[:71],
                              size=len(data), head=data[:4096], stored=True))


def test_each_cell_is_a_step_with_its_files_by_time(tmp_path, project):
    k = Kernel(tmp_path, project)
    assert k.cat.runs[1]["notebook"] == "nb/a.ipynb"
    assert k.cat.runs[1]["notebook_via"] == "kernel"
    assert not k.cat.params.get(1)  # the connection file on its argv is no param
    k.cell(1.0, 1.3, "rows = open('../d.csv').read()", [(1.1, CLOSE_NOWRITE, "d.csv")])
    k.cell(2.0, 2.2, "open('../m.pkl', 'w').write('x')", [(2.1, CLOSE_WRITE, "m.pkl")])
    k.exit(3.0)
    answer(k)
    cells = k.cells()
    assert [(c["cell"], c["source"]) for c in cells] == [
        (1, "rows = open('../d.csv').read()"), (2, "open('../m.pkl', 'w').write('x')")]
    wall = k.clock.to_wall
    # begun after the last idle look before its row, ended at the first idle look after
    assert cells[0]["started_at"] == pytest.approx(wall(T0 + 0.95))
    assert cells[0]["ended_at"] == pytest.approx(wall(T0 + 1.3))
    assert cells[1]["started_at"] == pytest.approx(wall(T0 + 1.95))
    assert cells[1]["ended_at"] == pytest.approx(wall(T0 + 2.2))
    assert [c["status"] for c in cells] == ["completed", "completed"]
    ids = [sid for sid, s in k.cat.steps.items() if s.get("cell") is not None]
    assert k.step_files(ids[0], "input") == {"d.csv"}
    assert k.step_files(ids[1], "output") == {"m.pkl"}
    assert {b for key, b in k.cat.basis.items() if key[2] in ("input", "output")} == {"window"}
    root = min(k.cat.steps)
    assert all(c["parent_step_id"] == root for c in cells)
    assert k.step_files(root, "code") == {"nb/a.ipynb"}  # the notebook as opened


def test_the_notebook_saved_is_code_with_its_params_metrics_and_failed_cells(tmp_path,
                                                                               project):
    k = Kernel(tmp_path, project)
    path = str(project / "nb" / "a.ipynb")
    k.cell(1.0, 1.2, "alpha = 0.5")
    k.cell(2.0, 2.2, "1/0")
    k.until(2.5)
    answer(k)  # the notebook as opened
    saved = notebook_bytes([
        code("alpha = 0.5", count=1, tags=["parameters"]),
        code("1/0", count=2, outputs=[{"output_type": "error", "ename": "ZeroDivisionError",
                                       "evalue": "", "traceback": []}]),
        code("print('epoch 1 loss 0.25')", outputs=[
            {"output_type": "stream", "name": "stdout", "text": "epoch 1 loss 0.25\n"}]),
    ])
    # the front end saves it: no process is known (inotify), the kernel alone is alive
    k.pending.append((T0 + 2.6, FileEvent(T0 + 2.6, CLOSE_WRITE, path)))
    k.until(3.5)
    answer(k, {path: saved})
    assert k.cat.io(1, "output") == {}  # never the kernel's output
    assert k.asm.stats.no_run == 0  # nor a change no run made
    code_versions = [v for r, v, ro, _ in k.cat.links if r == 1 and ro == "code"]
    assert len(code_versions) == 2  # as opened, as saved
    assert k.cat.params[1] == {"alpha": (0.5, "nb/a.ipynb")}
    (got,) = [m for m in k.cat.metrics if m[1] == "nb/a.ipynb"]
    assert [(m.key, m.value) for m in got[2]] == [("loss", 0.25)]
    assert [c["status"] for c in k.cells()] == ["completed", "failed"]


def test_a_notebook_saved_with_the_cells_it_ran_names_the_kernel(tmp_path, project):
    k = Kernel(tmp_path, project, session_name=False)
    other, mine = str(project / "other.ipynb"), str(project / "nb" / "b.ipynb")
    k.cell(1.0, 1.2, "x = 41 + 1")
    k.until(1.5)
    assert k.cat.runs[1].get("notebook") is None
    for t, p in ((1.6, other), (1.7, mine)):
        k.pending.append((T0 + t, FileEvent(T0 + t, CLOSE_WRITE, p)))
    k.until(2.5)
    answer(k, {other: notebook_bytes([code("y = 1")]),
               mine: notebook_bytes([code("x = 41 + 1", count=1)])})
    assert k.cat.runs[1]["notebook"] == "nb/b.ipynb"
    assert k.cat.runs[1]["notebook_via"] == "saved"
    assert {k.cat.versions[v]["path"] for r, v, ro, _ in k.cat.links if ro == "code"} == {
        "nb/b.ipynb"}


def test_a_jupyter_servers_session_list_names_the_kernel(tmp_path, project):
    k = Kernel(tmp_path, project, session_name=False)
    k.servers = [("k0", str(project / "x.ipynb")), ("k1", str(project / "nb" / "s.ipynb"))]
    k.until(0.2)
    assert k.cat.runs[1]["notebook"] == "nb/s.ipynb"
    assert k.cat.runs[1]["notebook_via"] == "server"


def test_in_the_fanotify_tier_the_kernels_own_write_of_a_notebook_is_its_output(tmp_path,
                                                                               project):
    k = Kernel(tmp_path, project, pids_known=True)
    k.cell(1.0, 1.3, "nbformat.write(nb, '../report.ipynb')",
           [(1.1, CLOSE_WRITE, "report.ipynb")])
    k.exit(2.0)
    answer(k)
    (sid,) = [sid for sid, s in k.cat.steps.items() if s.get("cell") == 1]
    assert k.step_files(sid, "output") == {"report.ipynb"}


def test_the_last_cell_ends_with_the_kernel(tmp_path, project):
    k = Kernel(tmp_path, project)
    k.cell(1.0, 50.0, "train()")  # still busy when the kernel is killed
    k.exit(2.0)
    (cell,) = k.cells()
    assert cell["ended_at"] == pytest.approx(k.clock.to_wall(T0 + 2.0))
    assert k.cat.runs[1]["status"] == "completed"
    assert json.dumps(k.cat.runs[1], default=str)  # nothing odd stored


def test_a_program_a_cell_starts_is_a_step_of_that_cell(tmp_path, project):
    k = Kernel(tmp_path, project)
    k.cell(1.0, 1.5, "!python train.py")
    k.until(1.2)
    child = info(201, ["python", "train.py"], ppid=k.pid, cwd=str(project / "nb"),
                 started=T0 + 1.2, ancestors=(k.pid, 1))
    k.asm.handle(ProcExec(T0 + 1.2, child))
    k.asm.handle(ProcExit(T0 + 1.4, 201, exit_code=0))
    k.exit(2.0)
    (cell,) = [sid for sid, st in k.cat.steps.items() if st.get("cell") == 1]
    (step,) = [st for st in k.cat.steps.values() if st.get("pid") == 201]
    assert step["parent_step_id"] == cell


def test_a_short_cells_row_written_after_it_ran_still_claims_its_files(tmp_path, project):
    """IPython's saving thread needs the GIL: a cell shorter than a tick may be over
    before its input is in the database."""
    k = Kernel(tmp_path, project)
    k.cell(1.0, 1.2, "rows = open('../d.csv').read()", [(1.1, CLOSE_NOWRITE, "d.csv")])
    k.cell(2.01, 2.03, "open('../m.pkl', 'w')", [(2.02, CLOSE_WRITE, "m.pkl")], commit=2.12)
    k.exit(3.0)
    answer(k)
    ids = [sid for sid, s in k.cat.steps.items() if s.get("cell") is not None]
    assert k.step_files(ids[0], "input") == {"d.csv"}
    assert k.step_files(ids[0], "output") == set()
    assert k.step_files(ids[1], "output") == {"m.pkl"}



def test_the_servers_checkpoints_are_no_files_of_the_kernel(tmp_path, project):
    k = Kernel(tmp_path, project)
    k.cell(1.0, 1.5, "x = 1")
    for name in (".ipynb_checkpoints/a-checkpoint.ipynb", ".virtual_documents/a.ipynb"):
        p = str(project / "nb" / name)
        k.pending.append((T0 + 1.2, FileEvent(T0 + 1.2, CLOSE_WRITE, p)))
    k.exit(2.5)
    answer(k)
    assert not [key for key in k.cat.links if key[2] != "code"]


def test_an_agent_restarted_beside_a_live_kernel_goes_on_with_its_cells(tmp_path, project):
    k = Kernel(tmp_path, project, session_name=False)
    k.cell(1.0, 1.2, "x = 1")
    k.until(1.5)
    k.cat.update_run(1, notebook="nb/a.ipynb", notebook_via="saved")  # found before
    # the agent stops and starts again; the kernel lives on
    k.cat.last_cell = lambda run_id: max(
        (s.get("cell") or 0 for s in k.cat.steps.values() if s["run_id"] == run_id), default=0)
    again, _, _ = make(project, probes=k.asm.probes)
    again.catalog = k.cat
    again.clock = k.clock
    row = {"id": 1, "root_step": min(k.cat.steps), "notebook": "nb/a.ipynb",
           "notebook_via": "saved"}
    kernel_info = info(k.pid, ["python", "-m", "ipykernel_launcher", "-f",
                               str(tmp_path / "runtime" / "kernel-k1.json")],
                       cwd=str(project / "nb"), started=T0,
                       environ=(("IPYTHONDIR", str(tmp_path / "ipy")),))
    again.reattach(row, kernel_info, [])
    k.asm = again
    k.cell(2.0, 2.2, "y = 2")
    k.exit(3.0)
    assert [(c["cell"], c["source"]) for c in k.cells()] == [(1, "x = 1"), (2, "y = 2")]
    assert k.cat.runs[1]["notebook"] == "nb/a.ipynb"
    assert not k.cat.params.get(1)  # nor the connection file as a param or input
    assert k.cat.io(1, "input") == {}


def test_the_connection_file_can_name_the_notebook(tmp_path, project):
    k = Kernel(tmp_path, project, session_name=False,
               connection={"shell_port": 1, "key": "x", "jupyter_session": "c.ipynb"})
    assert k.cat.runs[1]["notebook"] == "nb/c.ipynb"  # relative to the kernel's folder
    assert k.cat.runs[1]["notebook_via"] == "kernel"
