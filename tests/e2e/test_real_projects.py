"""Real, unchanged projects held against strace (benchmarks/strace_check.py).

Three projects live here as generators, so docs/validation.md can be re-run:

* ``dvc``: a DVC-style four-stage pipeline (pandas, scikit-learn, joblib, params.yaml),
  run as ``bash run.sh`` and as four separate commands;
* ``torch``: a training script reading config.json and saving a checkpoint per epoch
  with ``torch.save``;
* ``hydra``: ``python -m pkg.train lr=0.1 model.depth=3`` reading configs/*.yaml,
  writing outputs/ and a log through a shell redirect. It needs nothing but PyYAML, so
  it is the one the test runs, in both tiers.

Write them out with ``python -m tests.e2e.test_real_projects DIR`` (one folder each).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- dvc

DVC = {
    "params.yaml": """\
prepare:
  split: 0.2
  seed: 7
featurize:
  scale: true
  columns: [f0, f1, f2, f3, f4]
train:
  n_estimators: 20
  max_depth: 5
  seed: 7
""",
    "src/prepare.py": """\
import os
import sys

import pandas as pd
import yaml

params = yaml.safe_load(open("params.yaml"))["prepare"]
df = pd.read_csv(sys.argv[1])
test = df.sample(frac=params["split"], random_state=params["seed"])
train = df.drop(test.index)
os.makedirs("data/prepared", exist_ok=True)
train.to_csv("data/prepared/train.csv", index=False)
test.to_csv("data/prepared/test.csv", index=False)
""",
    "src/featurize.py": """\
import os
import sys

import numpy as np
import pandas as pd
import yaml

params = yaml.safe_load(open("params.yaml"))["featurize"]
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
train = pd.read_csv(os.path.join(src, "train.csv"))
mean, std = train[params["columns"]].mean(), train[params["columns"]].std()
for name in ("train", "test"):
    df = pd.read_csv(os.path.join(src, name + ".csv"))
    x = df[params["columns"]]
    if params["scale"]:
        x = (x - mean) / std
    np.save(os.path.join(dst, f"x_{name}.npy"), x.to_numpy())
    np.save(os.path.join(dst, f"y_{name}.npy"), df["label"].to_numpy())
""",
    "src/train.py": """\
import argparse
import os

import joblib
import numpy as np
import yaml
from sklearn.ensemble import RandomForestClassifier

ap = argparse.ArgumentParser()
ap.add_argument("features")
ap.add_argument("model")
args = ap.parse_args()
params = yaml.safe_load(open("params.yaml"))["train"]
x = np.load(os.path.join(args.features, "x_train.npy"))
y = np.load(os.path.join(args.features, "y_train.npy"))
clf = RandomForestClassifier(n_estimators=params["n_estimators"], max_depth=params["max_depth"],
                             random_state=params["seed"], n_jobs=1)
clf.fit(x, y)
os.makedirs(os.path.dirname(args.model), exist_ok=True)
joblib.dump(clf, args.model)
""",
    "src/evaluate.py": """\
import json
import os
import sys

import joblib
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

model = joblib.load(sys.argv[1])
x = np.load(os.path.join(sys.argv[2], "x_test.npy"))
y = np.load(os.path.join(sys.argv[2], "y_test.npy"))
pred = model.predict(x)
os.makedirs("eval", exist_ok=True)
with open("eval/metrics.json", "w") as f:
    json.dump({"accuracy": accuracy_score(y, pred), "f1": f1_score(y, pred)}, f, indent=2)
""",
    "run.sh": """\
