"""Small real projects that use real ML libraries, each with the truth of what its runs do.

Each builder writes a project (and, where the story needs one, a folder beside it),
and returns a `Spec`: the commands a person types while the agent watches and, per
run, what that run really read, wrote and was given (`Want`). The truth is written to
the JSON contract of `onlooker show --json`:

* ``inputs`` / ``outputs`` / ``code``: the experiment's own files (exactly these);
* ``meta``: the tools' files (VCS and DVC metadata, lock and tmp files, caches,
  tracking-store bookkeeping such as ``mlruns/**``, ``wandb/**``, Hydra's ``.hydra/``):
  anything may be there, nothing there is asserted;
* ``params``: from the run's own argv and the configs it read, never from meta files
  nor from system tools' argv; for a Hydra app, the config it composed (the
  ``.hydra/config.yaml`` it wrote), keyed bare like its overrides (``model.depth``);
* ``metrics``: the keys, from the metrics files among its outputs.

A path with ``*`` is a pattern (``fnmatch``, ``*`` crosses ``/``) that must match at
least one path; every path seen must be named or matched. `compare` says, per run,
what is extra, missing or different, so a failure reads as a list of what to fix.

Every command runs with `run_env`: a fresh HOME, caches and tool dirs in the test's
own tmp dir, this interpreter's bin first on PATH, no network and no telemetry.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ONLOOKER = [sys.executable, "-m", "onlooker.cli.main"]
TIERS = {
    "privileged": "",
    "unprivileged": '[capture]\nprocess = "poll"\nfiles = "inotify"\n',
}
TIER_NAMES = {"privileged": ("netlink", "fanotify"), "unprivileged": ("poll", "inotify")}


@dataclass
class Want:
    """One run's truth."""

    command: list[str]
    inputs: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)
    code: set[str] = field(default_factory=set)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: set[str] = field(default_factory=set)
    meta: set[str] = field(default_factory=set)  # among the run's meta files (tools' reads)


@dataclass
class Command:
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Spec:
    commands: list[Command]
    wants: list[Want]
    setup: list[list[str]] = field(default_factory=list)  # before the agent starts


# ----------------------------------------------------------------------------- environment


