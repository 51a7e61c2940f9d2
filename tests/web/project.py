"""Real captured projects for the dashboard's tests and screenshots, made through the
real agent: the e2e four-stage pipeline (tests/e2e/pipeline.py) run twice with a param
changed between, plus a fitting script that logs a loss curve (a metrics CSV), so a run
has a series to chart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.pipeline import STAGES, run_stage, write_project
from tests.e2e.test_explore_pipeline import set_param
from tests.e2e.test_pipeline import cli, started
from tests.e2e.test_robustness import settle

# Logistic regression by SGD on the features the pipeline made, one line of
# metrics/history.csv per epoch (the agent reads it as series epoch -> loss, accuracy).
FIT = '''
import argparse, csv, math, os, pickle, random, time

ap = argparse.ArgumentParser()
ap.add_argument("features")
ap.add_argument("--lr", type=float, default=0.1)
ap.add_argument("--epochs", type=int, default=30)
ap.add_argument("--pause", type=float, default=0.0)  # seconds per epoch: a longer run
args = ap.parse_args()
with open(os.path.join(args.features, "train.pkl"), "rb") as f:
    data = pickle.load(f)
if isinstance(data, dict):  # the demo's features: {"X": [...], "y": [...]}
    data = list(zip(data["X"], data["y"]))
rng = random.Random(0)
w = [0.0] * (len(data[0][0]) + 1)
os.makedirs("metrics", exist_ok=True)
with open("metrics/history.csv", "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["epoch", "loss", "accuracy"])
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(data)
        loss = hits = 0.0
        for x, y in data:
            z = w[-1] + sum(a * b for a, b in zip(w, x))
            p = 1 / (1 + math.exp(-max(-30.0, min(30.0, z))))
            loss -= math.log(max(1e-9, p if y else 1 - p))
            hits += (p >= 0.5) == bool(y)
            g = p - y
            for i, v in enumerate(x):
                w[i] -= args.lr * g * v
            w[-1] -= args.lr * g
        writer.writerow([epoch, round(loss / len(data), 5), round(hits / len(data), 5)])
        out.flush()
        time.sleep(args.pause)
'''

FIT_ARGS = ["src/fit.py", "data/features"]


def fit(project: Path, lr: float, *more: str) -> None:
    run_stage(project, [*FIT_ARGS, "--lr", str(lr), *more])


def pipeline_project(project: Path) -> None:
    """The e2e pipeline and a fit, twice, `featurize.max_features` 8 then 3, the fit's
    --lr 0.1 then 0.05; the agent (unprivileged tier: any user) is left running."""
    write_project(project)
    (project / "src" / "fit.py").write_text(FIT.lstrip())
    started(project, "unprivileged")
    for _, args in STAGES:
        run_stage(project, args)
    # a pause per epoch: past the 100 ms the poll tier promises to see (a bare fit of
    # these few rows can end sooner)
    fit(project, 0.1, "--pause", "0.01")
    settle(project)
    set_param(project, "featurize", "max_features", 3)
    for _, args in STAGES:
        run_stage(project, args)
    fit(project, 0.05, "--pause", "0.01")
    settle(project)


def demo_project(project: Path) -> None:
    """`onlooker demo`'s project, then what a person does next: two fits of a loss
    curve, a param changed and the pipeline run again. The agent is stopped after."""
    from onlooker.agent import lifecycle
    from onlooker.cli import demo_project as demo
    from onlooker.cli.commands.demo import run_demo
    from onlooker.cli.commands.stop import stop_agent

    run_demo(project)
    (project / "src" / "fit.py").write_text(FIT.lstrip())
    lifecycle.start(project)
    try:
        # a person looks at one fit before the next: each output is hashed before the
        # next run writes the file again
        fit(project, 0.05, "--pause", "0.1")
        settle(project)
        fit(project, 0.2, "--pause", "0.1")
        text = (project / "params.yaml").read_text().replace("max_features: 24",
                                                                  "max_features: 12")
        (project / "params.yaml").write_text(text)
        settle(project)
        for _, argv in demo.STAGES:
            subprocess.run([sys.executable, *argv], cwd=project, check=True,
                           capture_output=True)
        fit(project, 0.02, "--epochs", "40", "--pause", "0.1")
        settle(project)
    finally:
        stop_agent(project)
    cli(project, "tag", "last", "best")
