"""The notebook and kernel parsers (agent/rules/notebook.py) and the readers beside them
(agent/assembly/kernel.py): .ipynb, parameters cells, IPython's history.sqlite, a
kernel's command line and environment, a Jupyter server's session list, idleness."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from onlooker.agent.assembly import kernel
from onlooker.agent.rules import notebook as nb

# IPython's own schema (IPython/core/history.py HistoryAccessor.init_db)
HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (session integer primary key autoincrement, start
    timestamp, end timestamp, num_cmds integer, remark text);
CREATE TABLE IF NOT EXISTS history (session integer, line integer, source text,
    source_raw text, PRIMARY KEY (session, line));
CREATE TABLE IF NOT EXISTS output_history (session integer, line integer, output text,
    PRIMARY KEY (session, line));
"""


def history_db(path, sessions):
    """sessions: [(start Unix seconds, [(line, source)])]"""
    conn = sqlite3.connect(path)
    conn.executescript(HISTORY_SCHEMA)
    for start, lines in sessions:
        cur = conn.execute("INSERT INTO sessions VALUES (NULL, ?, NULL, NULL, '')",
                           (datetime.fromtimestamp(start).isoformat(" "),))
        for line, src in lines:
            conn.execute("INSERT INTO history VALUES (?, ?, ?, ?)",
                         (cur.lastrowid, line, src.rstrip(), src))
    conn.commit()
    conn.close()


def notebook_bytes(cells, **meta):
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4,
                       "nbformat_minor": 5}).encode()


def code(source, *, count=None, tags=(), outputs=()):
    return {"cell_type": "code", "execution_count": count, "metadata": {"tags": list(tags)},
            "outputs": list(outputs), "source": source}


# ---------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(("argv", "want"), [
    (["python", "-m", "ipykernel_launcher", "-f", "/run/kernel-abc.json"], "/run/kernel-abc.json"),
    (["/v/bin/python3.11", "-m", "ipykernel", "--f=/r/k.json"], "/r/k.json"),
    (["ipython", "kernel", "-f", "rel/k.json"], "/home/u/rel/k.json"),
    (["python", "-m", "ipykernel_launcher"], ""),
    (["python", "train.py", "-f", "x.json"], None),
    (["papermill", "a.ipynb", "b.ipynb"], None),
    (["R", "--slave", "-e", "IRkernel::main()", "--args", "/r/kernel-1.json"], "/r/kernel-1.json"),
    (["julia", "-i", "--color=yes", "/j/IJulia/src/kernel.jl", "/r/kernel-2.json"],
     "/r/kernel-2.json"),
])
def test_a_kernel_is_known_by_its_command_line(argv, want):
    assert nb.kernel_of(argv, None, "/home/u") == want


def test_only_ipython_kernels_keep_an_ipython_history():
    assert nb.other_kernel(["R", "--slave", "-e", "IRkernel::main()", "--args", "k.json"])
    assert not nb.other_kernel(["python", "-m", "ipykernel_launcher", "-f", "k.json"])


def test_the_kernel_id_is_in_its_connection_file_name():
    assert nb.kernel_id("/run/jupyter/kernel-5f1e-22.json") == "5f1e-22"
    assert nb.kernel_id("/tmp/tmpab12.json") is None


def test_the_notebook_a_kernel_serves_comes_from_its_environment_or_connection_file():
    assert nb.session_name({"JPY_SESSION_NAME": "/p/nb/a.ipynb"}, None, "/x") == "/p/nb/a.ipynb"
    assert nb.session_name({}, {"jupyter_session": "b.ipynb"}, "/p/nb") == "/p/nb/b.ipynb"
    assert nb.session_name({"JPY_SESSION_NAME": " "}, {"key": "x"}, "/p") is None
    assert nb.read_connection(b'{"jupyter_session": "x"}') == {"jupyter_session": "x"}
    assert nb.read_connection(b"[1]") is None and nb.read_connection(b"{") is None


