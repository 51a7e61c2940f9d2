"""End to end: a real Jupyter kernel, papermill and nbconvert under the real agent.

The kernel is started and driven through jupyter_client the way a front end does
(a KernelManager, then `execute` on its client, one cell after another, then the
notebook saved with its outputs, then a shutdown). Nothing in the notebook or the
kernel knows onlooker. Each test states which files each cell read and wrote and
checks `onlooker show --json`. Both tiers; skipped without ipykernel and
jupyter_client (the `libs` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from onlooker.store.objects import hash_bytes

from .test_pipeline import cli, need_root, runs_json, show_json, started, wait_for

pytestmark = pytest.mark.e2e

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
nbformat = pytest.importorskip("nbformat")

CELLS = [
    # (source, tags, files read, files written) -- paths from the project root
    ("alpha = 0.5", ["parameters"], set(), set()),
    ("import csv\nrows = list(csv.reader(open('../data/train.csv')))\n"
     "lr = float(open('../params.yaml').read().split(':')[1])\nprint('rows', len(rows))",
     [], {"data/train.csv", "params.yaml"}, set()),
    ("import os, pickle\nos.makedirs('../models', exist_ok=True)\n"
     "model = {'w': alpha * len(rows)}\n"
     "with open('../models/model.pkl', 'wb') as f:\n    pickle.dump(model, f)",
     [], set(), {"models/model.pkl"}),
    ("import json\nwith open('../metrics.json', 'w') as f:\n"
     "    json.dump({'accuracy': 0.75}, f)\nprint('epoch 1 loss 0.25')",
     [], set(), {"metrics.json"}),
]


def _env(tmp: Path) -> dict[str, str]:
    """The kernel's environment: a HOME and IPYTHONDIR of the test's own."""
    home = tmp / "home"
    for sub in ("tmp", "runtime", ".ipython"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home), IPYTHONDIR=str(home / ".ipython"),
                JUPYTER_RUNTIME_DIR=str(home / "runtime"), TMPDIR=str(home / "tmp"),
                JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")


def _project(tmp: Path) -> Path:
    project = tmp / "proj"
    (project / "data").mkdir(parents=True)
    (project / "notebooks").mkdir()
    (project / "data" / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (project / "params.yaml").write_text("lr: 0.1\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags})
                for src, tags, _, _ in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, project / "notebooks" / "explore.ipynb")
    return project


def _kernel_run(project: Path) -> dict | None:
    for r in runs_json(project):
        if "ipykernel_launcher" in " ".join(r["command"]):
            return r
    return None


def _cells(project: Path, run_id: int) -> list[dict]:
    return [s for s in show_json(project, run_id)["steps"] if s.get("cell") is not None]


def _seen(cells: list[dict], n: int) -> bool:
    """The agent shows cell `n` ended, with at least the files it used."""
    if len(cells) < n or cells[n - 1]["ended_at"] is None:
        return False
    _, _, read, wrote = CELLS[n - 1]
    return read <= set(cells[n - 1]["inputs"]) and wrote <= set(cells[n - 1]["outputs"])


def _drive(project: Path, tmp: Path, *, session_name: bool) -> None:
    """A front end's session: start a kernel for the notebook, run its cells one by
    one, save it with outputs and counts, shut the kernel down."""
    env = _env(tmp)
    if session_name:  # what jupyter_server 2 and VS Code tell the kernel they start
        env["JPY_SESSION_NAME"] = str(project / "notebooks" / "explore.ipynb")
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])
    km = jupyter_client.KernelManager(
        kernel_name="python3", connection_file=str(runtime / f"kernel-{uuid.uuid4()}.json"))
    km.kernel_spec.argv[0] = sys.executable  # this venv's interpreter, as a venv kernel
    km.start_kernel(cwd=str(project / "notebooks"), env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        wait_for(lambda: _kernel_run(project) is not None, timeout=30)
        run_id = _kernel_run(project)["id"]
        path = project / "notebooks" / "explore.ipynb"
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            outputs: list = []

            def keep(msg, outputs=outputs):
                if msg["msg_type"] in ("stream", "execute_result", "error"):
                    content = dict(msg["content"])
                    outputs.append(nbformat.v4.output_from_msg(
                        {"msg_type": msg["msg_type"], "content": content,
                         "header": msg["header"]}))

            reply = kc.execute_interactive(cell.source, output_hook=keep, timeout=60)
            assert reply["content"]["status"] == "ok", reply["content"]
            cell.execution_count = reply["content"]["execution_count"]
            cell.outputs = outputs
            # A person reads a cell's output before running the next: by then the agent
            # has seen the cell end, and the files it used (the cells' order is what is
            # checked here; two cells run within the file sources' lag of each other are
            # a documented limit).
            wait_for(lambda n=i + 1: _seen(_cells(project, run_id), n), timeout=30)
        nbformat.write(nb, path)  # the front end saves the notebook
        wait_for(lambda: show_json(project, run_id)["notebook"] is not None, timeout=30)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    wait_for(lambda: _kernel_run(project)["status"] != "running", timeout=60)


@pytest.mark.parametrize("session_name", [False, True], ids=["saved", "session-name"])
@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_a_kernel_session_is_one_run_whose_cells_are_its_steps(tmp_path, tier, session_name):
    need_root(tier)
    project = _project(tmp_path)
    opened = hash_bytes((project / "notebooks" / "explore.ipynb").read_bytes())
    started(project, tier)
    try:
        _drive(project, tmp_path, session_name=session_name)
    finally:
        cli(project, "stop")
    runs = runs_json(project)
    assert len(runs) == 1, [r["command"] for r in runs]
    run = show_json(project, runs[0]["id"])
    assert run["name"] == "notebooks/explore.ipynb (kernel)"
    assert run["notebook"] == {"path": "notebooks/explore.ipynb",
                               "found_by": "kernel" if session_name else "saved"}
    assert run["status"] in ("completed", "ended")
    cells = [s for s in run["steps"] if s["cell"] is not None]
    assert [(c["cell"], c["source"]) for c in cells] == [
        (i + 1, src) for i, (src, _, _, _) in enumerate(CELLS)]
    for c, (_, _, read, wrote) in zip(cells, CELLS, strict=True):
        assert set(c["inputs"]) == read, (c["cell"], c["inputs"])
        assert set(c["outputs"]) == wrote, (c["cell"], c["outputs"])
        assert c["started_at"] <= c["ended_at"] and c["status"] == "completed"
    assert {e["path"] for e in run["inputs"]} == {"data/train.csv", "params.yaml"}
    assert {e["path"] for e in run["outputs"]} == {"models/model.pkl", "metrics.json"}
    assert all(e["basis"] == "window" for e in run["inputs"] + run["outputs"])
    code = [e for e in run["code"] if e["path"] == "notebooks/explore.ipynb"]
    assert code and all(e["kind"] == "notebook" for e in code)
    saved = hash_bytes((project / "notebooks" / "explore.ipynb").read_bytes())
    hashes = {e["hash"] for e in code}
    # The notebook as saved; where the kernel named it at its start, as opened too (found
    # by its saves, the first content of it seen while the kernel lived).
    assert saved in hashes and hashes <= {saved, opened}
    if session_name:
        assert hashes == {saved, opened}
    # the notebook's parameters cell, and the config file a cell read
    assert run["params"] == {"alpha": 0.5, "params.yaml:lr": 0.1}
    # from the metrics file cell [4] wrote, and from what it printed (the saved outputs)
    assert run["metrics"]["metrics.json:accuracy"] == 0.75
    assert run["metrics"]["loss"]["last"] == 0.25
    text = cli(project, "show", str(run["id"])).stdout
    assert "cells" in text and "[2]" in text and "import csv" in text


NB_PAPERMILL = {
    "cells": [
        {"cell_type": "code", "execution_count": None, "id": "p", "metadata": {
            "tags": ["parameters"]}, "outputs": [], "source": "alpha = 0.1\n"},
        {"cell_type": "code", "execution_count": None, "id": "w", "metadata": {}, "outputs": [],
         "source": "rows = open('data/train.csv').read().split()\n"
                   "open('result.txt', 'w').write(str(alpha * len(rows)))\n"},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                "name": "python3"}, "language_info": {"name": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def _batch(project: Path, tmp: Path, argv: list[str]) -> None:
    env = _env(tmp)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, (argv, res.stdout[-2000:], res.stderr[-2000:])


@pytest.mark.parametrize("tool", ["papermill", "nbconvert"])
@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_a_notebook_executed_in_batch_is_one_run(tmp_path, tier, tool):
    need_root(tier)
    if tool == "papermill":
        pytest.importorskip("papermill")
        argv, out = ["papermill", "in.ipynb", "out.ipynb", "-p", "alpha", "0.5"], "out.ipynb"
    else:
        pytest.importorskip("nbconvert")
        argv = ["jupyter", "nbconvert", "--to", "notebook", "--execute", "in.ipynb",
                "--output", "executed.ipynb"]
        out = "executed.ipynb"
    if shutil.which(argv[0], path=str(Path(sys.executable).parent)) is None:
        pytest.skip(f"{argv[0]} is not installed")
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (project / "in.ipynb").write_text(json.dumps(NB_PAPERMILL))
    started(project, tier)
    try:
        _batch(project, tmp_path, argv)
        wait_for(lambda: bool(runs_json(project)) and all(
            r["status"] != "running" for r in runs_json(project)), timeout=60)
    finally:
        cli(project, "stop")
    runs = runs_json(project)
    assert len(runs) == 1, [r["command"] for r in runs]
    run = show_json(project, runs[0]["id"])
    assert {e["path"] for e in run["inputs"]} == {"data/train.csv"}
    assert {e["path"] for e in run["outputs"]} == {out, "result.txt"}
    assert "in.ipynb" in {e["path"] for e in run["code"]}
    want_alpha = 0.5 if tool == "papermill" else 0.1
    assert run["params"].get("alpha") == want_alpha, run["params"]
    assert (project / "result.txt").read_text() == str(want_alpha * 3)
