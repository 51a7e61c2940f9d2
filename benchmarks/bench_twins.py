"""Twins on a big catalog: `Catalog.twins` (what `show` and `twin_of` call) for one run,
and `twin_groups` for the whole catalog, on 10,000 runs of one command (the worst case:
every run is a candidate). Run i and run j are twins when i = j (mod 200).

Usage: .venv/bin/python benchmarks/bench_twins.py [--runs 10000] [--repeat 5]
Prints the best and median of each figure against its target (one run < 0.3 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onlooker.store.catalog import Catalog  # noqa: E402
from onlooker.store.objects import hash_bytes  # noqa: E402
from onlooker.store.twins import twin_groups  # noqa: E402

T0 = 1_795_000_000.0


def build(cat: Catalog, runs: int) -> None:
    with cat.transaction():
        code = hash_bytes(b"print(1)\n")
        for i in range(runs):
            run = cat.begin_run(command=["python", "train.py"], cwd=str(cat.project), exe=None,
                                pid=1, pid_start=1, user="ana", hostname="box",
                                started_at=T0 + i, tier="netlink")
            data = b"%d" % (i % 50)
            for role, path, h in (("input", f"data/{i % 50}.csv", hash_bytes(data)),
                                  ("code", "train.py", code)):
                vid = cat.add_version(path, hash=h, size=1, mtime_ns=1, kind="other",
                                      stored=False, created_at=T0 + i)
                cat.link(run, vid, role)
            cat.set_params(run, {"lr": (i % 200, "argv")})
            cat.update_run(run, status="completed", ended_at=T0 + i + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Catalog.init(Path(tmp)) as cat:
        build(cat, args.runs)
        cat.twins(1)  # warm the page cache, as a second `show` finds it
        one, whole = [], []
        for _ in range(args.repeat):
            began = time.perf_counter()
            mine = cat.twins(1)
            one.append(time.perf_counter() - began)
            began = time.perf_counter()
            groups = twin_groups(cat)
            whole.append(time.perf_counter() - began)
        assert len(mine) == args.runs // 200 - 1 and len(groups) == 200
    for what, xs, target in (("one run's twins", one, "< 0.3 s"),
                             ("every twin group", whole, "< 0.6 s")):
        print(f"{what} over {args.runs:,} runs: best {min(xs):.3f} s, median "
              f"{statistics.median(xs):.3f} s (target {target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
