"""A real, unchanged four-stage ML pipeline, written into a temp project for the e2e tests."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

PARAMS = """\
prepare:
  split: 0.25
  seed: 20170428
featurize:
  max_features: 8
train:
  seed: 20170428
  n_est: 5
"""

COMMON = '''
import csv, yaml

def load_params(stage):
    with open("params.yaml") as f:
        return yaml.safe_load(f)[stage]

def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))
'''

PREPARE = '''
import csv, os, random, sys, time
from common import load_params, read_csv
time.sleep(0.15)  # work: the poll tier is promised to see processes of 100 ms and more

p = load_params("prepare")
rows = read_csv(sys.argv[1])
header, rows = rows[0], rows[1:]
random.Random(p["seed"]).shuffle(rows)
cut = int(len(rows) * p["split"])
os.makedirs("data/prepared", exist_ok=True)
for name, part in (("test", rows[:cut]), ("train", rows[cut:])):
    with open(f"data/prepared/{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(part)
'''

FEATURIZE = '''
import os, pickle, sys, time
from common import load_params, read_csv
time.sleep(0.15)

p = load_params("featurize")
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in ("train", "test"):
    rows = read_csv(os.path.join(src, name + ".csv"))[1:]
    feats = [([float(x) for x in r[:-1]][: p["max_features"]], int(r[-1])) for r in rows]
    with open(os.path.join(dst, name + ".pkl"), "wb") as f:
        pickle.dump(feats, f)
'''

TRAIN = '''
import argparse, os, pickle, time
from common import load_params
time.sleep(0.15)

ap = argparse.ArgumentParser()
ap.add_argument("features")
ap.add_argument("model")
ap.add_argument("--n-est", type=int, default=10)
args = ap.parse_args()
p = load_params("train")
with open(os.path.join(args.features, "train.pkl"), "rb") as f:
    data = pickle.load(f)
centroids = {}
for x, y in data:
    c = centroids.setdefault(y, [0.0] * len(x) + [0])
    for i, v in enumerate(x):
        c[i] += v
    c[-1] += 1
model = {y: [v / c[-1] for v in c[:-1]] for y, c in centroids.items()}
with open(args.model, "wb") as f:
    pickle.dump({"centroids": model, "n_est": args.n_est, "seed": p["seed"]}, f)
'''

EVALUATE = '''
import json, os, pickle, sys, time
time.sleep(0.15)

model_path, features = sys.argv[1], sys.argv[2]
with open(model_path, "rb") as f:
    model = pickle.load(f)["centroids"]
with open(os.path.join(features, "test.pkl"), "rb") as f:
    data = pickle.load(f)

def predict(x):
    return min(model, key=lambda y: sum((a - b) ** 2 for a, b in zip(x, model[y])))

acc = sum(predict(x) == y for x, y in data) / max(1, len(data))
os.makedirs("eval", exist_ok=True)
with open("eval/metrics.json", "w") as f:
    json.dump({"accuracy": acc, "n": len(data)}, f)
'''

STAGES = [
    ("prepare", ["src/prepare.py", "data/data.csv"]),
    ("featurize", ["src/featurize.py", "data/prepared", "data/features"]),
    ("train", ["src/train.py", "data/features", "model.pkl", "--n-est", "50"]),
    ("evaluate", ["src/evaluate.py", "model.pkl", "data/features"]),
]

# What each stage really reads and writes (checked against strace by hand; see docs).
EXPECTED = {
    "prepare": {
        "inputs": {"data/data.csv", "params.yaml"},
        "outputs": {"data/prepared/train.csv", "data/prepared/test.csv"},
        "code": {"src/prepare.py", "src/common.py"},
    },
    "featurize": {
        "inputs": {"data/prepared/train.csv", "data/prepared/test.csv", "params.yaml"},
        "outputs": {"data/features/train.pkl", "data/features/test.pkl"},
        "code": {"src/featurize.py", "src/common.py"},
    },
    "train": {
        "inputs": {"data/features/train.pkl", "params.yaml"},
        "outputs": {"model.pkl"},
        "code": {"src/train.py", "src/common.py"},
    },
    "evaluate": {
        "inputs": {"model.pkl", "data/features/test.pkl"},
        "outputs": {"eval/metrics.json"},
        "code": {"src/evaluate.py"},
    },
}


def write_project(root: Path, *, git: bool = True) -> None:
    (root / "src").mkdir(parents=True)
    (root / "data").mkdir()
    for name, text in (("common", COMMON), ("prepare", PREPARE), ("featurize", FEATURIZE),
                       ("train", TRAIN), ("evaluate", EVALUATE)):
        (root / "src" / f"{name}.py").write_text(text.lstrip())
    (root / "params.yaml").write_text(PARAMS)
    rnd = random.Random(1)
    lines = ["f0,f1,f2,f3,label"]
    for _ in range(300):
        y = rnd.randint(0, 1)
        lines.append(",".join(f"{rnd.gauss(y, 1):.4f}" for _ in range(4)) + f",{y}")
    (root / "data" / "data.csv").write_text("\n".join(lines) + "\n")
    (root / ".gitignore").write_text("data/\nmodel.pkl\neval/\n")
    if git:
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "pipeline"]):
            subprocess.run(cmd, cwd=root, check=True, env=env)


def run_stage(root: Path, args: list[str]) -> None:
    # Bytecode caching on, as most people have it: later stages import common.py
    # from __pycache__ without opening the source.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, *args], cwd=root, check=True, env=env)
