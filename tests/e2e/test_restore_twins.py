"""End to end: the real agent records the four-stage pipeline; its outputs are deleted
and damaged; `restore --outputs` brings back exactly the recorded bytes; a stage run
again on restored, unchanged inputs is a twin of its first run."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest

from .pipeline import STAGES, run_stage, write_project
from .test_pipeline import cli, need_root, runs_json, show_json, started
from .test_robustness import settle

pytestmark = pytest.mark.e2e


def b3(path: Path) -> str:
    return "blake3:" + blake3.blake3(path.read_bytes()).hexdigest()


def by_stage(project: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in reversed(runs_json(project)):  # oldest first
        out.setdefault(Path(r["command"][1]).stem, []).append(r)
    return out


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_restore_round_trip_and_twins(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    write_project(project)
    started(project, tier)
    try:
        for _, args in STAGES:
            run_stage(project, args)
        settle(project)
        stages = by_stage(project)
        train = show_json(project, stages["train"][0]["id"])
        featurize = show_json(project, stages["featurize"][0]["id"])
        assert {e["path"] for e in train["outputs"]} == {"model.pkl"}

        # the model deleted: restored byte for byte
        (project / "model.pkl").unlink()
        res = cli(project, "restore", str(train["id"]), "--outputs", "--json")
        report = json.loads(res.stdout)
        assert report["ok"] and report["counts"]["restored"] == 1
        for entry in train["outputs"]:
            assert b3(project / entry["path"]) == entry["hash"], entry

        # featurize's outputs: one deleted, one overwritten with content never recorded
        feats = {e["path"]: e["hash"] for e in featurize["outputs"]}
        assert len(feats) == 2
        gone, edited = sorted(feats)
        (project / gone).unlink()
        (project / edited).write_bytes(b"edited by hand")
        refused = cli(project, "restore", str(featurize["id"]), "--outputs", check=False)
        assert refused.returncode == 1 and "1 refused" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert (project / edited).read_bytes() == b"edited by hand"
        assert b3(project / gone) == feats[gone]  # the one in no one's way came back
        cli(project, "restore", str(featurize["id"]), "--outputs", "--force")
        for path, want in feats.items():
            assert b3(project / path) == want, path

        # evaluate again, on the restored model and features: the same computation
        run_stage(project, STAGES[-1][1])
        settle(project)
    finally:
        cli(project, "stop")
    evals = by_stage(project)["evaluate"]
    assert len(evals) == 2, evals
    first, second = (show_json(project, r["id"]) for r in evals)
    assert second["twins"] == [first["id"]] and first["twins"] == [second["id"]]
    assert second["nondeterministic"] == []  # the pipeline is seeded: same metrics
    shown = cli(project, "show", str(second["id"])).stdout
    assert f"twin of run {first['id']}" in shown
    listed = json.loads(cli(project, "runs", "--where", f"twin_of = {first['id']}",
                            "--json").stdout)
    assert [r["id"] for r in listed] == [second["id"]]
    # the other stages ran once: no twins
    assert show_json(project, train["id"])["twins"] == []
