"""End-to-end benchmarks of the running agent (the figures in docs/benchmarks.md).

Each benchmark builds a temp project, runs the real agent on it through the CLI
(`onlooker init/start/stop`) and reads the catalog read-only, as a user would.

    python benchmarks/bench_agent.py                       # all, default sizes, both tiers
    python benchmarks/bench_agent.py idle --idle-seconds 30
    python benchmarks/bench_agent.py bigfile --big-mib 1024
    python benchmarks/bench_agent.py small --small-files 20000
    python benchmarks/bench_agent.py rescan --rescan-files 100000
    python benchmarks/bench_agent.py burst --burst-files 20000
    python benchmarks/bench_agent.py proc --proc-count 100

Tiers: `full` is netlink+fanotify (needs root), `unpriv` is poll+inotify (forced
through `.onlooker/config.toml`). `--tiers full,unpriv` picks them.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import blake3

HERE = Path(__file__).resolve().parent
ONLOOKER = [sys.executable, "-m", "onlooker.cli"]
TIERS = {"full": "netlink+fanotify", "unpriv": "poll+inotify"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS: list[tuple[str, str, str, str]] = []  # (benchmark, tier, figure, target)


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("onlooker")
    return [str(exe)] if exe.exists() else ONLOOKER


def note(bench: str, tier: str, figure: str, target: str = "") -> None:
    figure += f"; load {os.getloadavg()[0]:.1f}"  # the machine may be shared: say how busy
    RESULTS.append((bench, tier, figure, target))
    print(f"  [{bench} {tier}] {figure}" + (f"   (target {target})" if target else ""), flush=True)


def wait_for(cond, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Project:
    """A temp project with an agent started and stopped through the CLI."""

    def __init__(self, base: Path, tier: str, name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-{tier}-", dir=base))
        self.tier = tier
        self.store = self.root / ".onlooker"
        self.pid: int | None = None
        self._log_at = 0

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*_cli(), "-C", str(self.root), *args], check=check,
                              capture_output=True, text=True, cwd="/")

    def init(self) -> None:
        self.cli("init")
        if self.tier == "unpriv":
            (self.store / "config.toml").write_text(
                '[capture]\nprocess = "poll"\nfiles = "inotify"\n')

    @property
    def log(self) -> Path:
        return self.store / "agent.log"

    def start(self) -> float:
        """Start the agent; return the wall time `start` took."""
        self._log_at = self.log.stat().st_size if self.log.exists() else 0
        t = time.monotonic()
        self.cli("start")
        took = time.monotonic() - t
        self.pid = int((self.store / "agent.pid").read_text().split()[0])
        want = TIERS[self.tier].split("+")
        st = self.status()
        got = [st["tiers"]["process"]["name"], st["tiers"]["files"]["name"]]
        if got != want:
            raise RuntimeError(f"wanted tiers {want}, the agent chose {got}")
        return took

    def stop(self) -> float:
        t = time.monotonic()
        self.cli("stop")
        self.pid = None
        return time.monotonic() - t

    def status(self) -> dict:
        """The agent's own state file (what `status --json` reports), re-read until whole."""
        def read():
            try:
                return json.loads((self.store / "agent.json").read_text())
            except (OSError, ValueError):
                return None
        return wait_for(read, 10, "agent.json")

    def log_since_start(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self._log_at)
            return f.read().decode("utf-8", "replace")

    def scan_line(self) -> re.Match | None:
        return re.search(r"scan: (\d+) files in ([\d.]+) s, (\d+) to hash", self.log_since_start())

    def wait_settled(self, timeout: float = 900) -> dict:
        """Until the start-up scan has run and nothing is queued, hashing or pending."""
        def settled():
            if self.scan_line() is None:
                return None
            st = self.status()
            b = st["backlog"]
            if (st["state"] == "watching" and not b["scanning"] and b["queue"] == 0
                    and b["hashing"] == 0 and b["pending_events"] == 0
                    and st["updated_at"] > time.time() - 2):
                return st
            return None
        # agent.json is rewritten about once a second: want two settled readings in a row.
        first = wait_for(settled, timeout, "the agent to settle", every=0.2)
        while True:
            time.sleep(1.1)
            again = settled()
            if again and again["updated_at"] > first["updated_at"]:
                return again
            if not again:
                first = wait_for(settled, timeout, "the agent to settle", every=0.2)

    def cpu_seconds(self) -> float:
        """utime + stime of the agent and of its bulk process (the hashing), all threads."""
        total = 0.0
        for pid in (self.pid, self.bulk_pid()):
            if pid is None:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        return total

    def threads_cpu(self) -> dict[str, float]:
        """CPU seconds so far per thread of the agent (by the names the agent gives
        them in the kernel; `main` is the event path) and of its bulk process, from
        schedstat (nanoseconds) where the kernel has it, else utime + stime."""
        out: dict[str, float] = {}
        for pid, label in ((self.pid, ""), (self.bulk_pid(), "bulk:")):
            if pid is None:
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                base = f"/proc/{pid}/task/{tid}"
                try:
                    name = "main" if int(tid) == pid else open(f"{base}/comm").read().strip()
                    try:
                        cpu = int(open(f"{base}/schedstat").read().split()[0]) / 1e9
                    except (OSError, IndexError, ValueError):
                        fields = open(f"{base}/stat").read().rsplit(")", 1)[1].split()
                        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
                except OSError:
                    continue  # the thread ended meanwhile
                out[label + name] = out.get(label + name, 0.0) + cpu
        return out

    def bulk_pid(self) -> int | None:
        """The agent's bulk process (hashing at idle priority), where it has one."""
        pid = (self.status().get("bulk") or {}).get("pid")
        return int(pid) if pid else None

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.store / 'catalog.db'}?mode=ro", uri=True,
                               timeout=30)

    def count_versions(self, prefix: str) -> int:
        """Assets under `prefix/` that have at least one version."""
        with self.db() as c:
            return c.execute(
                "SELECT count(DISTINCT a.id) FROM assets a JOIN versions v ON v.asset_id = a.id"
                " WHERE a.path >= ? AND a.path < ?", (prefix + "/", prefix + "0")).fetchone()[0]

    def cleanup(self) -> None:
        if self.pid is not None:
            self.cli("stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def tree(root: Path, files: int, folders: int, size: int) -> None:
    """`files` files of `size` random bytes spread over `folders` folders (two levels)."""
    per = max(1, files // folders)
    n = 0
    for d in range(folders):
        sub = root / "data" / f"g{d // 100:03d}" / f"d{d:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        for _ in range(per if d < folders - 1 else files - n):
            (sub / f"f{n:07d}.bin").write_bytes(os.urandom(size))
            n += 1


def run_script(proj: Project, name: str, body: str, *args: str) -> dict:
    """Run a script inside the project as a run; it prints one JSON line of timings."""
    script = proj.root / name
    script.write_text(textwrap.dedent(body))
    out = subprocess.run([sys.executable, name, *args], cwd=proj.root, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- 1. idle CPU ---------------------------------------------------------------


def bench_idle(base: Path, tier: str, files: int, folders: int, seconds: float) -> None:
    p = Project(base, tier, "idle")
    try:
        tree(p.root, files, folders, 512)
        p.init()
        p.start()
        p.wait_settled()
        c0, th0, t0 = p.cpu_seconds(), p.threads_cpu(), time.monotonic()
        time.sleep(seconds)  # the measured window: nothing happens in the project
        c1, th1, t1 = p.cpu_seconds(), p.threads_cpu(), time.monotonic()
        st = p.status()
        share = (c1 - c0) / (t1 - t0)
        note("idle", tier, f"{share:.2%} of a core over {t1 - t0:.0f} s ({files} files, "
             f"{folders} folders, {st['counts']['watches']} watches)", "< 1%")
        parts = sorted(((th1[k] - th0.get(k, 0.0)) / (t1 - t0), k) for k in th1)
        print("    by thread: " + ", ".join(f"{k} {v:.3%}" for v, k in reversed(parts)
                                            if v >= 0.00005), flush=True)
    finally:
        p.cleanup()


# -- 2. one big file -------------------------------------------------------------

WRITE_BIG = """
    import os, sys, time, json
    mib = int(sys.argv[1])
    t0 = time.time()
    with open("big.bin", "wb") as f:
        for i in range(mib // 16):
            f.write(os.urandom(16 << 20))
    t1 = time.time()
    print(json.dumps({"t0": t0, "closed": t1}))
"""


def bare_big(path: Path) -> float:
    t = time.perf_counter()
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(str(path))
    h.hexdigest()
    return time.perf_counter() - t


def hasher_direct(path: Path, scratch: Path) -> float:
    """The agent's Hasher class alone: request -> HashDone, quiet 0, no copy (over the limit)."""
    from onlooker.agent.events import HashDone
    from onlooker.agent.workers.hasher import Hasher, StatCache
    from onlooker.store.objects import ObjectStore

    q: queue.Queue = queue.Queue()
    objs = ObjectStore(scratch)
    h = Hasher(q, objs, StatCache(), threads=2, quiet=0.0)
    h.start()
    # The bulk process (idle priority) starts first: a tiny file's result says it is up.
    scratch.mkdir(parents=True, exist_ok=True)
    warm = scratch / "warm.txt"
    warm.write_text("warm")
    h.request(str(warm), copy=False)
    q.get(timeout=120)
    t = time.perf_counter()
    h.request(str(path), copy=True)
    while True:
        ev = q.get(timeout=120)
        if isinstance(ev, HashDone):
            break
    took = time.perf_counter() - t
    h.stop()
    objs.close()
    assert ev.hash is not None, ev
    return took


def bench_bigfile(base: Path, tier: str, mib: int) -> None:
    p = Project(base, tier, "big")
    try:
        p.init()
        p.start()
        p.wait_settled()
        w = run_script(p, "write_big.py", WRITE_BIG, str(mib))

        def seen():
            with p.db() as c:
                row = c.execute("SELECT v.created_at FROM versions v JOIN assets a"
                                " ON a.id = v.asset_id WHERE a.path = 'big.bin'").fetchone()
            return (time.time(), row[0]) if row else None
        t_seen, created = wait_for(seen, 300, "the big file's version", every=0.01)
        e2e = t_seen - w["closed"]
        path = p.root / "big.bin"
        bares = [bare_big(path) for _ in range(3)]
        bare = statistics.median(bares)
        direct = hasher_direct(path, base / f"objs-{tier}")
        shutil.rmtree(base / f"objs-{tier}", ignore_errors=True)
        gb = mib / 1024
        note("bigfile", tier, f"bare blake3 mmap AUTO {bare:.3f} s ({gb / bare:.2f} GiB/s, "
             f"runs {min(bares):.3f}-{max(bares):.3f})")
        note("bigfile", tier, f"end-to-end close_write -> version visible {e2e:.3f} s "
             f"(created_at {created - w['closed']:.3f} s): ratio {bare / e2e:.2f}", "> 0.9")
        note("bigfile", tier, f"Hasher class alone {direct:.3f} s: ratio {bare / direct:.2f}",
             "> 0.9")
    finally:
        p.cleanup()


# -- 3. 20,000 small files written by a run -------------------------------------

WRITE_SMALL = """
    import os, sys, time, json
    n, size, folders = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    per = -(-n // folders)
    t0 = time.time()
    for d in range(folders):
        os.makedirs(f"out/d{d:04d}", exist_ok=True)
    rnd = os.urandom(size)
    for i in range(n):
        with open(f"out/d{i // per:04d}/f{i:06d}.bin", "wb") as f:
            f.write(i.to_bytes(8, "little") + rnd[8:])
    t1 = time.time()
    print(json.dumps({"t0": t0, "closed": t1}))
"""


def bare_small(paths: list[str]) -> float:
    t = time.perf_counter()
    for path in paths:
        os.stat(path)
        with open(path, "rb") as f:
            blake3.blake3(f.read()).hexdigest()
    return time.perf_counter() - t


def bench_small(base: Path, tier: str, n: int, size: int) -> None:
    p = Project(base, tier, "small")
    try:
        p.init()
        p.start()
        p.wait_settled()
        cpu0 = p.cpu_seconds()
        w = run_script(p, "write_small.py", WRITE_SMALL, str(n), str(size), "20")
        count = wait_for(lambda: p.count_versions("out") >= n and time.time(), 600,
                         f"{n} versions", every=0.05)
        cpu = p.cpu_seconds() - cpu0
        tail = count - w["closed"]
        total = count - w["t0"]
        p.stop()
        paths = sorted(str(q) for q in (p.root / "out").rglob("*.bin"))
        bares = [bare_small(paths) for _ in range(3)]
        bare = statistics.median(bares)
        note("small", tier, f"{n} x {size} B: writer {w['closed'] - w['t0']:.2f} s; all versions "
             f"{tail:.2f} s after it finished ({total:.2f} s after it began); "
             f"bare stat+read+blake3 {bare:.2f} s ({min(bares):.2f}-{max(bares):.2f})")
        note("small", tier, f"ratio bare / (writer end -> last version) {bare / tail:.2f}", "> 0.7")
        # The wall-clock ratio swings with how fast the disk lets the writer go (the agent
        # keeps up with a slow writer); the agent's CPU per file does not.
        note("small", tier, f"agent CPU {cpu:.2f} s, {1e6 * cpu / n:.0f} us per file; "
             f"ratio bare / agent CPU {bare / cpu:.2f}")
    finally:
        p.cleanup()


# -- 4. warm rescan -------------------------------------------------------------


def bench_rescan(base: Path, tier: str, files: int, repeats: int) -> None:
    p = Project(base, tier, "rescan")
    try:
        t = time.monotonic()
        tree(p.root, files, max(1, files // 100), 64)
        built = time.monotonic() - t
        p.init()
        t = time.monotonic()
        p.start()
        st = p.wait_settled(timeout=1800)
        first = time.monotonic() - t
        m = p.scan_line()
        note("rescan", tier, f"cold: {files} files built in {built:.0f} s; first start hashed "
             f"{st['counts']['files_hashed']} files, settled in {first:.1f} s (scan walk "
             f"{m.group(2)} s)")
        p.stop()
        for _ in range(repeats):
            t = time.monotonic()
            p.start()
            p.wait_settled()
            settled = time.monotonic() - t
            m = p.scan_line()
            st = json.loads(p.cli("status", "--json").stdout)
            note("rescan", tier, f"warm: scan: {m.group(1)} files in {m.group(2)} s, "
                 f"{m.group(3)} to hash; bytes_hashed {st['counts']['bytes_hashed']}; "
                 f"start->settled {settled:.1f} s", "< 2 s, 0 bytes")
            p.stop()
    finally:
        p.cleanup()


# -- 5. burst of creations ------------------------------------------------------


def burst_inline(root: Path, n: int, folders: int) -> tuple[float, float]:
    """Create `n` files as fast as Python can, in new folders, from this process (no run)."""
    per = -(-n // folders)
    t0 = time.time()
    for d in range(folders):
        os.makedirs(root / "burst" / f"d{d:04d}", exist_ok=True)
    for i in range(n):
        fd = os.open(root / "burst" / f"d{i // per:04d}" / f"f{i:06d}",
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"%d\n" % i)
        os.close(fd)
    return t0, time.time()


WRITE_BURST = """
    import os, sys, time, json
    n, folders = int(sys.argv[1]), int(sys.argv[2])
    per = -(-n // folders)
    t0 = time.time()
    for d in range(folders):
        os.makedirs(f"burst/d{d:04d}", exist_ok=True)
    for i in range(n):
        fd = os.open(f"burst/d{i // per:04d}/f{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"%d\\n" % i)
        os.close(fd)
    print(json.dumps({"t0": t0, "closed": time.time()}))
"""


def bench_burst(base: Path, tier: str, n: int, writer: str) -> None:
    p = Project(base, tier, "burst")
    try:
        p.init()
        p.start()
        p.wait_settled()
        if writer == "run":
            w = run_script(p, "burst.py", WRITE_BURST, str(n), "20")
            t0, t1 = w["t0"], w["closed"]
        else:
            t0, t1 = burst_inline(p.root, n, 20)
        # Bounded: everything settled (nothing queued, hashing, pending, scanning).
        st = p.wait_settled(timeout=600)
        done = time.time()
        got = p.count_versions("burst")
        on_disk = sum(len(fs) for _, _, fs in os.walk(p.root / "burst"))
        note("burst", tier, f"writer={writer}: {got}/{on_disk} files have a version "
             f"({n} created in {t1 - t0:.2f} s; settled {done - t1:.1f} s later; "
             f"overflows {st['counts']['overflows']})", "none lost")
    finally:
        p.cleanup()


# -- 6. short processes ---------------------------------------------------------


def bench_proc(base: Path, tier: str, count: int, duration: float) -> None:
    """End to end: `count` runs of `sh job.sh I` (a `sleep DURATION`), one after another."""
    p = Project(base, tier, "proc")
    try:
        p.init()
        (p.root / "job.sh").write_text(f"sleep {duration:g}\n")
        p.start()
        p.wait_settled()
        lives = []
        for i in range(count):
            t = time.perf_counter()
            subprocess.run(["sh", "job.sh", str(i)], cwd=p.root, check=True)
            lives.append(time.perf_counter() - t)
        p.wait_settled(timeout=300)
        p.stop()
        with p.db() as c:
            cmds = [json.loads(r[0]) for r in c.execute("SELECT command FROM runs")]
        seen = {cmd[-1] for cmd in cmds if len(cmd) >= 2 and cmd[-2] == "job.sh"}
        hit = len(seen & {str(i) for i in range(count)})
        note("proc", tier, f"agent recorded {hit}/{count} = {hit / count:.0%} runs of "
             f"`sh job.sh` (sleep {duration:g}; lifetime median "
             f"{statistics.median(lives) * 1000:.0f} ms)",
             "all" if tier == "full" else ">= 95%")
    finally:
        p.cleanup()


def bench_proc_sources(count: int, duration: float, hz: float) -> None:
    """The source-level figure from benchmarks/bench_proc.py, reused as is."""
    out = subprocess.run([sys.executable, str(HERE / "bench_proc.py"), "--count", str(count),
                          "--duration", str(duration), "--hz", str(hz), "--idle", "0"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"(netlink|poll):\s+(.*)", line)
        if m:
            note("proc-src", "full" if m.group(1) == "netlink" else "unpriv",
                 f"bench_proc.py {m.group(1)} source saw {m.group(2)} of {duration * 1000:.0f} ms "
                 f"`sleep` processes" + (f" at {hz:g} Hz" if m.group(1) == "poll" else ""),
                 "all" if m.group(1) == "netlink" else ">= 95%")


# -- main -----------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", metavar="BENCH",
                    help="all (default), idle, bigfile, small, rescan, burst, proc")
    ap.add_argument("--tiers", default="full,unpriv", help="comma list of: full, unpriv")
    ap.add_argument("--base", default=None, help="folder for temp projects (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat each benchmark N times")
    ap.add_argument("--idle-files", type=int, default=10_000)
    ap.add_argument("--idle-folders", type=int, default=5_000)
    ap.add_argument("--idle-seconds", type=float, default=15.0)
    ap.add_argument("--big-mib", type=int, default=512)
    ap.add_argument("--small-files", type=int, default=20_000)
    ap.add_argument("--small-size", type=int, default=1024)
    ap.add_argument("--rescan-files", type=int, default=30_000)
    ap.add_argument("--rescan-warm", type=int, default=1, help="warm restarts per project")
    ap.add_argument("--burst-files", type=int, default=20_000)
    ap.add_argument("--burst-writer", default="both", choices=["run", "other", "both"],
                    help="who creates the files: a run (a script in the project) or a "
                    "process that is no run (this benchmark itself)")
    ap.add_argument("--proc-count", type=int, default=100)
    ap.add_argument("--proc-duration", type=float, default=0.1)
    args = ap.parse_args()
    which = set(args.which or ["all"])
    known = {"all", "idle", "bigfile", "small", "rescan", "burst", "proc"}
    if which - known:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(which - known))}")
    if "all" in which:
        which = {"idle", "bigfile", "small", "rescan", "burst", "proc"}
    tiers = [t for t in args.tiers.split(",") if t]
    for t in tiers:
        if t not in TIERS:
            ap.error(f"unknown tier {t!r}")
    if "full" in tiers and os.geteuid() != 0:
        ap.error("the full tier (netlink+fanotify) needs root; pass --tiers unpriv")
    base = Path(tempfile.mkdtemp(prefix="onlooker-bench-", dir=args.base))
    print(f"nproc {os.cpu_count()}, kernel {os.uname().release}, python "
          f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}, temp {base}", flush=True)
    writers = ["run", "other"] if args.burst_writer == "both" else [args.burst_writer]
    try:
        for _ in range(args.repeat):
            for tier in tiers:
                if "idle" in which:
                    bench_idle(base, tier, args.idle_files, args.idle_folders, args.idle_seconds)
                if "bigfile" in which:
                    bench_bigfile(base, tier, args.big_mib)
                if "small" in which:
                    bench_small(base, tier, args.small_files, args.small_size)
                if "rescan" in which:
                    bench_rescan(base, tier, args.rescan_files, args.rescan_warm)
                if "burst" in which:
                    for wr in writers:
                        bench_burst(base, tier, args.burst_files, wr)
                if "proc" in which:
                    bench_proc(base, tier, args.proc_count, args.proc_duration)
            if "proc" in which:
                bench_proc_sources(args.proc_count, args.proc_duration, 25.0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    w = [max(len(r[i]) for r in RESULTS) for i in range(2)] if RESULTS else [0, 0]
    print(f"{'benchmark':<{w[0]}}  {'tier':<{w[1]}}  figure  [target]")
    for bench, tier, fig, target in RESULTS:
        print(f"{bench:<{w[0]}}  {tier:<{w[1]}}  {fig}" + (f"  [{target}]" if target else ""))


if __name__ == "__main__":
    main()