def test_the_history_database_is_found_from_the_kernels_environment():
    assert nb.history_path({"IPYTHONDIR": "/h/ipy"}) == "/h/ipy/profile_default/history.sqlite"
    assert nb.history_path({"HOME": "/home/u"}) == "/home/u/.ipython/profile_default/history.sqlite"
    assert nb.history_path({"HOME": "/home/u"}, ["--profile=work"]) == \
        "/home/u/.ipython/profile_work/history.sqlite"
    assert nb.history_path({"HOME": "/u"}, ["--HistoryManager.hist_file=/d/h.db"]) == "/d/h.db"
    assert nb.history_path({}) is None
    assert nb.history_path({"IPYTHONDIR": "relative"}) is None


# ---------------------------------------------------------------------------- history


def test_history_sessions_and_inputs_are_read_without_writing(tmp_path):
    db = tmp_path / "history.sqlite"
    t0 = time.time() - 100
    history_db(db, [(t0, [(1, "old = 1\n")]),
                    (t0 + 50, [(1, "a = 1\n"), (2, "b = a + 1\n"), (3, "print(b)\n")])])
    before = db.read_bytes()
    sessions = nb.read_sessions(str(db))
    assert [s.number for s in sessions] == [1, 2]
    assert sessions[1].start == pytest.approx(t0 + 50, abs=1e-3) and not sessions[1].ended
    assert nb.read_inputs(str(db), 2) == [(1, "a = 1\n"), (2, "b = a + 1\n"), (3, "print(b)\n")]
    assert nb.read_inputs(str(db), 2, after=2) == [(3, "print(b)\n")]
    assert db.read_bytes() == before  # opened read-only
    assert nb.read_sessions(str(tmp_path / "none.sqlite")) == []
    assert nb.read_inputs(str(tmp_path / "none.sqlite"), 1) is None
    assert not (tmp_path / "none.sqlite").exists()  # never created


def test_a_kernel_takes_the_first_session_opened_after_its_start_that_no_other_took():
    s = [nb.Session(1, 100.0, True), nb.Session(2, 200.4, False), nb.Session(3, 201.0, False)]
    assert nb.pick_session(s, 200.0).number == 2
    assert nb.pick_session(s, 200.0, taken={2}).number == 3
    assert nb.pick_session(s, 300.0) is None  # opened before it started: another kernel's
    assert nb.pick_session(s, 100.5).number == 1  # within a second before (tick rounding)


