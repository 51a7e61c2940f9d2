"""What a run pays for being watched: wall time with the agent over wall time without.

For each workload a temp project is made once; then pairs of (unwatched, watched) runs
are timed, alternating which comes first, and the median of watched / unwatched over
the pairs is the figure. Before each watched run the agent is started (`onlooker
start`, not timed), so the first run after a start, with the start-up scan and the
hashing of what it finds, is in every pair; it is stopped after the run (not timed).

    python benchmarks/bench_overhead.py                      # 6 pairs, quiet and with a hog
    python benchmarks/bench_overhead.py --quick              # 2 pairs, smaller workloads
    python benchmarks/bench_overhead.py --workloads mixed --pairs 8 --conditions hog
    python benchmarks/bench_overhead.py --tiers full,unpriv --json out.json
    python benchmarks/bench_overhead.py --gil-check          # why the bulk work is a process
    python benchmarks/bench_overhead.py --per-file --tiers full,unpriv --files 20000
    python benchmarks/bench_overhead.py --per-file --profile /tmp/prof   # and py-spy profiles

Workloads: `mixed` (a CPU loop, a 256 MB read, 3,000 small files written), `cpu` (a
CPU-bound loop), `sklearn` (a random forest trained on a CSV in the project, the model
and metrics written). Conditions: `quiet`, and `hog` (one busy-looping process per
`--hogs` beside the runs, started before the first run of the condition). Tiers: `full`
is netlink+fanotify (needs root), `unpriv` is poll+inotify.

Targets (issue 13): median at most 1.02 quiet, at most 1.05 with the hog.

Beside each ratio: where the run's own time went, watched minus bare (each workload
script ends by writing its rusage and schedstat: user and system CPU, time waiting for
a core, the rest), and the agent's CPU during the watched run (its main thread, its
other threads, its bulk process). `--settled` (a diagnostic) lets the agent go idle
after its start before the watched run, which takes the start-up out of the figure.

`--per-file`: a run writes `--files` files of 1 KiB into 20 folders while the agent
watches (after one small run, so that the once-per-interpreter package list is
not in it; `--cold` keeps it); prints the agent's CPU (its process and its bulk
process, all threads) per file, the bare stat+read+BLAKE3 loop over the same files
(same run) and the ratio, and how long after the writer finished the catalog had every
version. Target: at most 120 us per file, both tiers. `--profile DIR` also samples
both processes with py-spy (`pip install py-spy`, root) during the write and prints
the top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ONLOOKER = [sys.executable, "-m", "onlooker.cli"]
TIER_CONFIG = {"full": "", "unpriv": '[capture]\nprocess = "poll"\nfiles = "inotify"\n'}
TARGETS = {"quiet": 1.02, "hog": 1.05}

MIXED = """
    import hashlib, os, sys
    loops, files = int(sys.argv[1]), int(sys.argv[2])
    x = 0
    for i in range(loops):  # the CPU part
        x = (x * 31 + i) % 1000003
    h = hashlib.sha1()
    with open("data/input.bin", "rb") as f:  # the read
        while chunk := f.read(1 << 20):
            h.update(chunk[:64])
    os.makedirs("out", exist_ok=True)
    for i in range(files):  # the small files, the same content every run
        with open(f"out/f{i:05d}.txt", "w") as f:
            f.write(f"row {i} {x}\\n")
    print(h.hexdigest()[:8], x)
"""

CPU = """
    import sys
    x = 0
    for i in range(int(sys.argv[1])):
        x = (x * 31 + i) % 1000003
    print(x)
"""

SKLEARN = """
    import json, pickle, sys
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split
    trees = int(sys.argv[1])
    data = np.loadtxt("data/train.csv", delimiter=",", skiprows=1)
    X, y = data[:, :-1], data[:, -1].astype(int)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    clf = RandomForestClassifier(n_estimators=trees, n_jobs=1, random_state=0).fit(Xtr, ytr)
    acc = float(clf.score(Xte, yte))
    with open("model.pkl", "wb") as f:
        pickle.dump(clf, f)
    with open("metrics.json", "w") as f:
        json.dump({"accuracy": acc, "trees": trees}, f)
    print(acc)