#!/bin/bash
set -euo pipefail
python src/prepare.py data/data.csv
python src/featurize.py data/prepared data/features
python src/train.py data/features models/model.joblib
python src/evaluate.py models/model.joblib data/features
""",
    ".gitignore": "data/prepared/\ndata/features/\nmodels/\neval/\n",
}
DVC_STAGES = [
    ["python", "src/prepare.py", "data/data.csv"],
    ["python", "src/featurize.py", "data/prepared", "data/features"],
    ["python", "src/train.py", "data/features", "models/model.joblib"],
    ["python", "src/evaluate.py", "models/model.joblib", "data/features"],
]


def _dataset(n: int = 400, cols: int = 5) -> str:
    import random

    rnd = random.Random(3)
    lines = [",".join([f"f{i}" for i in range(cols)] + ["label"])]
    for _ in range(n):
        y = rnd.randint(0, 1)
        lines.append(",".join(f"{rnd.gauss(y, 1.5):.5f}" for _ in range(cols)) + f",{y}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- torch

TORCH = {
    "config.json": '{"hidden": 16, "batch_size": 32, "seed": 0, "data": "data/xy.csv"}\n',
    "train.py": """\
import argparse
import json
import os

import torch
from torch import nn

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--lr", type=float, default=0.1)
ap.add_argument("--config", default="config.json")
args = ap.parse_args()
with open(args.config) as f:
    cfg = json.load(f)
