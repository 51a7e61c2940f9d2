"""End to end: rm and gc on what the real agent recorded of a pipeline run twice."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import blake3
import pytest

from onlooker.store.catalog import Catalog

from .pipeline import STAGES, run_stage, write_project
from .test_pipeline import ONLOOKER, cli, need_root, runs_json, show_json, started
from .test_robustness import settle

pytestmark = pytest.mark.e2e


def hashes_of(project: Path, run_ids: list[int]) -> dict[str, str]:
    """hash -> path of every input, output and code version of these runs."""
    out = {}
    for run_id in run_ids:
        run = show_json(project, run_id)
        for entry in run["inputs"] + run["outputs"] + run["code"]:
            out[entry["hash"]] = entry["path"]
    return out


def in_store(project: Path, h: str) -> bool:
    """The object is in the store and its bytes have that BLAKE3."""
    with Catalog.find(project) as cat:
        if not cat.objects.has(h):
            return False
        with cat.objects.open(h) as f:
            return "blake3:" + blake3.blake3(f.read()).hexdigest() == h


def a_pass(project: Path, seed: int) -> list[int]:
    """Run the four stages with the seeds set to `seed`; the new runs' ids."""
    before = {r["id"] for r in runs_json(project)}
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("20170428", str(seed)))
    for _, args in STAGES:
        run_stage(project, args)
    settle(project)
    return sorted(r["id"] for r in runs_json(project) if r["id"] not in before)


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_gc_after_rm_frees_the_first_pass_and_keeps_the_second(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    write_project(project)
    started(project, tier)
    try:
        first = a_pass(project, 20170428)
        second = a_pass(project, 7)
        assert len(first) == len(second) == len(STAGES)
        kept = hashes_of(project, second)
        first_outputs = {e["hash"] for r in first for e in show_json(project, r)["outputs"]}
        only_first = first_outputs - set(kept)
        assert only_first, "the second pass should have written other contents"
        assert all(in_store(project, h) for h in only_first)

        cli(project, "rm", *map(str, first), "--yes")
        assert sorted(r["id"] for r in runs_json(project)) == second
        usage = json.loads(cli(project, "du", "--json").stdout)
        planned = json.loads(cli(project, "gc", "--dry-run", "--grace", "0", "--json").stdout)
        assert all(in_store(project, h) for h in only_first)  # a dry run changes nothing
        # the agent is idle (settled), so no grace period is needed for this one
        report = json.loads(cli(project, "gc", "--grace", "0", "--json").stdout)
        assert report["freed"] == planned["freed"] == {
            "objects": usage["total"]["unreferenced"]["objects"],
            "bytes": usage["total"]["unreferenced"]["bytes"]}
        assert report["freed"]["bytes"] > 0
        assert not any(in_store(project, h) for h in only_first)
        for h, path in kept.items():
            assert in_store(project, h), path
        for run_id in second:  # the runs still show in full
            assert show_json(project, run_id)["id"] == run_id

        # gc while the agent records a third pass: nothing of it goes
        gcs = []
        params = project / "params.yaml"
        params.write_text(params.read_text().replace("seed: 7", "seed: 8"))
        for _, args in STAGES:
            gcs.append(subprocess.Popen([*ONLOOKER, "-C", str(project), "gc", "--json"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))
            run_stage(project, args)
        for proc in gcs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "Traceback" not in err
        settle(project)
        third = sorted(r["id"] for r in runs_json(project) if r["id"] not in second)
        assert len(third) == len(STAGES)
        for h, path in {**hashes_of(project, third), **kept}.items():
            assert in_store(project, h), path
    finally:
        cli(project, "stop")


def test_rm_and_gc_refuse_bad_input_in_one_sentence(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    cli(project, "init")
    for args in (["rm", "3", "--yes"], ["rm", "1"], ["gc", "--older-than", "a while"],
                 ["du", "last"]):
        res = subprocess.run([*ONLOOKER, "-C", str(project), *args], capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert res.returncode in (1, 2), (args, res.stderr)
        assert "Traceback" not in res.stderr and res.stderr.strip(), args