def run_env(tmp: Path) -> dict[str, str]:
    """A clean environment rooted in `tmp`: nothing of the developer's HOME or CI leaks."""
    home = tmp / "home"
    for sub in ("", ".cache", ".config", ".local/share", "tmp", "mpl", "wandb-cache",
                "wandb-config", "wandb-data"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": f"{bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "MPLCONFIGDIR": str(home / "mpl"),
        "MPLBACKEND": "Agg",
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(home / ".ipython"),
        "WANDB_CONFIG_DIR": str(home / "wandb-config"),
        "WANDB_CACHE_DIR": str(home / "wandb-cache"),
        "WANDB_DATA_DIR": str(home / "wandb-data"),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "false",
        "DVC_NO_ANALYTICS": "1",
        "DVC_NOSCM": "",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _clean(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if v != ""}


# ----------------------------------------------------------------------------- the agent


def cli(project: Path, env: dict[str, str], *args: str) -> str:
    res = subprocess.run([*ONLOOKER, "-C", str(project), *args], capture_output=True,
                         text=True, timeout=300, env=_clean(env))
    if res.returncode != 0:
        raise AssertionError(f"onlooker {' '.join(args)} failed: {res.stderr}\n{res.stdout}")
    return res.stdout


def wait_for(cond, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout} s")
        time.sleep(0.05)


def capture(project: Path, spec: Spec, tier: str, env: dict[str, str]) -> list[dict]:
    """Set up, start the agent in `tier`, run the commands, stop, and return every run."""
    for argv in spec.setup:
        subprocess.run(argv, cwd=project, check=True, env=_clean(env), capture_output=True,
                       timeout=120)
    # the agent too gets the fresh HOME (and this interpreter), as a person's would
    agent_env = dict(env, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    cli(project, agent_env, "init")
    if TIERS[tier]:
        (project / ".onlooker" / "config.toml").write_text(TIERS[tier])
    cli(project, agent_env, "start")
    try:
        status = json.loads(cli(project, agent_env, "status", "--json"))
        got = (status["tiers"]["process"]["name"], status["tiers"]["files"]["name"])
        assert got == TIER_NAMES[tier], status["tiers"]
        for cmd in spec.commands:
            res = subprocess.run(cmd.argv, cwd=cmd.cwd, env=_clean({**env, **cmd.env}),
                                 capture_output=True, text=True, timeout=180)
            assert res.returncode == 0, (cmd.argv, res.stdout[-3000:], res.stderr[-3000:])
        # the agent has seen every run end before it is stopped
        wait_for(lambda: _all_ended(project, agent_env), 60, "every run ended")
    finally:
        cli(project, agent_env, "stop")
    runs = json.loads(cli(project, agent_env, "runs", "--json", "--all"))
    return [json.loads(cli(project, agent_env, "show", str(r["id"]), "--json")) for r in runs]


def _all_ended(project: Path, env: dict[str, str]) -> bool:
    runs = json.loads(cli(project, env, "runs", "--json", "--all"))
    return bool(runs) and all(r["status"] != "running" for r in runs)


# ----------------------------------------------------------------------------- comparing


def _paths(entries: list[dict]) -> set[str]:
    return {e["path"] for e in entries}


def _match_set(want: set[str], got: set[str]) -> tuple[list[str], list[str]]:
    """(extra, missing): got paths no want names or matches; wants nothing matched."""
    pats = {w for w in want if "*" in w}
    plain = want - pats
    extra = sorted(p for p in got - plain if not any(fnmatch.fnmatchcase(p, w) for w in pats))
    missing = sorted(plain - got) + sorted(
        w for w in pats if not any(fnmatch.fnmatchcase(p, w) for p in got))
    return extra, missing


def _typed_command(command: list[str]) -> list[str]:
    """The command as typed: a console script shows in /proc as its shebang's
    interpreter plus the script's path (``.../python3 .../bin/papermill in.ipynb``)."""
    if len(command) >= 2 and os.path.isabs(command[1]) and \
            os.path.basename(command[0]).startswith("python") and \
            os.path.dirname(command[1]) == os.path.dirname(command[0]):
        return [os.path.basename(command[1]), *command[2:]]
    return list(command)


def compare(wants: list[Want], runs: list[dict], tier: str) -> dict[str, Any]:
    """What the catalog gets wrong, per run: {} when it matches the truth exactly."""
    problems: dict[str, Any] = {}
    by_cmd: dict[str, list[dict]] = {}
    for r in runs:
        by_cmd.setdefault(json.dumps(_typed_command(r["command"])), []).append(r)
    wanted = {json.dumps(w.command) for w in wants}
    extra_runs = [json.loads(c) for c in by_cmd if c not in wanted]
    if extra_runs:
        problems["extra runs"] = extra_runs
    for w in wants:
        key = " ".join(w.command)
        found = by_cmd.get(json.dumps(w.command), [])
        if len(found) != 1:
            problems[key] = f"{len(found)} runs with this command"
            continue
        (run,) = found
        p: dict[str, Any] = {}
        ok = {("completed", 0)} if tier == "privileged" else {("completed", 0), ("ended", None)}
        if (run["status"], run["exit_code"]) not in ok:
            p["status"] = [run["status"], run["exit_code"]]
        for part in ("inputs", "outputs", "code"):
            extra, missing = _match_set(getattr(w, part), _paths(run[part]))
            if extra:
                p[f"extra {part}"] = extra
            if missing:
                p[f"missing {part}"] = missing
        missing_meta = sorted(w.meta - _paths(run.get("meta") or []))
        if missing_meta:
            p["missing meta"] = missing_meta
        for e in run["inputs"] + run["outputs"] + run["code"]:
            if not str(e.get("hash", "")).startswith("blake3:"):
                p.setdefault("unhashed", []).append(e["path"])
        params = run["params"]
        extra_p = {k: params[k] for k in sorted(set(params) - set(w.params))}
        missing_p = {k: w.params[k] for k in sorted(set(w.params) - set(params))}
        wrong_p = {k: {"got": params[k], "want": v} for k, v in sorted(w.params.items())
                   if k in params and params[k] != v}
        if extra_p:
            p["extra params"] = extra_p
        if missing_p:
            p["missing params"] = missing_p
        if wrong_p:
            p["wrong params"] = wrong_p
        extra_m, missing_m = _match_set(w.metrics, set(run.get("metrics") or {}))
        if extra_m:
            p["extra metrics"] = extra_m
        if missing_m:
            p["missing metrics"] = missing_m
        if p:
            problems[key] = p
    return problems


def render(problems: dict[str, Any]) -> str:
    return json.dumps(problems, indent=2, sort_keys=True, default=str)


def check(name: str, tier: str, wants: list[Want], runs: list[dict]) -> None:
    problems = compare(wants, runs, tier)
    out = os.environ.get("ONLOOKER_LIBS_REPORT")
    if out:  # for people collecting what to fix: one JSON per project and tier
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}-{tier}.json").write_text(
            json.dumps({"problems": problems, "runs": runs}, indent=2, default=str))
    assert problems == {}, f"{name} ({tier}): what the catalog gets wrong:\n{render(problems)}"


# ----------------------------------------------------------------------------- building


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


GIT_SETUP = [["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
             ["git", "commit", "-qm", "project"]]


def classes_csv(n: int = 300, cols: int = 4, seed: int = 1) -> str:
    rnd = random.Random(seed)
    lines = [",".join([f"f{i}" for i in range(cols)] + ["label"])]
    for _ in range(n):
        y = rnd.randint(0, 1)
        lines.append(",".join(f"{rnd.gauss(y, 1):.4f}" for _ in range(cols)) + f",{y}")
    return "\n".join(lines) + "\n"


def points_csv(n: int = 200, seed: int = 5) -> str:
    rnd = random.Random(seed)
    return "x,y\n" + "".join(f"{x:.4f},{2 * x + rnd.gauss(0, 0.1):.4f}\n"
                             for x in (rnd.uniform(-1, 1) for _ in range(n)))


# A plain-Python regression both the MLflow, W&B, make and job projects reuse.
FIT = '''
def load(path):
    with open(path) as f:
        rows = [line.split(",") for line in f.read().split()[1:]]
    return [(float(a), float(b)) for a, b in rows]


def fit(rows, lr, epochs):
    w, losses = 0.0, []
    for _ in range(epochs):
        for x, y in rows:
            w += lr * (y - w * x) * x / len(rows) * 10
        losses.append(sum((y - w * x) ** 2 for x, y in rows) / len(rows))
    return w, losses
'''

# ----------------------------------------------------------------------------- 1 dvclive

DVCLIVE_TRAIN = '''
import pickle

import numpy as np
import yaml
from dvclive import Live
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss

params = yaml.safe_load(open("params.yaml"))["train"]
data = np.loadtxt("data/data.csv", delimiter=",", skiprows=1)
x, y = data[:, :-1], data[:, -1]
cut = int(len(x) * 0.75)
clf = SGDClassifier(loss="log_loss", alpha=params["alpha"], random_state=0)
with Live() as live:
    live.log_params(params)
    for epoch in range(params["epochs"]):
        clf.partial_fit(x[:cut], y[:cut], classes=[0, 1])
        live.log_metric("train/loss", log_loss(y[:cut], clf.predict_proba(x[:cut])))
        live.log_metric("acc", accuracy_score(y[cut:], clf.predict(x[cut:])))
        live.next_step()
    with open("model.pkl", "wb") as f:
        pickle.dump(clf, f)
'''


def sklearn_dvclive(project: Path, outside: Path) -> Spec:
    write(project, {
        "params.yaml": "train:\n  alpha: 0.001\n  epochs: 3\n",
        "train.py": DVCLIVE_TRAIN.lstrip(),
        "data/data.csv": classes_csv(),
        ".gitignore": "model.pkl\n",
    })
    setup = [GIT_SETUP[0], ["dvc", "init", "-q"], *GIT_SETUP[1:]]
    cmd = ["python", "train.py"]
    return Spec([Command(cmd, project)], [Want(
        cmd,
        inputs={"params.yaml", "data/data.csv"},
        # dvclive/params.yaml echoes params.yaml (DVCLive's bookkeeping, like mlruns/*/params):
        # meta; its metrics.json and plots are the run's metrics files
        outputs={"model.pkl", "dvclive/metrics.json",
                 "dvclive/plots/metrics/acc.tsv", "dvclive/plots/metrics/train/loss.tsv"},
        code={"train.py"},
        params={"params.yaml:train.alpha": 0.001, "params.yaml:train.epochs": 3},
        metrics={"dvclive/metrics.json:acc", "dvclive/metrics.json:train.loss",
                 "dvclive/metrics.json:step", "dvclive/plots/metrics/acc.tsv:acc",
                 "dvclive/plots/metrics/train/loss.tsv:loss"},
    )], setup)


# ----------------------------------------------------------------------------- 2 mlflow

MLFLOW_TRAIN = '''
import argparse
import pickle

import mlflow

from fit import fit, load

ap = argparse.ArgumentParser()
ap.add_argument("--alpha", type=float, default=0.1)
ap.add_argument("--store", choices=["file", "sqlite"], default="file")
args = ap.parse_args()
mlflow.set_tracking_uri({"file": "file:./mlruns", "sqlite": "sqlite:///mlflow.db"}[args.store])
mlflow.set_experiment("demo")
rows = load("data/points.csv")
with mlflow.start_run():
    mlflow.log_param("alpha", args.alpha)
    w, losses = fit(rows, args.alpha, 4)
    for step, loss in enumerate(losses):
        mlflow.log_metric("loss", loss, step=step)
    with open("model.pkl", "wb") as f:
        pickle.dump({"w": w}, f)
    mlflow.log_artifact("model.pkl")
'''


def mlflow_project(store: str):
    def build(project: Path, outside: Path) -> Spec:
        write(project, {
            "train.py": MLFLOW_TRAIN.lstrip(), "fit.py": FIT.lstrip(),
            "data/points.csv": points_csv(),
            ".gitignore": "model.pkl\nmlruns/\nmlflow.db\nmlartifacts/\n",
        })
        cmd = ["python", "train.py", "--alpha", "0.5", "--store", store]
        # MLflow 3 refuses its file store unless asked for it; people who keep mlruns/ do
        env = {"MLFLOW_ALLOW_FILE_STORE": "true"} if store == "file" else {}
        return Spec([Command(cmd, project, env)], [Want(
            # the model logged as an artifact is an output too (it may be the only copy);
            # the store's tags, params and metric files are its bookkeeping (meta)
            cmd, inputs={"data/points.csv"}, outputs={"model.pkl", "mlruns/*/artifacts/model.pkl"},
            code={"train.py", "fit.py"}, params={"alpha": 0.5, "store": store},
        )], list(GIT_SETUP))
    return build


# ----------------------------------------------------------------------------- 3 hydra

HYDRA_CONFIG = """\
defaults:
  - model: tree
  - _self_
lr: 0.5
epochs: 3
data: data/points.csv
hydra:
  run:
    dir: outputs/run
  sweep:
    dir: multirun
    subdir: ${hydra.job.num}
"""

HYDRA_APP = '''
import json
import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig

from fit import fit, load

log = logging.getLogger(__name__)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg):
    out = HydraConfig.get().runtime.output_dir
    w, losses = fit(load(cfg.data), cfg.lr, cfg.epochs)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"loss": losses[-1]}, f)
    log.info("done")


if __name__ == "__main__":
    main()
'''

HYDRA_FILES = {
    "conf/config.yaml": HYDRA_CONFIG,
    "conf/model/tree.yaml": "depth: 2\nmin_leaf: 4\n",
    "conf/model/linear.yaml": "l2: 0.01\n",  # present, never read
    "app.py": HYDRA_APP.lstrip(),
    "fit.py": FIT.lstrip(),
    "data/points.csv": points_csv(),
    ".gitignore": "outputs/\nmultirun/\n",
}
HYDRA_INPUTS = {"conf/config.yaml", "conf/model/tree.yaml", "data/points.csv"}


def hydra_overrides(project: Path, outside: Path) -> Spec:
    write(project, HYDRA_FILES)
    cmd = ["python", "app.py", "lr=0.1", "model.depth=3"]
    return Spec([Command(cmd, project)], [Want(
        cmd, inputs=HYDRA_INPUTS,
        outputs={"outputs/run/metrics.json", "outputs/run/app.log"},
        code={"app.py", "fit.py"},
        # the composed config Hydra wrote to outputs/run/.hydra/config.yaml
        params={"lr": 0.1, "epochs": 3, "data": "data/points.csv", "model.depth": 3,
                "model.min_leaf": 4},
        metrics={"outputs/run/metrics.json:loss"},
    )], list(GIT_SETUP))


def hydra_multirun(project: Path, outside: Path) -> Spec:
    write(project, HYDRA_FILES)
    cmd = ["python", "app.py", "-m", "lr=0.1,0.01"]
    return Spec([Command(cmd, project)], [Want(
        cmd, inputs=HYDRA_INPUTS,
        outputs={"multirun/0/metrics.json", "multirun/0/app.log",
                 "multirun/1/metrics.json", "multirun/1/app.log"},
        code={"app.py", "fit.py"},
        # one process ran both jobs: the sweep as typed, and each job's composed config
        # keyed by its job folder (stable across runs of the same sweep)
        params={"lr": "0.1,0.01",
                **{f"job{j}:{k}": v for j, lr in ((0, 0.1), (1, 0.01)) for k, v in (
                    ("lr", lr), ("epochs", 3), ("data", "data/points.csv"), ("model.depth", 2),
                    ("model.min_leaf", 4))}},
        metrics={"multirun/0/metrics.json:loss", "multirun/1/metrics.json:loss"},
    )], list(GIT_SETUP))


# ----------------------------------------------------------------------------- 4 tensorboard

TB_TRAIN = '''
import json

from tensorboardX import SummaryWriter

from fit import fit, load

cfg = json.load(open("config.json"))
w, losses = fit(load("data/points.csv"), cfg["lr"], cfg["epochs"])
writer = SummaryWriter("runs/exp1")
for step, loss in enumerate(losses):
    writer.add_scalar("loss", loss, step)
    writer.add_scalar("w", w * (step + 1) / len(losses), step)
writer.close()
'''


def tensorboard_project(project: Path, outside: Path) -> Spec:
    write(project, {
        "config.json": '{"lr": 0.2, "epochs": 4}\n', "train.py": TB_TRAIN.lstrip(),
        "fit.py": FIT.lstrip(), "data/points.csv": points_csv(), ".gitignore": "runs/\n",
    })
    cmd = ["python", "train.py"]
    return Spec([Command(cmd, project)], [Want(
        cmd, inputs={"config.json", "data/points.csv"},
        outputs={"runs/exp1/events.out.tfevents.*"}, code={"train.py", "fit.py"},
        params={"config.json:lr": 0.2, "config.json:epochs": 4},
        metrics={"runs/exp1:loss", "runs/exp1:w"},
    )], list(GIT_SETUP))


# ----------------------------------------------------------------------------- 5 wandb

WANDB_TRAIN = '''
import argparse
import pickle

import wandb

from fit import fit, load

ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, default=0.1)
ap.add_argument("--epochs", type=int, default=2)
args = ap.parse_args()
run = wandb.init(project="demo", config=vars(args))
run.log_code(".")  # reads every .py of the project as text, imported or not
w, losses = fit(load("data/points.csv"), args.lr, args.epochs)
for step, loss in enumerate(losses):
    run.log({"loss": loss}, step=step)
with open("model.pkl", "wb") as f:
    pickle.dump({"w": w}, f)
run.finish()
'''


def wandb_offline(project: Path, outside: Path) -> Spec:
    write(project, {
        "train.py": WANDB_TRAIN.lstrip(), "fit.py": FIT.lstrip(),
        "tools/plot.py": "import sys\nprint(sys.argv)\n",  # never run by train.py
        "data/points.csv": points_csv(), ".gitignore": "wandb/\nmodel.pkl\n",
    })
    cmd = ["python", "train.py", "--lr", "0.2", "--epochs", "3"]
    return Spec([Command(cmd, project, {"WANDB_MODE": "offline"})], [Want(
        cmd, inputs={"data/points.csv"}, outputs={"model.pkl"}, code={"train.py", "fit.py"},
        params={"lr": 0.2, "epochs": 3}, meta={"tools/plot.py"},
    )], list(GIT_SETUP))


# ----------------------------------------------------------------------------- 6 papermill


def _notebook(cells: list[tuple[str, list[str]]]) -> str:
    return json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}",
                   "metadata": {"tags": tags}, "outputs": [], "source": src}
                  for i, (src, tags) in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }, indent=1)


