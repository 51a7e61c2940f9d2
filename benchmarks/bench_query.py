"""`onlooker runs --where ... --sort ...` on big catalogs, timed end to end (subprocess).

Builds catalogs of 10,000 and 100,000 runs in a temp folder through the store's own
write API (each run: a command line, 10 params, 3 final metrics and 2 series of 10
points, 5 files, 3 telemetry samples), then times the real CLI command, the way a
person runs it (bytecode cached, as an installed package has it; one warm-up run
first), several times each: the median and worst wall time, the median CPU
time of the command (less sensitive to a shared machine's load) and, apart, the
median of the store call alone (Catalog.query in this process, no start-up).

Usage: .venv/bin/python benchmarks/bench_query.py [--sizes 10000,100000] [--repeat 5]
       [--keep DIR]   (keep and reuse the catalogs there)
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onlooker.agent.metrics import Metric  # noqa: E402
from onlooker.store.catalog import Catalog  # noqa: E402

ONLOOKER = [sys.executable, "-m", "onlooker.cli"]
# As installed: bytecode is cached (pip compiles on install), so start-up is not spent
# compiling the modules again on every command.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
SCRIPTS = ("src/train.py", "src/train.py", "src/train.py", "src/featurize.py", "src/evaluate.py")
STATUSES = ["completed"] * 90 + ["failed"] * 8 + ["lost", "ended"]
DAY = 86400.0

# (label, argv after `onlooker -C DIR`, the same as Catalog.query arguments)
COMMANDS = [
    ("filter on a param and a metric, sort by a metric",
     ["runs", "--where", "params.lr > 0.01 and (metrics.test.f1 >= 0.8 or status = 'failed')",
      "--sort", "-metrics.test.f1"],
     {"where": ["params.lr > 0.01 and (metrics.test.f1 >= 0.8 or status = 'failed')"],
      "sort": "-metrics.test.f1", "limit": 20}),
    ("two --where (a param and a glob on the command), sort by a param",
     ["runs", "--where", "params.model.depth >= 6", "--where", "command ~ '*train.py*'",
      "--sort", "params.lr"],
     {"where": ["params.model.depth >= 6", "command ~ '*train.py*'"], "sort": "params.lr",
      "limit": 20}),
    ("files: runs that read a glob of paths",
     ["runs", "--where", "input ~ 'data/raw/*'", "--sort", "-duration"],
     {"where": ["input ~ 'data/raw/*'"], "sort": "-duration", "limit": 20}),
    ("since and a series field, --json",
     ["runs", "--since", "30d", "--where", "metrics.val_loss.min < 0.3", "--json"],
     {"where": ["metrics.val_loss.min < 0.3"], "since": "30d", "limit": 20}),
    ("telemetry: a summary field (read for the runs passing the rest)",
     ["runs", "--where", "status = failed and telemetry.rss_peak > 4e9"],
     {"where": ["status = failed and telemetry.rss_peak > 4e9"], "limit": 20}),
    ("plain `runs` (newest 20)", ["runs"], {"limit": 20}),
]


def time_store(project: Path, kwargs: dict, repeat: int) -> float:
    """Median seconds of the store call alone (Catalog.query, in this process)."""
    times = []
    with Catalog.find(project) as cat:
        for _ in range(repeat):
            started = time.perf_counter()
            cat.query(**kwargs)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def build(project: Path, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = time.time()
    with Catalog.init(project) as cat, cat.transaction():
        for i in range(n):
            script = SCRIPTS[i % len(SCRIPTS)]
            lr = rng.choice([0.1, 0.03, 0.01, 0.003, 0.001])
            epochs = rng.choice([5, 10, 20])
            batch = rng.choice([32, 64, 128])
            argv = ["/usr/bin/python3", script, "--lr", str(lr), "--epochs", str(epochs),
                    "--batch-size", str(batch)]
            started = now - (n - i) * (180 * DAY / n)
            run = cat.begin_run(command=argv, cwd=str(project), exe="/usr/bin/python3",
                                pid=1000 + i, pid_start=i, user="ana", hostname="box",
                                started_at=started, tier="netlink+inotify")
            status = rng.choice(STATUSES)
            cat.update_run(run, status=status, exit_code=0 if status == "completed" else 1,
                           ended_at=started + rng.uniform(5, 3600))
            cat.set_params(run, {
                "lr": (lr, "argv"), "epochs": (epochs, "argv"), "batch_size": (batch, "argv"),
                "params.yaml:train.seed": (rng.randrange(100), "params.yaml"),
                "params.yaml:model.depth": (rng.randrange(2, 12), "params.yaml"),
                "params.yaml:model.width": (rng.choice([64, 128, 256]), "params.yaml"),
                "params.yaml:model.dropout": (rng.choice([0.0, 0.1, 0.3]), "params.yaml"),
                "params.yaml:optim.name": (rng.choice(["adam", "sgd"]), "params.yaml"),
                "params.yaml:optim.momentum": (0.9, "params.yaml"),
                "params.yaml:data.split": (rng.choice(["a", "b", "c"]), "params.yaml"),
            })
            f1 = rng.random()
            cat.set_metrics(run, "summary.json", [
                Metric("summary.json:test.f1", None, f1),
                Metric("summary.json:test.acc", None, min(1.0, f1 + 0.05)),
                Metric("summary.json:test.loss", None, 1 - f1),
            ])
            cat.set_metrics(run, "training.log", [
                Metric(key, float(step), rng.random() / (step + 1))
                for key in ("loss", "val_loss") for step in range(10)
            ])
            files = [
                ("data/raw/data.csv", f"r{i // 500}", "dataset", "input"),
                ("data/features/train.pkl", f"f{i // 100}", "dataset", "input"),
                (script, f"c{i // 50}", "code", "code"),
                (f"models/model-{i}.pkl", f"m{i}", "model", "output"),
                ("summary.json", f"s{i}", "metrics", "output"),
            ]
            for path, content, kind, role in files:
                digest = "blake3:" + content.encode().hex().ljust(64, "0")[:64]
                vid = cat.add_version(path, hash=digest, size=1000, mtime_ns=int(started),
                                      kind=kind, stored=False, created_at=started,
                                      run_id=run if role == "output" else None)
                cat.link(run, vid, role, producer_set=role == "output", basis="fanotify")
            cat.add_telemetry([(run, started + k, {"cpu_pct": rng.uniform(0, 200),
                                                   "rss": rng.randrange(1, 8) * 2**30,
                                                   "cpu_s": float(k)}) for k in range(3)])


def time_command(project: Path, args: list[str], repeat: int
                 ) -> tuple[float, float, float, int]:
    """(median wall s, worst wall s, median CPU s of the child, lines printed): the CPU
    figure is what the command costs; the wall figure also holds the machine's load."""
    walls, cpus = [], []
    lines = 0
    subprocess.run([*ONLOOKER, "-C", str(project), *args], capture_output=True, env=ENV)
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run([*ONLOOKER, "-C", str(project), *args], capture_output=True,
                              text=True, env=ENV)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"{args} failed: {done.stderr.strip()}")
        lines = len(done.stdout.splitlines())
    return statistics.median(walls), max(walls), statistics.median(cpus), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the catalogs here")
    opts = parser.parse_args()
    root = opts.keep or Path(tempfile.mkdtemp(prefix="onlooker-bench-query-"))
    try:
        baseline, _, cpu, _ = time_command(root, ["--help"], opts.repeat)
        print(f"python + onlooker start-up (onlooker --help): {baseline * 1000:.0f} ms wall,"
              f" {cpu * 1000:.0f} ms CPU")
        for n in (int(s) for s in opts.sizes.split(",")):
            project = root / f"runs-{n}"
            if not (project / ".onlooker" / "catalog.db").exists():
                project.mkdir(parents=True, exist_ok=True)
                started = time.perf_counter()
                build(project, n)
                size = (project / ".onlooker" / "catalog.db").stat().st_size
                print(f"\n{n:,} runs: built in {time.perf_counter() - started:.0f} s, "
                      f"catalog {size / 2**20:.0f} MiB")
            else:
                print(f"\n{n:,} runs (reused {project})")
            for label, args, kwargs in COMMANDS:
                median, worst, cpu, lines = time_command(project, args, opts.repeat)
                store = time_store(project, kwargs, opts.repeat)
                print(f"  {median * 1000:6.0f} ms wall (worst {worst * 1000:4.0f}),"
                      f" {cpu * 1000:5.0f} ms CPU, Catalog.query {store * 1000:4.0f} ms"
                      f"  {label}  [{lines} lines]")
    finally:
        if opts.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
