"""Generate the demo project: seeded data, params.yaml and three plain-Python pipeline stages."""

from __future__ import annotations

import logging
import random
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

# (what it does, argv after the interpreter): run from the project folder, in this order.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("split the data", ("src/prepare.py", "data/data.csv")),
    ("build features", ("src/featurize.py", "data/prepared", "data/features")),
    ("train a model", ("src/train.py", "data/features", "model.pkl", "--n-est", "50")),
)

PARAMS_YAML = """\
prepare:
  split: 0.25
  seed: 20
featurize:
  max_features: 24
train:
  n_est: 20
  seed: 7
"""

_COMMON = """\
import yaml


def params(section):
    with open("params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)[section]
"""

PREPARE = '''\
"""Split data.csv into train and test sets."""

import csv
import os
import random
import sys

''' + _COMMON + '''

def main(src):
    p = params("prepare")
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    random.Random(p["seed"]).shuffle(rows)
    n_test = int(len(rows) * p["split"])
    os.makedirs("data/prepared", exist_ok=True)
    for name, part in (("test", rows[:n_test]), ("train", rows[n_test:])):
        with open(f"data/prepared/{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
        print(f"prepare: {name}: {len(part)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
'''

FEATURIZE = '''\
"""Turn prepared rows into numeric vectors: word counts of a fixed vocabulary + numbers."""

import collections
import csv
import os
import pickle
import sys

''' + _COMMON + '''

def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def vectorize(row, vocab):
    counts = collections.Counter(row["text"].split())
    return [float(counts[w]) for w in vocab] + [float(row["x1"]), float(row["x2"])]


def main(src, dst):
    p = params("featurize")
    train = read(os.path.join(src, "train.csv"))
    test = read(os.path.join(src, "test.csv"))
    words = collections.Counter(w for row in train for w in row["text"].split())
    vocab = [w for w, _ in words.most_common(p["max_features"])]
    os.makedirs(dst, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        data = {"vocab": vocab, "X": [vectorize(r, vocab) for r in rows],
                "y": [int(r["label"]) for r in rows]}
        with open(os.path.join(dst, f"{name}.pkl"), "wb") as f:
            pickle.dump(data, f)
    print(f"featurize: {len(vocab)} words + 2 numbers per row")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''

TRAIN = '''\
"""Train a bagged nearest-centroid classifier; write the model and metrics.json."""

import argparse
import json
import os
import pickle
import random

''' + _COMMON + '''

def centroids(X, y):
    sums, counts = {}, {}
    for x, label in zip(X, y):
        acc = sums.setdefault(label, [0.0] * len(x))
        for i, v in enumerate(x):
            acc[i] += v
        counts[label] = counts.get(label, 0) + 1
    return {label: [v / counts[label] for v in acc] for label, acc in sums.items()}


def nearest(model, x):
    return min(model, key=lambda label: sum((a - b) ** 2 for a, b in zip(model[label], x)))


def predict(models, x):
    votes = [nearest(m, x) for m in models]
    return max(set(votes), key=votes.count)


def main():
    p = params("train")
    parser = argparse.ArgumentParser()
    parser.add_argument("features")
    parser.add_argument("model")
    parser.add_argument("--n-est", type=int, default=p["n_est"])
    args = parser.parse_args()
    with open(os.path.join(args.features, "train.pkl"), "rb") as f:
        train = pickle.load(f)
    with open(os.path.join(args.features, "test.pkl"), "rb") as f:
        test = pickle.load(f)
    rng = random.Random(p["seed"])
    n = len(train["y"])
    models = []
    for _ in range(args.n_est):
        idx = [rng.randrange(n) for _ in range(n)]
        models.append(centroids([train["X"][i] for i in idx], [train["y"][i] for i in idx]))
    hits = sum(predict(models, x) == y for x, y in zip(test["X"], test["y"]))
    accuracy = hits / len(test["y"])
    with open(args.model, "wb") as f:
        pickle.dump({"vocab": train["vocab"], "models": models}, f)
    with open("metrics.json", "w", encoding="utf-8") as f:
        json.dump({"accuracy": round(accuracy, 4), "n_test": len(test["y"])}, f, indent=2)
    print(f"train: {args.n_est} estimators, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
'''

_TOPICS = (
    ("goal", "match", "team", "league", "coach", "score", "season", "player"),
    ("market", "stock", "price", "bank", "trade", "profit", "growth", "invest"),
)
_FILLER = ("the", "a", "of", "and", "to", "in", "is", "on", "for", "with", "new", "big")


def _data_csv(rows: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = ["id,text,x1,x2,label"]
    for i in range(rows):
        label = rng.randrange(2)
        words = [rng.choice(_TOPICS[label] if rng.random() < 0.35 else _FILLER)
                 for _ in range(rng.randint(6, 14))]
        # A little label noise in the words and the numbers keeps accuracy below 100%.
        words += [rng.choice(_TOPICS[1 - label])] * (rng.random() < 0.3)
        x1 = rng.gauss(1.0 if label else -1.0, 1.5)
        x2 = rng.gauss(0.0, 1.0)
        lines.append(f"{i},{' '.join(words)},{x1:.4f},{x2:.4f},{label}")
    return "\n".join(lines) + "\n"


def generate(project: Path, *, rows: int = 800, seed: int = 1234) -> Path:
    """Write the demo project into `project` (created if needed); return it."""
    project = Path(project)
    (project / "data").mkdir(parents=True, exist_ok=True)
    (project / "src").mkdir(exist_ok=True)
    (project / "data" / "data.csv").write_text(_data_csv(rows, seed), encoding="utf-8")
    (project / "params.yaml").write_text(PARAMS_YAML, encoding="utf-8")
    for name, text in (("prepare.py", PREPARE), ("featurize.py", FEATURIZE), ("train.py", TRAIN)):
        (project / "src" / name).write_text(text, encoding="utf-8")
    (project / ".gitignore").write_text(
        "data/prepared/\ndata/features/\nmodel.pkl\nmetrics.json\n", encoding="utf-8"
    )
    (project / "README.md").write_text(
        "# onlooker demo\n\nA three-stage pipeline (prepare, featurize, train) in plain Python.\n",
        encoding="utf-8",
    )
    return project


def git_commit(project: Path) -> bool:
    """`git init` and commit the project when git exists; False when it does not or fails."""
    git = shutil.which("git")
    if git is None:
        return False
    ident = ["-c", "user.name=onlooker demo", "-c", "user.email=demo@onlooker.invalid",
             "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    try:
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "demo project"]):
            subprocess.run([git, *ident, *args], cwd=project, check=True,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("git commit of the demo project failed: %s", err)
        return False
    return True