NOTEBOOK = _notebook([
    ("alpha = 0.1\n", ["parameters"]),
    ("import json\n"
     "from fit import fit, load\n"
     "w, losses = fit(load('data/points.csv'), alpha, 3)\n"
     "with open('metrics.json', 'w') as f:\n"
     "    json.dump({'score': losses[-1]}, f)\n", []),
])


def papermill_project(project: Path, outside: Path) -> Spec:
    write(project, {"in.ipynb": NOTEBOOK, "fit.py": FIT.lstrip(),
                    "data/points.csv": points_csv(), ".gitignore": "out.ipynb\nmetrics.json\n"})
    cmd = ["papermill", "in.ipynb", "out.ipynb", "-p", "alpha", "0.5"]
    return Spec([Command(cmd, project)], [Want(
        cmd, inputs={"data/points.csv"}, outputs={"out.ipynb", "metrics.json"},
        code={"in.ipynb", "fit.py"},
        params={"argv[1]": "in.ipynb", "argv[2]": "out.ipynb", "alpha": 0.5},
        metrics={"metrics.json:score"},
    )], list(GIT_SETUP))


# ----------------------------------------------------------------------------- 7 make

MAKEFILE = """\
all: model.pkl

data/features.csv: src/prepare.py data/raw.csv
\tpython src/prepare.py data/raw.csv data/features.csv

model.pkl: src/train.py data/features.csv params.yaml
\tpython src/train.py data/features.csv model.pkl
"""

