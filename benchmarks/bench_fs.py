"""Benchmark the file sources: start, idle cost, fanotify overhead, bursts, rescans.

Run as root for the fanotify parts: `python benchmarks/bench_fs.py [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from onlooker.agent import events as ev
from onlooker.agent.config import DEFAULTS
from onlooker.agent.rules.ignore import Ignore
from onlooker.agent.sources.fanotify import FanotifySource
from onlooker.agent.sources.inotify import InotifySource
from onlooker.agent.workers import scan

IMPORTS = "import json, email, http.client"


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def build_tree(root: Path, folders: int, files: int) -> list[Path]:
    dirs = []
    for i in range(folders):
        d = root / f"g{i // 100:03d}" / f"d{i % 100:02d}"
        d.mkdir(parents=True)
        dirs.append(d)
    for j in range(files):
        (dirs[j % folders] / f"f{j}.bin").write_bytes(b"x" * 64)
    return dirs


def ignore_for(root: Path) -> Ignore:
    return Ignore(root, exclude=DEFAULTS["watch"]["exclude"],
                  outside_ignore=DEFAULTS["watch"]["outside_ignore"])


class Counting:
    """Drains a source's queue on its own thread, as the agent's assembler would."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self.ops: Counter[str] = Counter()
        self.paths: dict[str, set[str]] = {}
        self.overflows = 0
        self.last = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            self.last = time.monotonic()
            if isinstance(item, ev.Overflow):
                self.overflows += 1
            elif isinstance(item, ev.FileEvent):
                self.ops[item.op] += 1
                self.paths.setdefault(item.op, set()).add(item.path)

    def quiet(self, seconds: float, limit: float = 60.0) -> None:
        """Wait until no event arrived for `seconds` (at most `limit`)."""
        deadline = time.monotonic() + limit
        while time.monotonic() - self.last < seconds and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.q.put(None)
        self._thread.join()


def idle_cost(label: str, start, stop, seconds: float) -> None:
    start()
    time.sleep(0.5)
    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu() - c0, time.monotonic() - t0
    stop()
    print(f"  {label}: {100 * used / wall:.3f}% of one core over {wall:.1f} s idle")


def bench_inotify_start_and_idle(root: Path, seconds: float) -> None:
    counting = Counting()
    src = InotifySource(counting.q, root, ignore_for(root))
    t0 = time.monotonic()
    src.start()
    print(f"inotify start: {src.watch_count} watches in {time.monotonic() - t0:.3f} s")
    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu() - c0, time.monotonic() - t0
    print(f"  inotify idle: {100 * used / wall:.3f}% of one core over {wall:.1f} s")
    t0 = time.monotonic()
    n = sum(1 for _ in scan.walk(root, ignore_for(root)))
    walk_s = time.monotonic() - t0
    counting.quiet(0.5)
    print(f"  rescan with inotify running: {n} files in {walk_s:.3f} s, "
          f"{counting.overflows} overflows, {sum(counting.ops.values())} file events "
          "(want 0 and 0: a walk raises only folder events, which are dropped)")
    src.stop()
    counting.close()


def bench_fanotify(root: Path, seconds: float, runs: int) -> None:
    ok, why = FanotifySource.probe(root)
    if not ok:
        print(f"fanotify: skipped ({why})")
        return
    counting = Counting()
    src = FanotifySource(counting.q, root, ignore_for(root), ignore_pid=os.getpid(),
                         run_pids=lambda: ())
    idle_cost("fanotify idle (the whole mount: other processes' opens count)",
              src.start, src.stop, seconds)
    print(f"    events read meanwhile: {src.events_seen}")

    def timed(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", IMPORTS], check=True)
            out.append(time.perf_counter() - t0)
        return out

    timed(3)  # warm the page cache
    off, on = [], []
    c_on = 0.0
    for _ in range(2):  # alternate blocks so drift on a shared machine hits both
        off += timed(runs // 2)
        src = FanotifySource(counting.q, root, ignore_for(root), ignore_pid=os.getpid(),
                             run_pids=lambda: ())
        src.start()
        c0 = cpu()
        on += timed(runs // 2)
        c_on += cpu() - c0
        src.stop()
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"fanotify overhead, `python -c \"{IMPORTS}\"` x{len(on)}: median "
          f"{1000 * m_off:.1f} ms without, {1000 * m_on:.1f} ms with, ratio {m_on / m_off:.3f}; "
          f"total {sum(on) / sum(off):.3f}; source CPU {1000 * c_on / len(on):.2f} ms per run")
    counting.close()


def bench_burst(root: Path, dirs: list[Path], n: int, reads: bool) -> None:
    counting = Counting()
    src = InotifySource(counting.q, root, ignore_for(root), reads=reads)
    src.start()
    script = (
        "import sys\n"
        "dirs = sys.argv[2:]\n"
        "for i in range(int(sys.argv[1])):\n"
        "    with open(f'{dirs[i % len(dirs)]}/burst{i}.dat', 'wb') as f:\n"
        "        f.write(b'y')\n"
    )
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", script, str(n), *map(str, dirs)], check=True)
    made = time.monotonic() - t0
    counting.quiet(1.0)
    src.stop()
    counting.close()
    wanted = {f"{dirs[i % len(dirs)]}/burst{i}.dat" for i in range(n)}
    created = wanted & counting.paths.get(ev.CREATE, set())
    written = wanted & counting.paths.get(ev.CLOSE_WRITE, set())
    reported = created | written
    covered = set()
    if counting.overflows:  # what the agent's answer to Overflow, a rescan, finds
        covered = {p for p, _ in scan.walk(root, ignore_for(root))} & wanted
    missing = wanted - reported - covered
    mode = "reads" if reads else "structure only"
    print(f"inotify burst ({mode}): {n} files made in {made:.2f} s; "
          f"CREATE {len(created)}, CLOSE_WRITE {len(written)} "
          f"({100 * len(written) / n:.1f}% delivered), {counting.overflows} Overflow; "
          f"missing after rescan: {len(missing)}")
    for path in wanted:
        os.unlink(path)


def bench_big_rescan(base: Path, files: int) -> None:
    root = base / "big"
    build_tree(root, max(1, files // 10), files)
    ig = ignore_for(root)
    sum(1 for _ in scan.walk(root, ig))  # warm
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        n = sum(1 for _ in scan.walk(root, ig))
        times.append(time.monotonic() - t0)
    print(f"warm rescan: {n} files in {min(times):.3f} s (best of 3; "
          f"{', '.join(f'{t:.3f}' for t in times)})")
    shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows, small counts")
    parser.add_argument("--base", default=None, help="folder for the temp trees")
    args = parser.parse_args()
    idle = 2.0 if args.quick else 10.0
    folders, files = (500, 1000) if args.quick else (5000, 10000)
    burst = 2000 if args.quick else 20000
    runs = 10 if args.quick else 50
    base = Path(tempfile.mkdtemp(prefix="onlooker-bench-", dir=args.base)).resolve()
    try:
        root = base / "proj"
        t0 = time.monotonic()
        dirs = build_tree(root, folders, files)
        print(f"tree: {files} files in {folders} folders ({time.monotonic() - t0:.1f} s to make)"
              f"; {os.cpu_count()} CPUs; kernel {os.uname().release}")
        bench_inotify_start_and_idle(root, idle)
        bench_fanotify(root, idle, runs)
        bench_burst(root, dirs, burst, reads=True)
        bench_burst(root, dirs, burst, reads=False)
        bench_big_rescan(base, 10000 if args.quick else 100000)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
