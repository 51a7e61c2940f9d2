"""End to end: `onlooker reproduce` re-runs a recorded run in a scratch folder under a
capture of its own and says whether it reproduced: the seeded stage of the real pipeline
exactly (even after its config and the shell's SEED changed), an unseeded one differs
for nondeterminism, and a referenced-only input that changed since is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from .pipeline import STAGES, run_stage, write_project
from .test_pipeline import TIERS, cli, need_root, runs_json, show_json, started
from .test_robustness import settle

pytestmark = pytest.mark.e2e
TIER = "privileged" if os.geteuid() == 0 else "unprivileged"


def b3(path: Path) -> str:
    return "blake3:" + blake3.blake3(path.read_bytes()).hexdigest()


def reproduce(project: Path, *args: str, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onlooker.cli.main", "-C", str(project),
                           "reproduce", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def scratch_folders() -> set[str]:
    import tempfile

    base = Path(tempfile.gettempdir())
    return {p.name for p in base.glob("onlooker-reproduce-*")}


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_the_seeded_train_stage_reproduces_exactly(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    write_project(project)
    started(project, tier)
    try:
        for _, args in STAGES[:3]:
            run_stage(project, args)
        settle(project)
        train = next(r for r in runs_json(project) if r["command"][1] == "src/train.py")
        model = b3(project / "model.pkl")
        # what the project holds now is not what the run read: reproduce takes the run's
        params = project / "params.yaml"
        params.write_text(params.read_text().replace("n_est: 5", "n_est: 9"))
        before = scratch_folders()
        res = reproduce(project, str(train["id"]), "--json")
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)
        assert report["verdict"] == "exactly", report
        assert report["ending"]["reproduction"] == "exit code 0"  # the launcher's, exact
        if tier == "privileged":
            assert report["ending"] == {"original": "exit code 0",
                                        "reproduction": "exit code 0", "same": True}
        else:  # the poll tier may not have seen the original's code: then no difference
            assert report["ending"]["same"] in (True, None), report["ending"]
        assert [(o["path"], o["change"]) for o in report["outputs"]] == [("model.pkl", "same")]
        assert report["outputs"][0]["reproduction"] == model
        assert report["metrics"] == [] or all(m["change"] == "same" for m in report["metrics"])
        restored = {f["path"] for f in report["files"]}
        assert {"src/train.py", "params.yaml", "data/features/train.pkl"} <= restored
        # nothing of the project changed, and the scratch folder is gone
        assert "n_est: 9" in params.read_text() and b3(project / "model.pkl") == model
        assert not Path(report["folder"]).exists() and scratch_folders() <= before
        settle(project)
        # the reproduction is a run of this catalog, a twin of the original
        again = show_json(project, report["run"])
        assert again["note"] == f"reproduction of run {train['id']}"
        assert again["twins"] == [train["id"]] and again["nondeterministic"] == []
        assert again["origin"] is not None
        assert {e["path"]: e["hash"] for e in again["outputs"]}["model.pkl"] == model
        # the person's view: one headline, the table, where the run went
        shown = reproduce(project, str(train["id"]))
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"reproduced exactly: run {train['id']} re-ran as run")
        assert "model.pkl" in shown.stdout and "Traceback" not in shown.stderr
        assert f"`onlooker diff {train['id']} " in shown.stderr
    finally:
        cli(project, "stop")


NOISY = '''
import os, random, sys, time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
rows = open("data/in.csv").read().splitlines()
seed = int(os.environ["SEED"]) if os.environ.get("SEED") else None  # None: from the OS
rng = random.Random(seed)
os.makedirs("out", exist_ok=True)
with open("out/sample.bin", "wb") as f:
    f.write(bytes(rng.randrange(256) for _ in range(64 * len(rows))))
with open("out/metrics.json", "w") as f:
    f.write('{"score": %r}' % rng.random())
'''


def small_project(tmp_path: Path, config: str = "") -> Path:
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    (project / "data" / "in.csv").write_text("a,b\n1,2\n3,4\n")
    (project / "noisy.py").write_text(NOISY.lstrip())
    cli(project, "init")
    if TIERS[TIER] or config:
        (project / ".onlooker" / "config.toml").write_text(TIERS[TIER] + config)
    cli(project, "start")
    return project


def run_in(project: Path, *argv: str, **env: str) -> None:
    subprocess.run([sys.executable, *argv], cwd=project, check=True,
                   env={**{k: v for k, v in os.environ.items() if k != "SEED"}, **env})


def test_an_unseeded_run_differs_for_nondeterminism_and_a_recorded_seed_reproduces(tmp_path):
    need_root(TIER)
    project = small_project(tmp_path)
    try:
        run_in(project, "noisy.py")  # seeded by the OS
        run_in(project, "noisy.py", SEED="7")  # SEED is recorded as the param env:SEED
        settle(project)
        seeded, unseeded = runs_json(project)[:2]
        assert seeded["params"].get("env:SEED") == 7 and "env:SEED" not in unseeded["params"]

        res = reproduce(project, str(unseeded["id"]), "--json")
        assert res.returncode == 1, res.stderr
        report = json.loads(res.stdout)
        assert report["verdict"] == "differs"
        changes = {o["path"]: o["change"] for o in report["outputs"]}
        assert changes == {"out/sample.bin": "differs"}
        (score,) = report["metrics"]
        assert score["change"] == "differs" and score["max_rel_diff"] > 1e-6
        assert any(r.startswith("nondeterminism") for r in report["reasons"]), report
        assert f"run {unseeded['id']} did not reproduce" in res.stderr
        settle(project)
        flagged = show_json(project, unseeded["id"])
        assert "out/sample.bin" in flagged["nondeterministic"]

        # this shell's SEED is another: the run's own is set again
        env = {**os.environ, "SEED": "8"}
        res = reproduce(project, str(seeded["id"]), "--json", env=env)
        assert res.returncode == 0, res.stderr + res.stdout
        assert json.loads(res.stdout)["verdict"] == "exactly"
    finally:
        cli(project, "stop")


BIG = '''
import time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
data = open("data/big.bin", "rb").read()
with open("digest.txt", "w") as f:
    f.write(str(sum(data)))
'''


def test_a_referenced_only_input_is_taken_from_the_project_or_refused(tmp_path):
    need_root(TIER)
    project = small_project(tmp_path, "[store]\nobject_max_bytes = 4096\n")
    (project / "data" / "big.bin").write_bytes(os.urandom(50_000))  # over the copy limit
    (project / "big.py").write_text(BIG.lstrip())
    try:
        run_in(project, "big.py")
        settle(project)
        (run,) = runs_json(project)
        big = next(e for e in show_json(project, run["id"])["inputs"]
                   if e["path"] == "data/big.bin")
        assert big["hash"] == b3(project / "data" / "big.bin")

        keep = tmp_path / "kept"
        res = reproduce(project, str(run["id"]), "--json", "--in", str(keep))
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)
        assert report["verdict"] == "exactly" and report["kept"]
        sources = {f["path"]: f["from"] for f in report["files"]}
        assert sources == {"data/big.bin": "project", "big.py": "object store"}
        assert b3(keep / "data" / "big.bin") == big["hash"]
        assert (keep / "digest.txt").read_text() == (project / "digest.txt").read_text()

        # an --in folder that is not empty, or inside the project: one sentence each
        for where, words in ((keep, "not empty"), (project / "sub", "inside the project")):
            bad = reproduce(project, str(run["id"]), "--in", str(where))
            assert bad.returncode == 1 and words in bad.stderr, bad.stderr
            assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

        settle(project)
        count = len(runs_json(project))
        (project / "data" / "big.bin").write_bytes(os.urandom(50_000))
        res = reproduce(project, str(run["id"]))
        assert res.returncode == 1
        assert res.stderr.strip() == (
            f"onlooker: cannot reproduce run {run['id']}: data/big.bin was only referenced"
            " (too large to copy when recorded) and the file in the project no longer has"
            " that content; put that version back first")
        assert len(runs_json(project)) == count  # refused before anything ran

        unknown = reproduce(project, "999")
        assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
        assert "999" in unknown.stderr
    finally:
        cli(project, "stop")