"""


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("onlooker")
    return [str(exe)] if exe.exists() else ONLOOKER


def cli(root: Path, *args: str) -> None:
    subprocess.run([*_cli(), "-C", str(root), *args], check=True, capture_output=True,
                   text=True, cwd="/")

# Appended to each workload: the run says where its own time went, read by the kernel's
# accounting of the process itself (rusage: user and system CPU, all threads; schedstat:
# how long its main thread was runnable but waiting for a core; involuntary context
# switches: how often it was preempted). Watched minus bare, per term, is where the
# overhead lands: system time is the kernel's event work on the run's own path, waiting
# is cores taken by someone else, user time the same work running slower (caches,
# memory bandwidth), the rest the run blocked (IO).
_FOOTER = """
import resource as _rs
_u = _rs.getrusage(_rs.RUSAGE_SELF)
with open("/proc/self/schedstat") as _f:
    _wait = int(_f.read().split()[1]) / 1e9
sys.stderr.write(f"SCHED {_u.ru_utime} {_u.ru_stime} {_wait} {_u.ru_nivcsw}\\n")
"""


class Workload:
    def __init__(self, name: str, quick: bool) -> None:
        self.name = name
        if name == "mixed":
            self.script, self.args = MIXED, [str(3_000_000 if quick else 10_000_000),
                                             str(1000 if quick else 3000)]
            self.read_mib = 64 if quick else 256
        elif name == "cpu":
            self.script, self.args = CPU, [str(6_000_000 if quick else 20_000_000)]
        elif name == "sklearn":
            self.script, self.args = SKLEARN, ["20" if quick else "60"]
            self.rows = 5000 if quick else 20000
        else:
            raise SystemExit(f"unknown workload {name!r}")

    def make(self, root: Path) -> None:
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / f"run_{self.name}.py").write_text(textwrap.dedent(self.script) + _FOOTER)
        if self.name == "mixed":
            with open(root / "data" / "input.bin", "wb") as f:
                block = os.urandom(1 << 20)
                for _ in range(self.read_mib):
                    f.write(block)
        elif self.name == "sklearn":
            import random

            rnd = random.Random(0)
            lines = [",".join(f"f{i}" for i in range(20)) + ",label"]
            for _ in range(self.rows):
                xs = [rnd.gauss(0, 1) for _ in range(20)]
                label = int(sum(xs[:5]) + rnd.gauss(0, 1) > 0)
                lines.append(",".join(f"{v:.5f}" for v in xs) + f",{label}")
            (root / "data" / "train.csv").write_text("\n".join(lines) + "\n")

    def run(self, root: Path) -> float:
        return self.run_stats(root)[0]

    def run_stats(self, root: Path) -> tuple[float, dict[str, float]]:
        """Wall time, and where the run's own time went (the script's last stderr line,
        written by _FOOTER): CPU in user and kernel mode, time runnable but waiting
        for a core, preemptions."""
        t = time.monotonic()
        done = subprocess.run([sys.executable, f"run_{self.name}.py", *self.args], cwd=root,
                              check=True, capture_output=True, text=True)
        wall = time.monotonic() - t
        line = done.stderr.strip().rsplit("\n", 1)[-1].split()
        if not line or line[0] != "SCHED":
            return wall, {}
        user, sys_, wait, preempt = (float(x) for x in line[1:5])
        return wall, {"user": user, "sys": sys_, "wait": wait, "preempt": preempt,
                      "other": wall - user - sys_ - wait}


def _agent_split(root: Path) -> dict[str, float]:
    """CPU seconds so far of the agent's main thread (the event path), its other
    threads (the kernel readers, the scan, telemetry) and its bulk process (idle
    priority)."""
    try:
        st = json.loads((root / ".onlooker" / "agent.json").read_text())
    except (OSError, ValueError):
        return {}
    pid = st.get("pid")
    agent = _task_cpu(pid)
    main = agent.pop(pid, 0.0) if pid else 0.0
    return {"main": main, "threads": sum(agent.values()),
            "bulk": sum(_task_cpu((st.get("bulk") or {}).get("pid")).values())}


def _settle(root: Path, quiet_s: float = 0.5, limit_s: float = 30.0) -> None:
    """Wait until the agent has used no CPU for `quiet_s` (its backlog done)."""
    last, since, end = sum(_agent_split(root).values()), time.monotonic(), time.monotonic()
    while time.monotonic() - end < limit_s:
        time.sleep(0.1)
        now = sum(_agent_split(root).values())
        if now - last > 0.005:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def _agent_cpu(root: Path) -> float:
    """CPU seconds of the agent and its bulk process so far (read before stop)."""
    try:
        st = json.loads((root / ".onlooker" / "agent.json").read_text())
    except (OSError, ValueError):
        return 0.0
    total = 0.0
    for pid in (st.get("pid"), (st.get("bulk") or {}).get("pid")):
        if not pid:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


_TERMS = ("user", "sys", "wait", "other", "preempt")


def _terms(delta: dict[str, float]) -> str:
    return ", ".join(f"{k} {delta[k]:+.0f}" if k == "preempt" else f"{k} {delta[k]:+.3f} s"
                     for k in _TERMS if k in delta)


def measure(base: Path, work: Workload, tier: str, pairs: int, condition: str,
            hogs: int, settled: bool = False) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"overhead-{work.name}-{tier}-", dir=base))
    hog_procs: list[subprocess.Popen] = []
    try:
        work.make(root)
        cli(root, "init")
        if TIER_CONFIG[tier]:
            (root / ".onlooker" / "config.toml").write_text(TIER_CONFIG[tier])
        work.run(root)  # warm the page cache and the interpreter's files: not counted
        if condition == "hog":
            hog_procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                         for _ in range(hogs)]
            time.sleep(0.5)
        rows = []
        for i in range(pairs):
            times: dict[str, float] = {}
            stats: dict[str, dict[str, float]] = {}
            order = ("bare", "watched") if i % 2 == 0 else ("watched", "bare")
            agent_cpu = 0.0
            for which in order:
                if which == "watched":
                    cli(root, "start")
                    if settled:  # its start-up scan and hashing done before the run
                        _settle(root)
                    before = _agent_split(root)
                    times[which], stats[which] = work.run_stats(root)
                    agent_cpu = _agent_cpu(root)
                    after = _agent_split(root)
                    cli(root, "stop")
                else:
                    times[which], stats[which] = work.run_stats(root)
            ratio = times["watched"] / times["bare"]
            delta = {k: stats["watched"][k] - stats["bare"][k] for k in stats["bare"]
                     if k in stats["watched"]}
            during = {k: after[k] - before.get(k, 0.0) for k in after}
            rows.append({"bare": times["bare"], "watched": times["watched"], "ratio": ratio,
                         "first": order[0], "agent_cpu": agent_cpu, "run": stats,
                         "delta": delta, "agent_at_start": before, "agent_during": during})
            print(f"    pair {i + 1}: bare {times['bare']:.2f} s, watched "
                  f"{times['watched']:.2f} s, ratio {ratio:.3f} (agent CPU to stop "
                  f"{agent_cpu:.2f} s; during the run: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in during.items())
                  + f"); the run watched - bare: {_terms(delta)}", flush=True)
        ratios = [r["ratio"] for r in rows]
        return {"workload": work.name, "tier": tier, "condition": condition,
                "pairs": pairs, "median": statistics.median(ratios),
                "min": min(ratios), "max": max(ratios),
                "bare_median_s": statistics.median(r["bare"] for r in rows),
                "delta_median": {k: statistics.median(r["delta"][k] for r in rows)
                                 for k in _TERMS if all(k in r["delta"] for r in rows)},
                "agent_during_median": {
                    k: statistics.median(r["agent_during"][k] for r in rows)
                    for k in ("main", "threads", "bulk")
                    if all(k in r["agent_during"] for r in rows)},
                "target": TARGETS[condition], "load": os.getloadavg()[0], "rows": rows}

    finally:
        for p in hog_procs:
            p.kill()
            p.wait()
        subprocess.run([*_cli(), "-C", str(root), "stop"], capture_output=True, cwd="/")
        shutil.rmtree(root, ignore_errors=True)


def gil_check(seconds: float = 5.0) -> None:
    """Why the bulk work is a process: a lowered thread holding the GIL stalls the others.

    The main thread sleeps 5 ms in a loop (as the event loop waits for events) beside one
    thread doing Python work at normal priority, nice 19 or SCHED_IDLE, and three CPU
    hogs; prints how much later than asked the main thread woke (the GIL wait)."""
    import threading

    for mode in ("normal", "nice 19", "SCHED_IDLE"):
        stop = threading.Event()

        def worker(mode: str = mode, stop: threading.Event = stop) -> None:
            if mode == "SCHED_IDLE":
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            elif mode == "nice 19":
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            x = 0
            while not stop.is_set():
                for i in range(1000):
                    x += i
                os.stat("/")

        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
        try:
            time.sleep(0.5)
            th = threading.Thread(target=worker)
            th.start()
            late: list[float] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.monotonic()
                time.sleep(0.005)
                late.append(time.monotonic() - t - 0.005)
            stop.set()
            th.join()
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        late.sort()
        print(f"  other thread at {mode:10}: woke late by p50 {1e3 * late[len(late) // 2]:.1f} ms,"
              f" p99 {1e3 * late[int(len(late) * 0.99)]:.1f} ms, max {1e3 * late[-1]:.1f} ms"
              f" ({len(late)} sleeps)", flush=True)


def _spy_top(raw: Path, top: int) -> list[str]:
    """Self and inclusive shares by function from a py-spy raw (collapsed) profile."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        # with --threads the first frame names the thread; the next is its entry point
        thread = frames[1].split(" (")[0] if len(frames) > 1 else frames[0]
        threads[thread] = threads.get(thread, 0) + n
        funcs = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                 + ")" if " (" in f else f for f in frames[1:]]
        if funcs:
            self_n[funcs[-1]] = self_n.get(funcs[-1], 0) + n
        for f in set(funcs):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return ["  (no samples)"]
    out = [f"  {total} samples; by thread entry: " + ", ".join(
        f"{k} {100 * v / total:.0f}%" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
        if v / total >= 0.02)]
    out.append("  self:")
    out += [f"    {100 * v / total:5.1f}%  {k}" for k, v in
            sorted(self_n.items(), key=lambda kv: -kv[1])[:top]]
    out.append("  inclusive:")
    out += [f"    {100 * v / total:5.1f}%  {k}" for k, v in
            sorted(incl.items(), key=lambda kv: -kv[1])[:top]]
    return out


