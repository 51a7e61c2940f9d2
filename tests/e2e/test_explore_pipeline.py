"""End to end: lineage, the inferred pipeline and what is out of date, through the real
agent, on the four-stage pipeline of tests/e2e/pipeline.py run twice with one param
changed in between; held to the pipeline's own truth (its EXPECTED reads and writes)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .pipeline import EXPECTED, PARAMS, STAGES, run_stage, write_project
from .test_pipeline import cli, need_root, runs_json, started
from .test_robustness import settle

# the stages run as sys.executable: `python` under `.venv/bin/python -m pytest`,
# `python3` under `.venv/bin/pytest` (its shebang names python3)
PYTHON = os.path.basename(sys.executable)

pytestmark = pytest.mark.e2e
NAMES = [name for name, _ in STAGES]


def json_of(project: Path, *args: str) -> dict:
    return json.loads(cli(project, *args, "--json").stdout)


def set_param(project: Path, stage: str, key: str, value: object) -> None:
    """A person edits params.yaml (no run)."""
    data = yaml.safe_load((project / "params.yaml").read_text())
    data[stage][key] = value
    with open(project / "params.yaml", "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def truth_edges() -> set[tuple[str, str]]:
    """Stage A feeds stage B where B reads a file A writes."""
    return {(a, b) for a in NAMES for b in NAMES
            if a != b and EXPECTED[a]["outputs"] & EXPECTED[b]["inputs"]}


def truth_params() -> dict[str, list[str]]:
    """The keys of each stage's own section of params.yaml, for the stages that read it."""
    sections = yaml.safe_load(PARAMS)
    return {name: sorted(f"{name}.{k}" for k in sections.get(name, {}))
            for name in NAMES if "params.yaml" in EXPECTED[name]["inputs"]}


def downstream(stage: str) -> list[str]:
    """The stage and every stage after it in the data flow, in pipeline order."""
    found = {stage}
    for _ in NAMES:
        found |= {b for a, b in truth_edges() if a in found}
    return [n for n in NAMES if n in found]


def check_pipeline(pipe: dict) -> None:
    assert [s["name"] for s in pipe["stages"]] == NAMES
    params = truth_params()
    for s in pipe["stages"]:
        want = EXPECTED[s["name"]]
        assert set(s["outs"]) == want["outputs"], s
        assert set(s["deps"]) == (want["inputs"] | want["code"]) - {"params.yaml"}, s
        assert set(s["code"]) == want["code"], s
        assert s["params"] == ({"params.yaml": params[s["name"]]} if s["name"] in params
                               else {}), s
        assert len(s["runs"]) == 2 and s["latest_run"] == s["runs"][-1]
        assert s["cmd"] == f"{PYTHON} " + " ".join(dict(STAGES)[s["name"]])
    assert {(e["from"], e["to"]) for e in pipe["edges"]} == truth_edges()
    assert pipe["warnings"] == []


def check_dvc_yaml(text: str) -> None:
    """The dvc.yaml has the pipeline's stages, deps, params and outs."""
    stages = yaml.safe_load(text)["stages"]
    assert list(stages) == NAMES
    params = truth_params()
    for name, stage in stages.items():
        want = EXPECTED[name]
        assert stage["cmd"] == f"{PYTHON} " + " ".join(dict(STAGES)[name])
        assert set(stage["deps"]) == (want["inputs"] | want["code"]) - {"params.yaml"}
        assert set(stage["outs"]) == want["outputs"]
        assert stage.get("params") == params.get(name)


