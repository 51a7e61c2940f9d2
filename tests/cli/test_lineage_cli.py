"""`onlooker lineage`, `pipeline` and `outdated` over real catalogs: formats and errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.store.test_lineage import four_stage_project


@pytest.fixture
def proj(tmp_path):
    """The four-stage pipeline, run twice with featurize's param changed in between."""
    p = four_stage_project(tmp_path)
    yield p
    p.close()


def one_sentence(res, *words: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in lines[0], lines[0]


# -- lineage --------------------------------------------------------------------------------


def test_lineage_tree_and_json(proj, invoke):
    root = str(proj.root)
    res = invoke("-C", root, "lineage", "model.pkl")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("model.pkl  ")
    assert lines[1].startswith(f"└─ run {proj.second['train']}  [train]  python3 src/train.py")
    assert any("data/data.csv" in line and "(no run wrote it)" in line for line in lines)
    assert any("(see above)" in line for line in lines)  # prepared data: two producers
    assert not any("src/" in line.split("  ")[0] for line in lines)
    got = json.loads(invoke("-C", root, "lineage", "model.pkl", "--json").stdout)
    assert got == json.loads(json.dumps(proj.cat.lineage("model.pkl")))
    down = json.loads(invoke("-C", root, "lineage", str(proj.first["featurize"]), "--down",
                             "--depth", "0", "--json").stdout)
    assert down["direction"] == "down" and down["depth"] == 0
    assert {n["path"] for n in down["nodes"] if n["type"] == "version"} == {
        "data/features/train.pkl", "data/features/test.pkl"}


def test_lineage_dot_and_mermaid(proj, invoke):
    root = str(proj.root)
    model = proj.cat.latest_version("model.pkl")["hash"]
    dot = invoke("-C", root, "lineage", "model.pkl", "--dot")
    assert dot.exit_code == 0 and dot.stdout.startswith("digraph lineage {")
    assert f'"run:{proj.second["train"]}" -> "model.pkl@{model}";' in dot.stdout
    assert dot.stdout.rstrip().endswith("}")
    mermaid = invoke("-C", root, "lineage", "model.pkl", "--mermaid").stdout
    lines = mermaid.splitlines()
    assert lines[0] == "flowchart LR"
    assert any(re.fullmatch(r'  n\d+\[\("model\.pkl<br/>[0-9a-f]{12}"\)\]', line)
               for line in lines)
    assert sum(" --> " in line for line in lines) == len(
        proj.cat.lineage("model.pkl")["edges"])


def test_lineage_paths_from_where_the_person_stands(proj, invoke):
    sub = proj.root / "data" / "features"
    res = invoke("-C", str(sub), "lineage", "train.pkl", "--depth", "0", "--json")
    assert res.exit_code == 0, res.stderr
    assert [n["path"] for n in json.loads(res.stdout)["nodes"]] == ["data/features/train.pkl"]
    old = proj.cat.versions("model.pkl")[0]["hash"]
    res = invoke("-C", str(proj.root), "lineage", f"model.pkl@{old[7:15]}", "--json")
    assert json.loads(res.stdout)["targets"] == [f"model.pkl@{old}"]


def test_lineage_errors(proj, invoke, tmp_path_factory):
    root = str(proj.root)
    res = invoke("-C", root, "lineage", "nowhere.csv")
    assert res.exit_code == 1
    one_sentence(res, "nowhere.csv is not in the catalog")
    res = invoke("-C", root, "lineage", "model.pkl@ffffffffff")
    assert res.exit_code == 1
    one_sentence(res, "no version whose hash starts with ffffffffff")
    res = invoke("-C", root, "lineage", "4242")
    assert res.exit_code == 1
    one_sentence(res, "4242")
    res = invoke("-C", root, "lineage", "model.pkl", "--depth", "-1")
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    res = invoke("-C", root, "lineage")
    assert res.exit_code == 2
    empty = tmp_path_factory.mktemp("elsewhere")
    res = invoke("-C", str(empty), "lineage", "x")
    assert res.exit_code == 1
    one_sentence(res, "onlooker init")


def test_lineage_of_a_file_no_run_touched(proj, invoke):
    proj.put("notes.txt", "by hand")
    res = invoke("-C", str(proj.root), "lineage", "notes.txt")
    assert res.exit_code == 0
    assert res.stdout.startswith("notes.txt  ")
    assert "no run wrote it while the agent watched" in res.stderr
    # --depth 0 follows no run, by asking: nothing to say about it
    res = invoke("-C", str(proj.root), "lineage", "model.pkl", "--depth", "0")
    assert res.exit_code == 0 and res.stderr == ""
    assert res.stdout.startswith("model.pkl  ") and len(res.stdout.splitlines()) == 1


# -- pipeline -------------------------------------------------------------------------------


def test_pipeline_formats(proj, invoke):
    root = str(proj.root)
    res = invoke("-C", root, "pipeline")
    assert res.exit_code == 0, res.stderr
    titles = [line for line in res.stdout.splitlines() if line.startswith("stage ")]
    assert titles == ["stage prepare", "stage featurize", "stage train", "stage evaluate"]
    assert "python3 src/train.py data/features model.pkl --n-est {n-est}" in res.stdout
    assert "featurize -> train" in res.stdout
    got = json.loads(invoke("-C", root, "pipeline", "--json").stdout)
    assert got == json.loads(json.dumps(proj.cat.pipeline()))
    dot = invoke("-C", root, "pipeline", "--dot").stdout
    assert dot.startswith("digraph pipeline {")
    assert '"prepare" -> "featurize" [label="data/prepared/test.csv, ' in dot
    mermaid = invoke("-C", root, "pipeline", "--mermaid").stdout.splitlines()
    assert mermaid[0] == "flowchart LR" and len(mermaid) == 1 + 4 + 4
    text = invoke("-C", root, "pipeline", "--dvc-yaml").stdout
    assert list(yaml.safe_load(text)["stages"]) == ["prepare", "featurize", "train",
                                                   "evaluate"]


def test_pipeline_dvc_yaml_to_a_file(proj, invoke):
    root = str(proj.root)
    res = invoke("-C", root, "pipeline", "--dvc-yaml", "dvc.yaml")
    assert res.exit_code == 0, res.stderr
    assert "wrote 4 stages to" in res.stderr and res.stdout == ""
    first = (proj.root / "dvc.yaml").read_text()
    assert yaml.safe_load(first)["stages"]["train"]["outs"] == ["model.pkl"]
    again = invoke("-C", root, "pipeline", "--dvc-yaml", "dvc.yaml")
    assert again.exit_code == 2
    one_sentence(again, "exists", "--force")
    assert invoke("-C", root, "pipeline", "--dvc-yaml", "dvc.yaml", "--force").exit_code == 0
    # in a subfolder: the stages work from the project's root
    (proj.root / "pipelines").mkdir()
    assert invoke("-C", root, "pipeline", "--dvc-yaml", "pipelines").exit_code == 0
    sub = yaml.safe_load((proj.root / "pipelines" / "dvc.yaml").read_text())["stages"]
    assert sub["train"]["wdir"] == ".." and sub["train"]["outs"] == ["model.pkl"]
    outside = invoke("-C", root, "pipeline", "--dvc-yaml", str(proj.root.parent / "x.yaml"))
    assert outside.exit_code == 2
    one_sentence(outside, "outside the project")
    both = invoke("-C", root, "pipeline", "--dvc-yaml", "--json")
    assert both.exit_code == 2


def test_pipeline_and_outdated_on_an_empty_catalog(tmp_path, invoke):
    assert invoke("init", str(tmp_path)).exit_code == 0
    res = invoke("-C", str(tmp_path), "pipeline")
    assert res.exit_code == 0 and res.stdout == "" and "no pipeline yet" in res.stderr
    assert json.loads(invoke("-C", str(tmp_path), "pipeline", "--json").stdout) == {
        "stages": [], "edges": [], "warnings": []}
    res = invoke("-C", str(tmp_path), "pipeline", "--dvc-yaml")
    assert res.exit_code == 1
    one_sentence(res, "no pipeline yet")
    res = invoke("-C", str(tmp_path), "outdated")
    assert res.exit_code == 0 and "everything is up to date" in res.stderr


# -- outdated -------------------------------------------------------------------------------


def test_outdated_lists_what_to_rerun_in_order(proj, invoke):
    root = str(proj.root)
    res = invoke("-C", root, "outdated")
    assert res.exit_code == 0 and res.stdout == ""
    assert "everything is up to date" in res.stderr and "hashed" in res.stderr
    proj.params(featurize_max_features=5)
    res = invoke("-C", root, "outdated")
    assert res.exit_code == 0, res.stderr
    tail = res.stdout.split("re-run, in this order:\n", 1)[1].splitlines()
    assert tail == ["  1. python src/featurize.py data/prepared data/features",
                    "  2. python3 src/train.py data/features model.pkl --n-est 100",
                    "  3. python src/evaluate.py model.pkl data/features"]
    assert "param params.yaml:featurize.max_features: 3 -> 5" in res.stdout
    assert "the files on disk, hashed (the agent is not running)" in res.stderr
    got = json.loads(invoke("-C", root, "outdated", "--json").stdout)
    assert got["current"] == "disk"
    assert [r["stage"] for r in got["runs"]] == ["featurize", "train", "evaluate"]


def test_outdated_uses_the_catalog_while_the_agent_runs(proj, invoke, monkeypatch):
    from onlooker.agent import lifecycle

    monkeypatch.setattr(lifecycle, "running_pid", lambda store_dir: os.getpid())
    proj.put("src/train.py", "# changed\n", seen=False)
    got = json.loads(invoke("-C", str(proj.root), "outdated", "--json").stdout)
    assert got["current"] == "catalog" and got["runs"] == []  # the agent has not seen it
    proj._version("src/train.py")
    got = json.loads(invoke("-C", str(proj.root), "outdated", "--json").stdout)
    assert [r["stage"] for r in got["runs"]] == ["train", "evaluate"]
    assert got["runs"][0]["reasons"][0]["kind"] == "code"


# -- real DVC -------------------------------------------------------------------------------


def test_dvc_accepts_the_inferred_pipeline(proj, invoke):
    """`dvc dag` and `dvc repro --dry` on the dvc.yaml written into a git + DVC project:
    DVC accepts it, and its DAG is the pipeline's (DVC comes with the `libs` extra)."""
    pytest.importorskip("dvc")
    root = proj.root
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def run(*argv: str) -> str:
        res = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, f"{' '.join(argv)}: {res.stdout}\n{res.stderr}"
        return res.stdout

    shutil.rmtree(root / ".git")  # the sample's stand-ins for git's and DVC's files
    (root / "dvc.lock").unlink()
    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    assert invoke("-C", str(root), "pipeline", "--dvc-yaml", "dvc.yaml").exit_code == 0
    pipe = proj.cat.pipeline()
    dag = run(sys.executable, "-m", "dvc", "dag", "--dot")
    assert set(re.findall(r'"([\w-]+)"\s*->\s*"([\w-]+)"', dag)) == {
        (e["from"], e["to"]) for e in pipe["edges"]}
    dry = run(sys.executable, "-m", "dvc", "repro", "--dry")
    assert re.findall(r"Running stage '([\w-]+)'", dry) == [s["name"] for s in pipe["stages"]]
    for s in pipe["stages"]:
        assert f"> {s['cmd']}" in dry
    assert Path(root / "dvc.lock").exists() is False  # --dry ran nothing
