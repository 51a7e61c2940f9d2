"""Telemetry costs: sampler µs per sample (10-process tree), sampler CPU at 1 s, catalog bytes.

Usage: /tmp/venv/bin/python benchmarks/bench_telemetry.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from onlooker.agent import clock
from onlooker.agent.workers.telemetry import TelemetrySampler
from onlooker.store.catalog import Catalog  # noqa: E402

TREE = ("import multiprocessing as mp, time\n"
        "if __name__ == '__main__':\n"
        "    ps = [mp.get_context('fork').Process(target=time.sleep, args=(600,))"
        " for _ in range(9)]\n"
        "    [p.start() for p in ps]\n"
        "    time.sleep(600)\n")


def tree(pid: int) -> frozenset[int]:
    root = psutil.Process(pid)
    return frozenset([pid, *(c.pid for c in root.children(recursive=True))])


def per_sample_us(pids: frozenset[int], n: int = 300) -> float:
    q: queue.Queue = queue.Queue()
    s = TelemetrySampler(q, interval=1e-6, runs=lambda: {1: pids})
    now = clock.now()
    s.tick(now)  # prime
    # CPU time, not wall time: the figure must not depend on what else shares the cores.
    started = time.process_time()
    for i in range(n):
        s.tick(now + 0.2 * (i + 1))  # every tick is due: one sample of the tree
    return (time.process_time() - started) / n * 1e6


def sampler_cpu(pids: frozenset[int], seconds: float) -> tuple[float, int]:
    q: queue.Queue = queue.Queue()
    s = TelemetrySampler(q, interval=1.0, runs=lambda: {1: pids})
    s.start()
    time.sleep(seconds)
    s.stop()
    return s.cpu_seconds() / seconds * 100, s.samples


def catalog_bytes(sample: dict) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, Catalog.init(Path(tmp)) as cat:
        run = cat.begin_run(command=["python"], cwd=tmp, exe=None, pid=1, pid_start=1,
                            user=None, hostname="h", started_at=0.0, tier="poll")

        def size() -> int:
            cat._execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return cat.path.stat().st_size

        base = size()
        t0 = 1_800_000_000.0
        hours = 24
        rows = [(run, t0 + i, {**sample, "cpu_pct": 100.0 + i % 50, "cpu_s": float(i)})
                for i in range(hours * 3600)]
        cat.add_telemetry(rows[:3600])
        per_sample = (size() - base) / 3600
        cat.add_telemetry(rows[3600:])
        cat.compact_telemetry(t0 + hours * 3600)
        cat._execute("VACUUM")
        per_hour = (size() - base) / hours
        return per_sample, per_hour


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    proc = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        deadline = time.monotonic() + 10
        while len(tree(proc.pid)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = tree(proc.pid)
        print(f"tree: {len(pids)} processes; {os.cpu_count()} CPUs")
        print(f"sampler cost per sample (10-process tree): {per_sample_us(pids):.0f} µs")
        pct, n = sampler_cpu(pids, args.seconds)
        print(f"sampler thread CPU, one run at 1 s for {args.seconds:.0f} s: {pct:.3f}% of a core"
              f" ({n} samples)")
    finally:
        for pid in sorted(tree(proc.pid) - {proc.pid}):
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        proc.kill()
        proc.wait()
    sample = {"cpu_pct": 153.2, "cpu_s": 1234.5, "rss": 3_456_789_012, "threads": 57,
              "procs": 10, "fds": 120, "read_bytes": 12_345_678_901, "write_bytes": 123_456_789,
              "sys_cpu_pct": 180.5, "mem_available": 98_765_432_100, "load1": 2.31}
    per_sample, per_hour = catalog_bytes(sample)
    print(f"catalog bytes per raw sample (CPU-only run): {per_sample:.0f} B")
    print(f"catalog bytes per hour of a 24 h run after compaction: {per_hour / 1024:.1f} KiB")
    gpu = {**sample, "gpu.0.procs": 1, "gpu.0.mem": 40_000_000_000, "gpu.0.util": 87.5,
           "dev.0.util": 93.0, "dev.0.mem": 41_000_000_000, "dev.0.temp": 66.0,
           "dev.0.power": 412.3}
    per_sample, per_hour = catalog_bytes(gpu)
    print(f"catalog bytes per raw sample (one GPU): {per_sample:.0f} B")
    print(f"catalog bytes per hour of a 24 h one-GPU run after compaction: "
          f"{per_hour / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