def _task_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds (utime + stime) of each thread of `pid`."""
    out: dict[int, float] = {}
    if pid is None:
        return out
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _thread_names(raw: Path) -> dict[int, str]:
    """tid -> thread name, from a py-spy raw profile's `thread (TID): NAME` frames."""
    names: dict[int, str] = {}
    if raw.exists():
        for line in raw.read_text(errors="replace").splitlines():
            head = line.split(";", 1)[0]
            if head.startswith("thread (") and "): " in head:
                tid, name = head[len("thread ("):].split("): ", 1)
                if tid.isdigit():
                    names[int(tid)] = name.rsplit(" ", 1)[0] if ";" not in line else name
    return names


def per_file(base: Path, tier: str, files: int, profile: Path | None, top: int, *,
             warm: bool = True) -> dict:
    """Agent CPU per small file written by a run, with the bare loop in the same run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_agent as ba

    p = ba.Project(base, tier, "perfile")
    spies: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        p.init()
        p.start()
        p.wait_settled()
        if warm:
            # A first run of an interpreter costs the agent its package list once (about
            # 0.1 s for this venv, kept across restarts in .onlooker/tmp/): not a cost per
            # file, so a run before the measured one pays it (--cold keeps it in).
            # (0.2 s: the poll tier is promised processes of 100 ms and more)
            ba.run_script(p, "warm.py", "import time\ntime.sleep(0.2)\nprint('{}')\n")
            p.wait_settled()
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            spy = Path(sys.executable).with_name("py-spy")
            for name, pid in (("agent", p.pid), ("bulk", p.bulk_pid())):
                if pid is None:
                    continue
                out = profile / f"{tier}-{name}.txt"
                spies.append((name, subprocess.Popen(
                    [str(spy), "record", "-r", "200", "-f", "raw", "--threads", "--nonblocking",
                     "-p", str(pid), "-o", str(out)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL), out))
            time.sleep(1.5)  # py-spy attaches
        pids = {"agent": p.pid, "bulk": p.bulk_pid()}
        tasks0 = {name: _task_cpu(pid) for name, pid in pids.items()}
        cpu0 = p.cpu_seconds()
        w = ba.run_script(p, "write_small.py", ba.WRITE_SMALL, str(files), "1024", "20")
        done = ba.wait_for(lambda: p.count_versions("out") >= files and time.time(), 600,
                           f"{files} versions", every=0.05)
        cpu = p.cpu_seconds() - cpu0
        tasks = {name: {tid: c - tasks0[name].get(tid, 0.0) for tid, c in
                        _task_cpu(pid).items()} for name, pid in pids.items()}
        rss = {}
        for name, pid in (("agent", p.pid), ("bulk", p.bulk_pid())):
            try:
                with open(f"/proc/{pid}/status") as f:
                    rss[name] = next(int(ln.split()[1]) // 1024 for ln in f
                                     if ln.startswith("VmHWM:"))
            except (OSError, StopIteration, TypeError):
                pass
        for _name, proc, _out in spies:
            proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for _name, proc, _out in spies:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        p.stop()
        paths = sorted(str(q) for q in (p.root / "out").rglob("*.bin"))
        bares = [ba.bare_small(paths) for _ in range(3)]
        bare = statistics.median(bares)
        r = {"tier": tier, "files": files, "agent_cpu_s": cpu, "us_per_file": 1e6 * cpu / files,
             "bare_s": bare, "bare_us_per_file": 1e6 * bare / files, "ratio": bare / cpu,
             "writer_s": w["closed"] - w["t0"], "caught_up_s": done - w["closed"],
             "peak_rss_mib": rss, "load": os.getloadavg()[0], "warm": warm,
             "process_us_per_file": {name: 1e6 * sum(t.values()) / files
                                     for name, t in tasks.items()}}
        print(f"  per-file {tier}: agent CPU {cpu:.2f} s = {r['us_per_file']:.0f} us/file "
              f"(target <= 120); bare loop {r['bare_us_per_file']:.0f} us/file, bare / agent "
              f"{r['ratio']:.2f}; writer {r['writer_s']:.2f} s, catalog caught up "
              f"{r['caught_up_s']:.2f} s after it; peak RSS {rss} MiB; load {r['load']:.1f}",
              flush=True)
        print("  by process: " + ", ".join(f"{k} {v:.0f} us/file" for k, v in
                                          r["process_us_per_file"].items()), flush=True)
        for name, t in tasks.items():
            names = _thread_names(profile / f"{tier}-{name}.txt") if profile else {}
            busy = sorted(((c, names.get(tid, str(tid))) for tid, c in t.items() if c > 0),
                          reverse=True)
            print(f"  {name} threads: " + ", ".join(f"{n} {1e6 * c / files:.0f}"
                                                   for c, n in busy) + " us/file", flush=True)
        for name, _proc, out in spies:
            if out.exists():
                print(f"  profile {tier} {name} ({out}):")
                print("\n".join(_spy_top(out, top)), flush=True)
        return r
    finally:
        for _name, proc, _out in spies:
            if proc.poll() is None:
                proc.kill()
        p.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="mixed,cpu,sklearn")
    ap.add_argument("--conditions", default="quiet,hog")
    ap.add_argument("--tiers", default="full" if os.geteuid() == 0 else "unpriv")
    ap.add_argument("--pairs", type=int, default=None, help="default 6 (2 with --quick)")
    ap.add_argument("--hogs", type=int, default=1, help="busy processes beside the runs")
    ap.add_argument("--quick", action="store_true", help="2 pairs, smaller workloads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--settled", action="store_true",
                    help="a diagnostic, not the issue's figure: each watched run waits until"
                         " the agent just started has gone idle (its start-up scan and"
                         " hashing done), as on a machine where it runs all day")
    ap.add_argument("--base", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--gil-check", action="store_true",
                    help="only show why the bulk work is a process (GIL and priority)")
    ap.add_argument("--per-file", action="store_true",
                    help="only the per-file agent CPU (small files written by a run)")
    ap.add_argument("--files", type=int, default=20_000, help="files for --per-file")
    ap.add_argument("--repeat", type=int, default=1, help="--per-file repetitions per tier")
    ap.add_argument("--profile", type=Path, help="--per-file: py-spy profiles into this folder")
    ap.add_argument("--top", type=int, default=25, help="functions shown per profile")
    ap.add_argument("--cold", action="store_true",
                    help="--per-file: no run before the measured one (its first-run costs in)")
    args = ap.parse_args(argv)
    if args.per_file:
        out = []
        for _ in range(args.repeat):
            for tier in args.tiers.split(","):
                out.append(per_file(args.base, tier, args.files, args.profile, args.top,
                                    warm=not args.cold))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return 0
    if args.gil_check:
        gil_check()
        return 0
    pairs = args.pairs or (2 if args.quick else 6)
    print(f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, pairs {pairs}"
          + (", quick" if args.quick else ""), flush=True)
    results = []
    for tier in args.tiers.split(","):
        if tier == "full" and os.geteuid() != 0:
            print("  full tier skipped: needs root")
            continue
        for name in args.workloads.split(","):
            work = Workload(name, args.quick)
            for cond in args.conditions.split(","):
                print(f"  {name} / {tier} / {cond}:", flush=True)
                r = measure(args.base, work, tier, pairs, cond, args.hogs, args.settled)
                results.append(r)
                ok = "met" if r["median"] <= r["target"] else "NOT met"
                print(f"  => {name} {tier} {cond}: median {r['median']:.3f} "
                      f"({r['min']:.3f}-{r['max']:.3f}) over {pairs} pairs, bare "
                      f"{r['bare_median_s']:.2f} s; target <= {r['target']}: {ok}; "
                      f"load {r['load']:.1f}", flush=True)
                if r["delta_median"]:
                    print(f"     the run's own time, watched - bare (medians): "
                          f"{_terms(r['delta_median'])}", flush=True)
                if r["agent_during_median"]:
                    print("     the agent's CPU during the watched run (medians): "
                          + ", ".join(f"{k} {v:.3f} s"
                                      for k, v in r["agent_during_median"].items()),
                          flush=True)
    print("\n| workload | tier | condition | median watched/bare | range | bare s | target |"
          " the run, watched - bare: user / sys / waiting for a core / other, s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        d = r["delta_median"]
        terms = " / ".join(f"{d[k]:+.3f}" for k in _TERMS[:4] if k in d)
        print(f"| {r['workload']} | {r['tier']} | {r['condition']} | {r['median']:.3f} | "
              f"{r['min']:.3f}-{r['max']:.3f} | {r['bare_median_s']:.2f} | <= {r['target']} |"
              f" {terms} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
