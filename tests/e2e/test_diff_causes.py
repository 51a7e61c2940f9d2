"""End to end: `onlooker diff` of two final stages names the upstream cause.

The real agent watches the four-stage pipeline of plain scripts (tests/e2e/pipeline.py)
run three times: as written, with one param of featurize changed in params.yaml, then
with the raw data file rewritten by hand. The diff of the evaluate runs must name the
param (through the featurize runs), then the data file (no run produced it).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from .pipeline import PARAMS, STAGES, run_stage, write_project
from .test_pipeline import cli, need_root, runs_json, started
from .test_robustness import settle

pytestmark = pytest.mark.e2e


def run_pipeline(project: Path) -> None:
    for _, args in STAGES:
        run_stage(project, args)
    settle(project)  # every run closed and hashed before a person edits a file


def other_data() -> str:
    rnd = random.Random(2)
    lines = ["f0,f1,f2,f3,label"]
    for _ in range(300):
        y = rnd.randint(0, 1)
        lines.append(",".join(f"{rnd.gauss(2 * y, 1):.4f}" for _ in range(4)) + f",{y}")
    return "\n".join(lines) + "\n"


def diff_json(project: Path, a: int, b: int) -> dict:
    return json.loads(cli(project, "diff", str(a), str(b), "--json").stdout)


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_diff_of_the_final_stages_names_the_param_then_the_data(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    write_project(project)
    assert "max_features: 8" in PARAMS
    started(project, tier)
    try:
        run_pipeline(project)
        (project / "params.yaml").write_text(PARAMS.replace("max_features: 8", "max_features: 2"))
        run_pipeline(project)
        (project / "data" / "data.csv").write_text(other_data())
        run_pipeline(project)
    finally:
        cli(project, "stop")
    ids: dict[str, list[int]] = {}
    for r in runs_json(project):
        ids.setdefault(Path(r["command"][1]).stem, []).append(r["id"])
    ids = {stage: sorted(found) for stage, found in ids.items()}
    assert {stage: len(found) for stage, found in ids.items()} == {
        "prepare": 3, "featurize": 3, "train": 3, "evaluate": 3}
    (e1, e2, e3), (f1, f2, _), (_, p2, p3) = ids["evaluate"], ids["featurize"], ids["prepare"]

    # one param changed: it is the one cause, found at the featurize runs
    param = diff_json(project, e1, e2)
    assert [c["key"] for c in param["causes"]] == ["params.yaml:featurize.max_features"]
    (cause,) = param["causes"]
    assert (cause["kind"], cause["old"], cause["new"]) == ("param", 8, 2)
    assert cause["runs"] == [f1, f2]
    assert [hop["paths"] for hop in cause["hops"]] == [["data/features/test.pkl"]]
    changed_inputs = {e["key"] for e in param["sections"]["inputs"]}
    assert changed_inputs == {"model.pkl", "data/features/test.pkl"}
    shown = cli(project, "diff", str(e1), str(e2))
    text = " ".join(shown.stdout.split())
    assert f"produced by featurize runs {f1} and {f2}, whose " in text
    assert "params.yaml:featurize.max_features went 8 -> 2" in text

    # the raw data rewritten by hand: the cause is that file, two hops up, with no producer
    data = diff_json(project, e2, e3)
    assert [c["key"] for c in data["causes"]] == ["data/data.csv"]
    (cause,) = data["causes"]
    assert cause["kind"] == "input" and cause["producers"] == {"old": None, "new": None}
    assert cause["runs"] == [p2, p3]
    assert cause["sentence"].endswith("whose input data/data.csv changed (no run produced it)")
