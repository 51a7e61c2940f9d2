"""Synthetic catalogs built through the store's write API, in one transaction (fast):
for the API tests and benchmarks/bench_ui.py."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from onlooker.agent.metrics import Metric
from onlooker.store.catalog import Catalog

SCRIPTS = ("src/train.py", "src/train.py", "src/featurize.py", "src/evaluate.py")
STATUSES = ["completed"] * 8 + ["failed", "lost"]


def build(project: Path, n: int, *, seed: int = 7, series_points: int = 10,
          long_series: int = 0) -> Path:
    """`n` runs, each with a command, 4 params, 2 final metrics, a `loss` series of
    `series_points` points (run 1's has `long_series` points when given), 3 files and
    3 telemetry samples; runs 1 -> 2 share a file (lineage)."""
    rng = random.Random(seed)
    now = time.time()
    project.mkdir(parents=True, exist_ok=True)
    with Catalog.init(project) as cat, cat.transaction():
        for i in range(n):
            script = SCRIPTS[i % len(SCRIPTS)]
            lr = rng.choice([0.1, 0.03, 0.01, 0.001])
            argv = ["/usr/bin/python3", script, "--lr", str(lr)]
            started = now - (n - i) * 60.0
            run = cat.begin_run(command=argv, cwd=str(project), exe="/usr/bin/python3",
                                pid=1000 + i, pid_start=i, user="ana", hostname="box",
                                started_at=started, tier="netlink+fanotify")
            status = STATUSES[i % len(STATUSES)]
            cat.update_run(run, status=status, exit_code=0 if status == "completed" else 1,
                           ended_at=started + rng.uniform(5, 50))
            cat.set_params(run, {
                "lr": (lr, "argv"),
                "params.yaml:model.depth": (rng.randrange(2, 12), "params.yaml"),
                "params.yaml:optim.name": (rng.choice(["adam", "sgd"]), "params.yaml"),
                "params.yaml:data.split": (rng.choice(["a", "b"]), "params.yaml"),
            })
            f1 = rng.random()
            cat.set_metrics(run, "summary.json", [
                Metric("summary.json:test.f1", None, f1),
                Metric("summary.json:test.loss", None, 1 - f1),
            ])
            points = long_series if (i == 0 and long_series) else series_points
            cat.set_metrics(run, "train.log", [
                Metric("loss", float(step), math.exp(-step / max(1, points / 4))
                       + rng.random() * 0.05 + (5.0 if step == points // 3 else 0.0))
                for step in range(points)])
            files = [
                ("data/raw.csv", "raw", "dataset", "input"),
                (script, f"c{i % 7}", "code", "code"),
                (f"models/model-{i}.pkl", f"m{i}", "model", "output"),
            ]
            if i == 1:  # the second run read what the first wrote
                files.append(("models/model-0.pkl", "m0", "model", "input"))
            for path, content, kind, role in files:
                digest = "blake3:" + content.encode().hex().ljust(64, "0")[:64]
                vid = cat.add_version(path, hash=digest, size=1000 + i, mtime_ns=int(started),
                                      kind=kind, stored=False, created_at=started,
                                      run_id=run if role == "output" else None)
                cat.link(run, vid, role, producer_set=role == "output", basis="fanotify")
            cat.add_telemetry([(run, started + k, {"cpu_pct": rng.uniform(0, 200),
                                                   "rss": rng.randrange(1, 8) * 2**30,
                                                   "cpu_s": float(k)}) for k in range(3)])
    return project
