"""End to end: runs the real agent recorded, exported and imported into a fresh project."""

from __future__ import annotations

import json

import pytest

from .pipeline import STAGES, run_stage, write_project
from .test_pipeline import cli, runs_json, show_json, started

pytestmark = pytest.mark.e2e


def comparable(run: dict) -> dict:
    """`show --json` without what an import may change: ids and origin."""
    out = {k: v for k, v in run.items() if k not in ("id", "origin")}
    out["steps"] = [{k: v for k, v in s.items() if k not in ("id", "parent")}
                    for s in run["steps"]]
    return out


def test_pipeline_runs_travel_to_a_fresh_project(tmp_path):
    project = tmp_path / "proj"
    write_project(project)
    started(project, "unprivileged")  # no root needed: poll + inotify, forced by config
    try:
        for _, args in STAGES:
            run_stage(project, args)
    finally:
        cli(project, "stop")
    originals = {r["id"]: show_json(project, r["id"]) for r in runs_json(project)}
    assert len(originals) == len(STAGES)
    archive = tmp_path / "runs.tar"
    cli(project, "export", "--all", "-o", str(archive))

    colleague = tmp_path / "colleague"
    colleague.mkdir()
    cli(colleague, "init")
    got = json.loads(cli(colleague, "import", str(archive), "--json").stdout)
    assert got["runs"] == len(STAGES) and got["objects"] > 0
    mapping = {m["source_id"]: m["id"] for m in got["mapping"]}
    assert set(mapping) == set(originals)
    for source_id, run in originals.items():
        mine = show_json(colleague, mapping[source_id])
        assert comparable(mine) == comparable(run), source_id
        assert mine["origin"]["project"] == str(project)
        assert mine["origin"]["run_id"] == source_id
        # every stored file came along, byte for byte (the store verified each hash)
        assert run["code"] and all(e["hash"].startswith("blake3:") for e in mine["code"])
    again = json.loads(cli(colleague, "import", str(archive), "--json").stdout)
    assert again["runs"] == 0 and again["present"] == len(STAGES)

    # a fresh project has every id free: the runs keep theirs, and diff says the same
    assert all(k == v for k, v in mapping.items())
    first, second = sorted(mapping)[:2]
    there = cli(project, "diff", str(first), str(second), "--json").stdout
    here = cli(colleague, "diff", str(first), str(second), "--json").stdout
    assert json.loads(here) == json.loads(there) and json.loads(here)["differs"]
    text = cli(colleague, "show", str(first)).stdout
    assert "imported from " in text and f":{project} run {first}, exported" in text
