"""End to end: metrics and logs from an unchanged script, bare and through `onlooker run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .test_pipeline import ONLOOKER, cli, need_root, paths, runs_json, show_json, started

pytestmark = pytest.mark.e2e

FIT = '''
import csv, json, os, time
time.sleep(0.15)  # work: the poll tier is promised to see processes of 100 ms and more
os.makedirs("out", exist_ok=True)
with open("out/history.csv", "w", newline="") as f:   # like Keras' CSVLogger
    w = csv.writer(f)
    w.writerow(["epoch", "loss", "val_loss"])
    for e in range(3):
        w.writerow([e, 1.0 / (e + 1), 1.5 / (e + 1)])
state = {"best_metric": 0.875, "global_step": 30,
         "log_history": [{"loss": 0.9, "step": 10}, {"loss": 0.5, "step": 20},
                         {"eval_accuracy": 0.875, "step": 30}]}
with open("out/trainer_state.json", "w") as f:         # like Hugging Face's Trainer
    json.dump(state, f)
with open("out/summary.json", "w") as f:
    json.dump({"test": {"f1": 0.81, "auc": 0.9}}, f)
for e in range(3):
    print(f"epoch={e} train_loss={0.3 / (e + 1):.4f}", flush=True)
'''


def check_metrics(run: dict) -> None:
    m = run["metrics"]
    assert m["out/summary.json:test.f1"] == 0.81 and m["out/summary.json:test.auc"] == 0.9
    loss = m["out/history.csv:loss"]
    assert loss["last"] == pytest.approx(1 / 3) and loss["last_step"] == 2
    assert loss["max"] == 1.0 and loss["max_step"] == 0 and loss["count"] == 3
    assert m["out/trainer_state.json:best_metric"] == 0.875
    assert m["out/trainer_state.json:global_step"] == 30
    assert m["out/trainer_state.json:loss"]["last"] == 0.5
    assert m["out/trainer_state.json:loss"]["last_step"] == 20
    train_loss = m["train_loss"]
    assert train_loss["count"] == 3 and train_loss["last"] == pytest.approx(0.1)
    assert not any(k.startswith("argv") for k in m)


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_metrics_from_files_and_redirected_stdout(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "logs").mkdir()
    (project / "src" / "fit.py").write_text(FIT)
    started(project, tier)
    try:
        with open(project / "logs" / "fit.log", "w") as log:  # `python src/fit.py > logs/fit.log`
            subprocess.run([sys.executable, "src/fit.py"], cwd=project, stdout=log,
                           stderr=subprocess.STDOUT, check=True)
    finally:
        cli(project, "stop")
    (run,) = runs_json(project)
    full = show_json(project, run["id"])
    assert paths(full["outputs"]) == {"out/history.csv", "out/trainer_state.json",
                                      "out/summary.json", "logs/fit.log"}
    kinds = {o["path"]: o["kind"] for o in full["outputs"]}
    assert kinds["logs/fit.log"] == "log"
    check_metrics(full)


def test_the_same_script_through_onlooker_run(tmp_path):
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "fit.py").write_text(FIT + "raise SystemExit(3)\n")
    cli(project, "init")
    (project / ".onlooker" / "config.toml").write_text(
        '[capture]\nprocess = "poll"\nfiles = "inotify"\n')
    res = subprocess.run([*ONLOOKER, "-C", str(project), "run", "--", sys.executable,
                          "src/fit.py"], cwd=project, capture_output=True, text=True,
                         timeout=120)
    bare = subprocess.run([sys.executable, "src/fit.py"], cwd=project, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ))
    assert res.returncode == bare.returncode == 3
    assert res.stdout == bare.stdout
    runs = runs_json(project)
    assert len(runs) == 1  # the launcher's own agent stopped before the bare run
    full = show_json(project, runs[0]["id"])
    # polling cannot see exit codes; the launcher's record gives the exact one
    assert full["status"] == "failed" and full["exit_code"] == 3, full
    logs = [o for o in full["outputs"] if o["kind"] == "log"]
    assert len(logs) == 1 and logs[0]["path"].startswith(".onlooker/logs/")
    check_metrics(full)
    json.dumps(full)