torch.manual_seed(cfg["seed"])
rows = [list(map(float, line.split(","))) for line in open(cfg["data"]).read().split()[1:]]
data = torch.tensor(rows)
x, y = data[:, :-1], data[:, -1:]
model = nn.Sequential(nn.Linear(x.shape[1], cfg["hidden"]), nn.ReLU(), nn.Linear(cfg["hidden"], 1))
opt = torch.optim.SGD(model.parameters(), lr=args.lr)
os.makedirs("checkpoints", exist_ok=True)
for epoch in range(args.epochs):
    for i in range(0, len(x), cfg["batch_size"]):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x[i:i + 32]), y[i:i + 32])
        loss.backward()
        opt.step()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
    torch.save({"epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict()},
               f"checkpoints/epoch_{epoch}.pt")
with open("metrics.json", "w") as f:
    json.dump({"loss": loss.item(), "epochs": args.epochs}, f)
""",
    ".gitignore": "checkpoints/\nmetrics.json\n",
}
TORCH_CMD = ["python", "train.py", "--epochs", "2", "--lr", "0.01"]

# ----------------------------------------------------------------------------- hydra-like

HYDRA = {
    "configs/config.yaml": """\
defaults:
  model: tree
lr: 0.5
epochs: 3
data: data/points.csv
""",
    "configs/model/tree.yaml": "depth: 2\nmin_leaf: 4\n",
    "configs/model/linear.yaml": "l2: 0.01\n",  # present, never read
    "pkg/__init__.py": "",
    "pkg/conf.py": """\
import os

import yaml


def _set(cfg, dotted, value):
    *head, last = dotted.split(".")
    for k in head:
        cfg = cfg.setdefault(k, {})
    cfg[last] = yaml.safe_load(value)


def compose(argv):
    with open(os.path.join("configs", "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    for group, name in cfg.pop("defaults").items():
        with open(os.path.join("configs", group, name + ".yaml")) as f:
            cfg[group] = yaml.safe_load(f)
    for arg in argv:
        key, _, value = arg.partition("=")
        _set(cfg, key.lstrip("+"), value)
    return cfg
""",
    "pkg/train.py": """\
import csv
import json
import os
import pickle
import sys
import time

from .conf import compose

time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more

cfg = compose(sys.argv[1:])
with open(cfg["data"], newline="") as f:
    rows = [(float(a), float(b)) for a, b in list(csv.reader(f))[1:]]
w = 0.0
for epoch in range(cfg["epochs"]):
    for x, y in rows:
        w += cfg["lr"] * (y - w * x) * x / len(rows)
    loss = sum((y - w * x) ** 2 for x, y in rows) / len(rows)
    print(f"epoch={epoch} loss={loss:.5f}", flush=True)
os.makedirs("outputs", exist_ok=True)
tmp = "outputs/model.pkl.tmp"
with open(tmp, "wb") as f:
    pickle.dump({"w": w, "depth": cfg["model"]["depth"]}, f)
os.replace(tmp, "outputs/model.pkl")
with open("outputs/metrics.json", "w") as f:
    json.dump({"loss": loss, "w": w}, f)
""",
    "logs/.keep": "",
    ".gitignore": "outputs/\nlogs/*.log\n",
}
HYDRA_CMD = ["bash", "-c", "python -m pkg.train lr=0.1 model.depth=3 > logs/train.log"]


def _points(n: int = 200) -> str:
    import random

    rnd = random.Random(5)
    return "x,y\n" + "".join(f"{x:.4f},{2 * x + rnd.gauss(0, 0.1):.4f}\n"
                             for x in (rnd.uniform(-1, 1) for _ in range(n)))


def _write(root: Path, files: dict[str, str], git: bool) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if git and shutil.which("git"):
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
            subprocess.run(cmd, cwd=root, check=True, env=env)


def write_dvc(root: Path, git: bool = True) -> None:
    _write(root, {**DVC, "data/data.csv": _dataset()}, git)


def write_torch(root: Path, git: bool = True) -> None:
    _write(root, {**TORCH, "data/xy.csv": "a,b,c,y\n" + _dataset(256, 3).split("\n", 1)[1]},
           git)


def write_hydra(root: Path, git: bool = True) -> None:
    _write(root, {**HYDRA, "data/points.csv": _points()}, git)


# ----------------------------------------------------------------------------- the test


def _strace_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import strace_check
    finally:
        sys.path.pop(0)
    return strace_check


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_hydra_style_project_matches_strace(tmp_path, tier):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    if tier == "privileged" and os.geteuid() != 0:
        pytest.skip("the privileged tiers need root")
    sc = _strace_check()
    project = tmp_path / "hydra"
    write_hydra(project)
    # `python` in the command must be this interpreter (it has PyYAML).
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
                                f"{os.environ.get('PATH', '/usr/bin:/bin')}")
    result = sc.check(project, [HYDRA_CMD], [tier], env=env)
    (want,) = result["expected"]
    # strace itself saw what the project does (guards the checker, not the agent)
    assert set(want["inputs"]) == {"configs/config.yaml", "configs/model/tree.yaml",
                                   "data/points.csv"}
    assert set(want["outputs"]) == {"outputs/model.pkl", "outputs/metrics.json",
                                    "logs/train.log"}
    assert set(want["code"]) == {"pkg/__init__.py", "pkg/conf.py", "pkg/train.py"}
    (rep,) = result["tiers"][tier]
    problems = dict(rep["problems"])
    if tier == "unprivileged":
        # without pids, a file goes to a step only when one step is alive ("where the
        # tier can tell"); here the shell and the program it exec'd share a pid
        problems.pop("steps", None)
    assert problems == {}, sc.render(result)
    assert rep["counts"] == {"inputs": 3, "outputs": 3, "code": 3}


if __name__ == "__main__":
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for name, fn in (("dvc", write_dvc), ("torch", write_torch), ("hydra", write_hydra)):
        fn(dest / name)
        print(dest / name)


def test_checker_gives_a_childs_opens_before_its_exec_to_the_program_it_execs(tmp_path):
    # strace often prints a child's first calls before its parent's `clone(...) = pid`
    # (unfinished, then resumed). A shell's `> log` redirect opened there is still
    # the exec'd program's output, not the shell's.
    sc = _strace_check()
    root = str(tmp_path)
    trace = "\n".join([
        '10 execve("/usr/bin/bash", ["bash", "-c", "python t.py > log"], []) = 0',
        '10 clone(child_stack=NULL, flags=SIGCHLD <unfinished ...>',
        f'11 openat(AT_FDCWD<{root}>, "log", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3<{root}/log>',
        '11 execve("/usr/bin/python", ["python", "t.py"], []) = 0',
        '10 <... clone resumed>) = 11',
        f'11 openat(AT_FDCWD<{root}>, "t.py", O_RDONLY|O_CLOEXEC) = 3<{root}/t.py>',
    ])
    bash, python = sc.parse_trace(trace, ["bash", "-c", "python t.py > log"], root)
    assert bash.writes == set() and bash.reads == {"/usr/bin/bash"}
    assert python.argv == ["python", "t.py"]
    assert python.writes == {f"{root}/log"}
    assert f"{root}/t.py" in python.reads