MAKE_PREPARE = '''
import sys
import time

time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more

rows = open(sys.argv[1]).read().split()
with open(sys.argv[2], "w") as f:
    f.write(rows[0] + "\\n")
    for r in rows[1:]:
        x, y = map(float, r.split(","))
        f.write(f"{x / 2:.5f},{y:.5f}\\n")
'''

MAKE_TRAIN = '''
import json
import pickle
import sys
import time

import yaml

from fit import fit, load

time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
p = yaml.safe_load(open("params.yaml"))["train"]
w, losses = fit(load(sys.argv[1]), p["lr"], p["epochs"])
with open(sys.argv[2], "wb") as f:
    pickle.dump({"w": w}, f)
with open("metrics.json", "w") as f:
    json.dump({"loss": losses[-1]}, f)
'''


def make_pipeline(project: Path, outside: Path) -> Spec:
    write(project, {
        "Makefile": MAKEFILE, "src/prepare.py": MAKE_PREPARE.lstrip(),
        "src/train.py": MAKE_TRAIN.lstrip(), "src/fit.py": FIT.lstrip(),
        "params.yaml": "train:\n  lr: 0.3\n  epochs: 3\n", "data/raw.csv": points_csv(),
        ".gitignore": "data/features.csv\nmodel.pkl\nmetrics.json\n",
    })
    cmd = ["make"]
    return Spec([Command(cmd, project)], [Want(
        cmd, inputs={"data/raw.csv", "params.yaml"},
        outputs={"data/features.csv", "model.pkl", "metrics.json"},
        code={"Makefile", "src/prepare.py", "src/train.py", "src/fit.py"},
        # make's own argv is empty; its project steps' argv are params under their script
        params={"params.yaml:train.lr": 0.3, "params.yaml:train.epochs": 3,
                "src/prepare.py:argv[1]": "data/raw.csv",
                "src/prepare.py:argv[2]": "data/features.csv",
                "src/train.py:argv[1]": "data/features.csv", "src/train.py:argv[2]": "model.pkl"},
        metrics={"metrics.json:loss"},
    )], list(GIT_SETUP))


