"""Benchmark: `onlooker lineage` (and `pipeline`, `outdated`) end to end on a big catalog.

Builds a project whose catalog holds RUNS runs of a STAGES-stage pipeline run over and
over (each run writes two new versions, so 2 x RUNS versions), where each run reads its
upstream stage's current outputs, a shared params.yaml, and with probability --reuse
an older output of any earlier run (a cached feature set, a checkpoint resumed from):
the ancestry of a late output then spans much of the graph. Code and tool files (git)
are linked too, as the agent links them, and never walked. Then it times the CLI as a
person runs it (a fresh `python -m onlooker.cli.main` process each time, output to
/dev/null), and the library call alone.

    python benchmarks/bench_lineage.py                      # 5,000 runs, 10,000 versions
    python benchmarks/bench_lineage.py --runs 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from onlooker.store.catalog import Catalog
from onlooker.store.objects import hash_bytes

T0 = 1_790_000_000.0


def build(root: Path, runs: int, stages: int, reuse: float, seed: int) -> dict[str, object]:
    """Fill root's catalog; returns the targets to time and the counts."""
    rnd = random.Random(seed)
    cat = Catalog.init(root)
    current: dict[str, tuple[int, bytes]] = {}  # path -> (version id, content)
    produced: list[int] = []  # every output version id, oldest first

    def version(path: str, content: bytes, t: float, run: int | None = None) -> int:
        vid = cat.add_version(str(root / path), hash=hash_bytes(content), size=len(content),
                              mtime_ns=int(t * 1e9), kind="other", stored=False,
                              created_at=t, run_id=run)
        current[path] = (vid, content)
        return vid

    with cat.transaction():
        for k in range(2):
            version(f"data/raw{k}.csv", f"raw {k}".encode(), T0)
        version("params.yaml", b"seed: 0\n", T0)
        head = version(".git/HEAD", b"ref: refs/heads/main\n", T0)
        code = [version(f"src/stage{k}.py", f"# stage {k}\n".encode(), T0)
                for k in range(stages)]
        for i in range(runs):
            t = T0 + 10 * (i + 1)
            k = i % stages
            if k == 0 and i and (i // stages) % 25 == 0:  # a param change now and then
                version("params.yaml", f"seed: {i}\n".encode(), t - 1)
            run = cat.begin_run(command=["python", f"src/stage{k}.py", "--seed", str(i)],
                                cwd=str(root), exe="/usr/bin/python3", pid=10_000 + i,
                                pid_start=1, user="me", hostname="box", started_at=t,
                                tier="netlink+fanotify")
            ups = ([f"data/raw{j}.csv" for j in range(2)] if k == 0
                   else [f"data/s{k - 1}/{x}.bin" for x in "ab"])
            for path in [*ups, "params.yaml"]:
                cat.link(run, current[path][0], "input", basis="fanotify")
            if produced and rnd.random() < reuse:
                cat.link(run, rnd.choice(produced), "input", basis="fanotify")
            cat.link(run, code[k], "code", basis="fanotify")
            cat.link(run, head, "meta", access="read")
            for x in "ab":
                path = f"data/s{k}/{x}.bin"
                vid = version(path, f"{path} from run {run}".encode(), t + 5, run)
                cat.link(run, vid, "output", producer_set=True, basis="fanotify")
                produced.append(vid)
            cat.update_run(run, status="completed", exit_code=0, ended_at=t + 6)
    counts = cat.counts()
    cat.close()
    for path, (_, content) in current.items():  # the files as the last runs left them
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(content)
    last = f"data/s{(runs - 1) % stages}/a.bin"
    return {"last_output": last, "counts": counts}


def timed_cli(root: Path, args: list[str], repeat: int) -> tuple[list[float], int]:
    cmd = [sys.executable, "-m", "onlooker.cli.main", "-C", str(root), *args]
    times = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True)
        times.append(time.perf_counter() - start)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {res.stderr.decode()}")
        size = len(res.stdout)
    return times, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--stages", type=int, default=20)
    ap.add_argument("--reuse", type=float, default=0.3,
                    help="chance a run also reads an older output (default 0.3)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onlooker-bench-lineage-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        info = build(root, args.runs, args.stages, args.reuse, args.seed)
        print(f"built in {time.perf_counter() - start:.1f}s: {info['counts']}")
        last = str(info["last_output"])
        with Catalog.find(root) as cat:
            first = cat.versions("data/raw0.csv")[0]["hash"]
            for label, call in (("up", lambda: cat.lineage(last)),
                                ("down", lambda: cat.lineage("data/raw0.csv", up=False))):
                got, walls = None, []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    got = call()
                    walls.append(time.perf_counter() - t)
                assert got is not None
                runs = sum(n["type"] == "run" for n in got["nodes"])
                print(f"library lineage --{label}: {len(got['nodes'])} nodes ({runs} runs), "
                      f"{len(got['edges'])} edges; median {statistics.median(walls):.3f}s")
        cases = [
            ("baseline: onlooker --help (start-up)", ["--help"]),
            ("lineage --up --json (newest output)", ["lineage", last, "--json"]),
            ("lineage --up tree (newest output)", ["lineage", last]),
            ("lineage --up --depth 3 --json", ["lineage", last, "--depth", "3", "--json"]),
            ("lineage --down --json (first raw data)",
             ["lineage", f"data/raw0.csv@{first[7:19]}", "--down", "--json"]),
            ("lineage --down --dot (first raw data)", ["lineage", "data/raw0.csv", "--down",
                                                        "--dot"]),
            ("pipeline --json", ["pipeline", "--json"]),
            ("outdated --json (files hashed)", ["outdated", "--json"]),
        ]
        rows = []
        for label, cli_args in cases:
            times, size = timed_cli(root, cli_args, args.repeat)
            rows.append({"case": label, "median_s": round(statistics.median(times), 3),
                         "max_s": round(max(times), 3), "stdout_bytes": size})
            print(f"{label:45s} median {statistics.median(times):.3f}s  max {max(times):.3f}s"
                  f"  ({size:,} bytes out)")
        print(json.dumps({"runs": args.runs, "stages": args.stages, "reuse": args.reuse,
                          "counts": info["counts"], "cli": rows}))


if __name__ == "__main__":
    main()