def test_a_real_ipython_history_reads_back(tmp_path):
    """IPython's own HistoryManager writes the database the agent reads."""
    pytest.importorskip("IPython")
    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "sh = InteractiveShell.instance()\n"
        "sh.run_cell('x = 2', store_history=True)\n"
        "sh.run_cell('y = x * 3\\nprint(y)', store_history=True)\n"
        "sh.history_manager.save_thread.stop()\n"
    )
    env = {"IPYTHONDIR": str(tmp_path / "ipy"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120,
                   capture_output=True)
    path = nb.history_path(env)
    sessions = nb.read_sessions(path)
    assert len(sessions) == 1
    assert nb.read_inputs(path, sessions[0].number) == [(1, "x = 2"), (2, "y = x * 3\nprint(y)")]


# ---------------------------------------------------------------------------- notebooks


def test_a_saved_notebook_gives_its_cells_counts_tags_and_outputs():
    data = notebook_bytes([
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n"]},
        code(["alpha = 0.1\n", "name = 'x'"], count=1, tags=["parameters"]),
        code("print('epoch 1 loss 0.5')", count=2, outputs=[
            {"output_type": "stream", "name": "stdout", "text": ["epoch 1 loss 0.5\n"]}]),
        code("1/0", count=3, outputs=[{"output_type": "error", "ename": "ZeroDivisionError",
                                       "evalue": "x", "traceback": []}]),
        code("acc", count=4, outputs=[{"output_type": "execute_result", "execution_count": 4,
                                       "data": {"text/plain": "accuracy: 0.9"}, "metadata": {}}]),
    ], language_info={"name": "python"})
    got = nb.parse_ipynb(data)
    assert got.language == "python"
    assert [c.kind for c in got.cells] == ["markdown", "code", "code", "code", "code"]
    cells = got.code()
    assert cells[0].source == "alpha = 0.1\nname = 'x'" and cells[0].tags == ("parameters",)
    assert [c.execution_count for c in cells] == [1, 2, 3, 4]
    assert [c.error for c in cells] == [False, False, True, False]
    assert nb.output_text(got) == b"epoch 1 loss 0.5\naccuracy: 0.9\n"
    assert nb.parse_ipynb(b"not json") is None and nb.parse_ipynb(b"[]") is None


def test_parameters_come_from_the_parameters_cell_then_papermills_injected_one():
    got = nb.parse_ipynb(notebook_bytes([
        code("alpha = 0.1\nepochs: int = 3\nlayers = [1, 2]\nlr = compute()\nimport os",
             tags=["parameters"]),
        code("# Parameters\nalpha = 0.5\n", tags=["injected-parameters"]),
        code("beta = 9"),
    ]))
    assert nb.parameters(got) == {"alpha": 0.5, "epochs": 3, "layers": [1, 2]}
    assert nb.assignments("a = b = 'x'\nx, y = 1, 2") == {"a": "x", "b": "x"}
    assert nb.assignments("def (") == {}


def test_a_notebook_matches_the_sources_a_kernel_executed():
    got = nb.parse_ipynb(notebook_bytes([code("a = 1\n"), code("b = 2  \nprint(b)")]))
    assert nb.matches(got, ["a = 1", "b = 2\nprint(b)\n", "other"]) == 2
    assert nb.matches(got, ["", "c = 3"]) == 0
    assert nb.first_line("\n\n  import csv\nx") == "import csv"


# ---------------------------------------------------------------------------- readers


def test_a_jupyter_servers_session_list_names_the_kernels_notebook(tmp_path):
    sessions = [{"id": "s1", "path": "notebooks/explore.ipynb", "kernel": {"id": "k-1"}},
                {"id": "s2", "path": "other.ipynb", "kernel": {"id": "k-2"}}]
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            body = json.dumps(sessions).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "jpserver-123.json").write_text(json.dumps({
            "url": f"http://127.0.0.1:{server.server_port}/", "token": "tok",
            "root_dir": "/proj", "pid": 123}))
        (tmp_path / "jpserver-9.json").write_text("{broken")
        (tmp_path / "kernel-k-1.json").write_text("{}")
        got = kernel.server_sessions(str(tmp_path))
    finally:
        server.shutdown()
        server.server_close()
    assert got == [("k-1", "/proj/notebooks/explore.ipynb"), ("k-2", "/proj/other.ipynb")]
    assert seen == [("/api/sessions", "token tok")]
    assert kernel.server_sessions(str(tmp_path / "missing")) == []


def test_a_server_elsewhere_is_never_asked(tmp_path):
    (tmp_path / "jpserver-1.json").write_text(json.dumps({"url": "http://10.1.2.3:8888/",
                                                          "token": "t", "root_dir": "/p"}))
    assert kernel.server_sessions(str(tmp_path)) == []


@pytest.mark.parametrize(("code_", "idle"), [
    ("import select; e = select.epoll(); print('r', flush=True); e.poll(30)", True),
    ("import select; print('r', flush=True); select.select([], [], [], 30)", True),
    ("import time; print('r', flush=True); time.sleep(30)", False),
])
def test_a_process_waiting_in_its_event_loop_is_idle(code_, idle):
    proc = subprocess.Popen([sys.executable, "-c", code_], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "r\n"
        deadline = time.monotonic() + 10
        got = kernel.main_thread_idle(proc.pid)
        while got is not idle and time.monotonic() < deadline:  # until it is in the call
            time.sleep(0.02)
            got = kernel.main_thread_idle(proc.pid)
        if got is None:
            pytest.skip("this kernel hides wait channels")
        assert got is idle
    finally:
        proc.kill()
        proc.wait()
    assert kernel.main_thread_idle(proc.pid) is None  # gone