# ----------------------------------------------------------------------------- 8 job script

JOB_TRAIN = '''
import argparse
import json
import pickle
import time

import yaml

time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more

from fit import fit, load

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=1)
args = ap.parse_args()
cfg = yaml.safe_load(open("config.yaml"))
w, losses = fit(load(cfg["data"]), cfg["lr"], args.epochs)
with open("model.pkl", "wb") as f:
    pickle.dump({"w": w}, f)
with open("metrics.json", "w") as f:
    json.dump({"loss": losses[-1]}, f)
'''


def job_script(project: Path, outside: Path) -> Spec:
    write(project, {
        "config.yaml": "lr: 0.1\ndata: data/points.csv\n", "train.py": JOB_TRAIN.lstrip(),
        "fit.py": FIT.lstrip(), "data/points.csv": points_csv(),
        ".gitignore": "model.pkl\nmetrics.json\n",
    })
    # a scheduler's job script: lives elsewhere, names the project only inside its text
    write(outside, {"job.sh": f"""\
#!/bin/bash
set -euo pipefail
cd {project}
sed -i 's/^lr: .*/lr: 0.05/' config.yaml
python train.py --epochs 2
"""})
    cmd = ["python", "train.py", "--epochs", "2"]
    return Spec([Command(["bash", str(outside / "job.sh")], outside)], [Want(
        cmd, inputs={"config.yaml", "data/points.csv"}, outputs={"model.pkl", "metrics.json"},
        code={"train.py", "fit.py"},
        params={"epochs": 2, "config.yaml:lr": 0.05, "config.yaml:data": "data/points.csv"},
        metrics={"metrics.json:loss"},
    )], list(GIT_SETUP))


# name -> (builder, modules the project imports, programs it needs)
PROJECTS = {
    "sklearn_dvclive": (sklearn_dvclive, ("sklearn", "dvclive", "dvc"), ("git",)),
    "mlflow_file": (mlflow_project("file"), ("mlflow",), ("git",)),
    "mlflow_sqlite": (mlflow_project("sqlite"), ("mlflow", "sqlalchemy", "alembic"), ("git",)),
    "hydra_overrides": (hydra_overrides, ("hydra",), ("git",)),
    "hydra_multirun": (hydra_multirun, ("hydra",), ("git",)),
    "tensorboard": (tensorboard_project, ("tensorboardX", "tensorboard"), ("git",)),
    "wandb_offline": (wandb_offline, ("wandb",), ("git",)),
    "papermill": (papermill_project, ("papermill", "ipykernel"), ("git",)),
    "make_pipeline": (make_pipeline, ("yaml",), ("git", "make")),
    "job_script": (job_script, ("yaml",), ("git", "sed")),
}