def check_with_dvc(project: Path, text: str, pipe: dict, where: Path) -> None:
    """Real DVC accepts the dvc.yaml in a git + DVC copy of the project, and its DAG is
    the pipeline's (run where DVC is installed: the `libs` extra; without it,
    tests/cli/test_lineage_cli.py's DVC test says it was skipped)."""
    shutil.copytree(project, where, ignore=shutil.ignore_patterns(".onlooker"))
    (where / "dvc.yaml").write_text(text)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def dvc(*args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=where, env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"dvc {' '.join(args)}: {res.stdout}\n{res.stderr}"
        return res.stdout

    dvc("init", "-q")
    dag = dvc("dag", "--dot")
    edges = set(re.findall(r'"([\w-]+)"\s*->\s*"([\w-]+)"', dag))
    assert edges == {(e["from"], e["to"]) for e in pipe["edges"]}, dag
    dry = dvc("repro", "--dry")
    ran = re.findall(r"Running stage '([\w-]+)'", dry)
    assert sorted(ran) == sorted(NAMES), dry
    for a, b in truth_edges():
        assert ran.index(a) < ran.index(b), dry
    for s in pipe["stages"]:
        assert f"> {s['cmd']}" in dry, dry


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_lineage_pipeline_and_outdated_of_a_pipeline_run_twice(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    write_project(project)
    started(project, tier)
    try:
        for _, args in STAGES:
            run_stage(project, args)
        # A person's edit once the agent closed the runs: in the unprivileged tier, a
        # change made while a run may still be alive is that run's (its time window).
        settle(project)
        set_param(project, "featurize", "max_features", 3)
        for _, args in STAGES:
            run_stage(project, args)
        settle(project)
        runs = sorted(runs_json(project), key=lambda r: r["id"])
        by_stage: dict[str, list[int]] = {}
        for r in runs:
            by_stage.setdefault(Path(r["command"][1]).stem, []).append(r["id"])
        assert {k: len(v) for k, v in by_stage.items()} == {n: 2 for n in NAMES}

        # lineage: the model traces back to the raw data, through pass 2's runs
        graph = json_of(project, "lineage", "model.pkl")
        run_nodes = {n["run"]: n for n in graph["nodes"] if n["type"] == "run"}
        paths = {n["path"] for n in graph["nodes"] if n["type"] == "version"}
        assert "data/data.csv" in paths and "model.pkl" in paths
        assert not any(p.startswith("src/") for p in paths)  # code is never an edge
        assert by_stage["train"][1] in run_nodes and by_stage["featurize"][1] in run_nodes
        assert by_stage["train"][0] not in run_nodes
        assert by_stage["featurize"][0] not in run_nodes
        assert {n["stage"] for n in run_nodes.values()} == {"prepare", "featurize", "train"}
        tree = cli(project, "lineage", "model.pkl").stdout
        assert "data/data.csv" in tree and "[featurize]" in tree
        # down from pass 1's features: only pass 1's train and evaluate came from them
        old = json_of(project, "show", str(by_stage["featurize"][0]))["outputs"]
        feats = next(e["hash"] for e in old if e["path"] == "data/features/train.pkl")
        down = json_of(project, "lineage", f"data/features/train.pkl@{feats[7:19]}", "--down")
        assert {n["run"] for n in down["nodes"] if n["type"] == "run"} == {
            by_stage["train"][0], by_stage["evaluate"][0]}

        # the inferred pipeline, and DVC's view of it
        pipe = json_of(project, "pipeline")
        check_pipeline(pipe)
        text = cli(project, "pipeline", "--dvc-yaml").stdout
        check_dvc_yaml(text)
        if importlib.util.find_spec("dvc") is not None:
            check_with_dvc(project, text, pipe, tmp_path / "dvc")

        # up to date; then a param changed while the agent watches
        report = json_of(project, "outdated")
        assert report["current"] == "catalog" and report["runs"] == [], report
        set_param(project, "featurize", "max_features", 5)
        settle(project)
        report = json_of(project, "outdated")
        assert [r["stage"] for r in report["runs"]] == downstream("featurize"), report
        assert report["runs"][0]["reasons"] == [{
            "kind": "param", "key": "params.yaml:featurize.max_features",
            "path": "params.yaml", "was": 3, "now": 5}]
        assert [r["run"] for r in report["runs"]] == [by_stage[s][1]
                                                     for s in downstream("featurize")]
    finally:
        cli(project, "stop")
    # the agent stopped: the files on disk are hashed
    set_param(project, "featurize", "max_features", 3)
    report = json_of(project, "outdated")
    assert report["current"] == "disk" and report["runs"] == [], report
    with open(project / "data" / "data.csv", "a") as f:
        f.write("0.1,0.2,0.3,0.4,1\n")
    report = json_of(project, "outdated")
    assert [r["stage"] for r in report["runs"]] == downstream("prepare"), report
    assert [x["kind"] for x in report["runs"][0]["reasons"]] == ["input"]
    assert report["runs"][0]["reasons"][0]["path"] == "data/data.csv"
