"""onlooker against its peers, side by side on this machine, in one run.

Three comparisons, each a ratio against a baseline measured in the same run:

1. **Overhead on the run**: wall time of a workload watched / the same workload bare.
   Workloads: `cpu` (a CPU-bound loop), `io` (small files written, one big file read),
   `sklearn` (a random forest trained on a CSV, model and metrics written). Arms:
   onlooker in both tiers (`full`: the default as root, netlink + fanotify; `unpriv`:
   poll + inotify, forced by `.onlooker/config.toml`), each started with `onlooker start`
   before the watched run and stopped with `onlooker stop` after it (neither timed; the
   start-up rescan overlaps the run, so it is counted); ReproZip's `reprozip trace` (its
   defaults: ptrace, then the package identification it does at the end); MLflow's
   system-metrics monitor (`mlflow.start_run(log_system_metrics=True)` around the
   workload in a wrapper, a local file store, MLflow's default 10 s sampling). Each arm
   has its own fresh folder (the data files are hard links to one copy, so every arm
   reads the same cached bytes); every pair is (bare, watched) in that folder, the order
   alternating from pair to pair; the figure is the median of the pairs' ratios.
2. **Versioning** a big file and many small files: onlooker (a run writes them while the
   agent watches; timed from the writer's last close until the catalog has every
   version and the agent's backlog, as `onlooker status --json` reports it, is empty;
   and the agent's CPU time, all its processes, from before the write to then) against
   `dvc add` of the same files (wall and CPU of the command), and against a bare read
   loop of the same bytes (the physical limit: nothing can version bytes faster than it
   reads them). onlooker runs with `[store] object_max_bytes` raised above the big
   file, so it keeps a copy as `dvc add` does (its default hashes files over 256 MiB
   without copying them; that row is measured too, in the full tier).
3. **Telemetry cost per sample**, CPU time (`time.process_time`) per sample of a live
   tree of 8 processes: onlooker's sampler (`TelemetrySampler.tick`, the function the
   agent calls), MLflow's `SystemMetricsMonitor` (its per-sample collect and aggregate;
   it reads the whole machine, not the run's processes) and a plain psutil sampler
   (`cpu_percent`, `memory_info`, `io_counters` for each process).

    python benchmarks/peers.py --quick                  # smaller, 3 pairs: 6 min on 2 busy cores
    python benchmarks/peers.py --write-docs             # full sizes, 7 pairs: 30-40 min
    python benchmarks/peers.py --only telemetry --reprozip /path/to/venv/bin/reprozip

Peers come from the registry: `pip install -e '.[peers]'` (reprozip, mlflow-skinny, dvc,
scikit-learn). A peer that is missing or cannot work here (ReproZip
needs ptrace) is reported as such in the table, never guessed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import queue
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
UNPRIV = '[capture]\nprocess = "poll"\nfiles = "inotify"\n'
TIER_NAMES = {"full": ("netlink", "fanotify"), "unpriv": ("poll", "inotify")}

SIZES = {  # quick, full
    "cpu_loops": (10_000_000, 40_000_000),
    "io_files": (2_000, 20_000),
    "io_read_mib": (128, 1024),
    "sk_rows": (5_000, 20_000),
    "sk_trees": (20, 60),
    "pairs": (3, 7),
    "ver_big_mib": (192, 1024),
    "ver_small": (2_000, 20_000),
    "tel_samples": (200, 1000),
    "tel_rounds": (3, 7),
}

CPU = """
    import sys
    x = 0
    for i in range(int(sys.argv[1])):
        x = (x * 31 + i) % 1000003
    print(x)
"""

IO = """
    import os, sys
    files = int(sys.argv[1])
    for d in range(-(-files // 1000)):
        os.makedirs(f"out/d{d:02d}", exist_ok=True)
    for i in range(files):  # the same content every run
        with open(f"out/d{i // 1000:02d}/f{i:05d}.txt", "w") as f:
            f.write(f"row {i}\\n" * 20)
    buf = bytearray(1 << 20)
    total = 0
    with open("data/big.bin", "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    print(total)
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

# What a user adds to a script to get MLflow's system metrics; it reports its own fixed
# costs (import, start_run, end of run) so the table can say where the time goes.
MLFLOW_WRAP = """
    import json, os, runpy, sys, time
    t0 = time.monotonic()
    import mlflow
    mlflow.set_tracking_uri(os.environ["PEERS_MLFLOW_URI"])
    t1 = time.monotonic()
    run = mlflow.start_run(log_system_metrics=True)
    t2 = time.monotonic()
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        t3 = time.monotonic()
        mlflow.end_run()
        t4 = time.monotonic()
        with open(os.environ["PEERS_TIMING"], "w") as f:
            json.dump({"import": t1 - t0, "start": t2 - t1, "work": t3 - t2,
                       "end": t4 - t3}, f)
"""

WRITE_BIG = """
    import json, os, sys, time
    mib = int(sys.argv[1])
    os.makedirs("data", exist_ok=True)
    t0 = time.time()
    with open("data/big.bin", "wb") as f:
        for _ in range(mib // 16):
            f.write(os.urandom(16 << 20))
    print(json.dumps({"t0": t0, "closed": time.time()}))
"""

WRITE_SMALL = """
    import json, os, sys, time
    n = int(sys.argv[1])
    t0 = time.time()
    for d in range(-(-n // 1000)):
        os.makedirs(f"data/small/d{d:02d}", exist_ok=True)
    rnd = os.urandom(1024)
    for i in range(n):
        with open(f"data/small/d{i // 1000:02d}/f{i:05d}.bin", "wb") as f:
            f.write(i.to_bytes(8, "little") + rnd[8:])
    print(json.dumps({"t0": t0, "closed": time.time()}))
"""

TREE = """
    import multiprocessing as mp, time
    if __name__ == "__main__":
        ps = [mp.get_context("fork").Process(target=time.sleep, args=(900,)) for _ in range(7)]
        [p.start() for p in ps]
        time.sleep(900)
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sibling(name: str) -> str | None:
    """A tool installed beside this interpreter (the venv), else on PATH."""
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else shutil.which(name)


def onlooker_cli() -> list[str]:
    exe = sibling("onlooker")
    return [exe] if exe else [sys.executable, "-m", "onlooker.cli"]


def write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    # Every timed run starts with no dirty pages left by the one before (not timed):
    # otherwise a run pays for its predecessor's writeback, by chance of the order.
    os.sync()
    t = time.monotonic()
    out = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - t
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(argv[:3])} ... exited {out.returncode}: "
                           + " | ".join(tail))
    return took


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def fmt_ratio(vals: list[float]) -> str:
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"


def fmt_frac(x: float) -> str:
    """A ratio, with a third digit when it is small (0.004 is not 0.00)."""
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


# -- onlooker through its CLI -----------------------------------------------------------


class Onlooker:
    """A project watched by the real agent, driven as a user does (`init`, `start`, `stop`)."""

    def __init__(self, root: Path, tier: str, extra_config: str = "") -> None:
        self.root, self.tier = root, tier
        self.extra = extra_config
        self.running = False

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*onlooker_cli(), "-C", str(self.root), *args], check=check,
                              capture_output=True, text=True, cwd="/")

    def init(self) -> None:
        self.cli("init")
        config = (UNPRIV if self.tier == "unpriv" else "") + self.extra
        if config:
            (self.root / ".onlooker" / "config.toml").write_text(config)

    def start(self) -> None:
        self.cli("start")
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.cli("stop", check=False)
            self.running = False

    def status(self) -> dict[str, Any]:
        """What `onlooker status --json` reports of the agent (its library function)."""
        from onlooker.agent import lifecycle

        return lifecycle.status(self.root)

    def tiers(self) -> tuple[str, str]:
        t = wait_for(lambda: self.status().get("tiers"), 10, "the agent's tiers")
        return (t.get("process", {}).get("name", "?"), t.get("files", {}).get("name", "?"))

    def idle(self) -> bool:
        st = self.status()
        b = st.get("backlog") or {}
        return (st.get("state") == "watching" and not b.get("scanning")
                and not b.get("queue") and not b.get("hashing")
                and not b.get("pending_events")
                and (st.get("updated_at") or 0) > time.time() - 3)

    def wait_idle(self, timeout: float = 900) -> None:
        """Two idle readings of agent.json (rewritten about once a second) in a row."""
        wait_for(self.idle, timeout, "the agent to settle", every=0.1)
        seen = self.status()["updated_at"]
        wait_for(lambda: self.idle() and self.status()["updated_at"] > seen, timeout,
                 "the agent to settle", every=0.1)

    def cpu_seconds(self) -> float:
        """utime + stime of the agent and of its bulk (hashing) process, all threads."""
        st = self.status()
        total = 0.0
        for pid in (st.get("pid"), (st.get("bulk") or {}).get("pid")):
            if not pid:
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            except OSError:
                pass
        return total

    def versions(self, path: str, prefix: bool = False) -> int:
        db = self.root / ".onlooker" / "catalog.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=30)) as c:
            if prefix:
                return c.execute(
                    "SELECT count(DISTINCT a.id) FROM assets a JOIN versions v"
                    " ON v.asset_id = a.id WHERE a.path >= ? AND a.path < ?",
                    (path + "/", path + "0")).fetchone()[0]
            return c.execute("SELECT count(*) FROM versions v JOIN assets a"
                             " ON a.id = v.asset_id WHERE a.path = ?", (path,)).fetchone()[0]


# -- 1. overhead on the run ---------------------------------------------------------------


class Workload:
    def __init__(self, name: str, q: int) -> None:
        self.name = name
        if name == "cpu":
            self.body, self.args = CPU, [str(SIZES["cpu_loops"][q])]
            self.what = f"CPU loop, {SIZES['cpu_loops'][q]:,} iterations"
        elif name == "io":
            self.body, self.args = IO, [str(SIZES["io_files"][q])]
            self.mib = SIZES["io_read_mib"][q]
            self.what = (f"{SIZES['io_files'][q]:,} small files written, "
                         f"a {self.mib:,} MiB file read")
        elif name == "sklearn":
            self.body, self.args = SKLEARN, [str(SIZES["sk_trees"][q])]
            self.rows = SIZES["sk_rows"][q]
            self.what = (f"scikit-learn random forest, {SIZES['sk_trees'][q]} trees on "
                         f"{self.rows:,} x 20 CSV")
        else:
            raise SystemExit(f"unknown workload {name!r} (cpu, io, sklearn)")

    def make_data(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        if self.name == "io":
            with open(data / "big.bin", "wb") as f:
                for _ in range(self.mib // 16):
                    f.write(os.urandom(16 << 20))
        elif self.name == "sklearn":
            import random

            rnd = random.Random(0)
            lines = [",".join(f"f{i}" for i in range(20)) + ",label"]
            for _ in range(self.rows):
                xs = [rnd.gauss(0, 1) for _ in range(20)]
                label = int(sum(xs[:5]) + rnd.gauss(0, 1) > 0)
                lines.append(",".join(f"{v:.5f}" for v in xs) + f",{label}")
            (data / "train.csv").write_text("\n".join(lines) + "\n")

    def make_project(self, root: Path, data: Path) -> None:
        (root / "data").mkdir(parents=True)
        for f in data.iterdir():  # hard links: one copy of the bytes for every arm
            os.link(f, root / "data" / f.name)
        write(root / "run.py", self.body)

    def argv(self) -> list[str]:
        return [sys.executable, "run.py", *self.args]


class Arm:
    """One way of watching a run. `watched` returns the timed wall seconds."""

    name = ""
    label = ""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.extra: dict[str, list[float]] = {}

    def available(self, base: Path) -> str | None:
        """None when it can run here, else why not (one sentence)."""
        return None

    def prepare(self, root: Path, work: Workload) -> None:
        """Set the folder up and do one untimed watched run (first-time costs)."""
        self.watched(root, work)

    def watched(self, root: Path, work: Workload) -> float:
        raise NotImplementedError

    def close(self, root: Path) -> None:
        pass


class OnlookerArm(Arm):
    def __init__(self, tier: str, settle: bool = False) -> None:
        super().__init__()
        self.tier = tier
        self.settle = settle  # wait for the start-up work to end before the run
        self.name = f"onlooker-{tier}"
        self.label = ("onlooker, full tier (root: netlink + fanotify)" if tier == "full"
                      else "onlooker, unprivileged tier (poll + inotify)")
        self.projects: dict[Path, Onlooker] = {}

    def available(self, base: Path) -> str | None:
        if self.tier == "full" and os.geteuid() != 0:
            return "the full tier needs root (fanotify, netlink); run as root"
        return None

    def prepare(self, root: Path, work: Workload) -> None:
        p = self.projects[root] = Onlooker(root, self.tier)
        p.init()
        # The untimed first run: the agent's first scan hashes the data (an always-on
        # agent has done that long before); later starts only rescan by stat.
        p.start()
        got = p.tiers()
        if got != TIER_NAMES[self.tier]:
            note = f"asked for {'+'.join(TIER_NAMES[self.tier])}, got {'+'.join(got)}"
            if note not in self.notes:
                self.notes.append(note)
        p.wait_idle()
        timed(work.argv(), root)
        p.wait_idle()
        p.stop()

    def watched(self, root: Path, work: Workload) -> float:
        p = self.projects[root]
        p.start()
        try:
            if self.settle:
                p.wait_idle()
            return timed(work.argv(), root)
        finally:
            p.stop()

    def close(self, root: Path) -> None:
        p = self.projects.pop(root, None)
        if p is not None:
            p.stop()


class ReprozipArm(Arm):
    name = "reprozip"
    label = "ReproZip `reprozip trace`"

    def __init__(self, exe: str | None) -> None:
        super().__init__()
        self.exe = exe or sibling("reprozip")

    def available(self, base: Path) -> str | None:
        if not self.exe or not os.access(self.exe, os.X_OK):
            return "reprozip is not installed (pip install reprozip, or --reprozip PATH)"
        probe = base / "reprozip-probe"
        probe.mkdir(exist_ok=True)
        try:
            out = subprocess.run([self.exe, "trace", "--overwrite", "-d", str(probe / "t"),
                                  "true"], cwd=probe, capture_output=True, text=True,
                                 timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"`reprozip trace` cannot run here: {err}"
        if out.returncode != 0 or not (probe / "t" / "trace.sqlite3").exists():
            tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`reprozip trace` cannot trace here: {tail}"
        return None

    def watched(self, root: Path, work: Workload) -> float:
        trace = root.parent / f"{root.name}.rpz-trace"  # outside the project, as a user would
        return timed([self.exe, "trace", "--overwrite", "-d", str(trace), *work.argv()], root)


class MlflowArm(Arm):
    name = "mlflow"
    label = "MLflow system metrics (`log_system_metrics=True`)"

    def available(self, base: Path) -> str | None:
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            return "mlflow is not installed (pip install mlflow-skinny)"
        if importlib.util.find_spec("psutil") is None:
            return "psutil is missing: MLflow's system metrics need it"
        return None

    def watched(self, root: Path, work: Workload) -> float:
        wrap = root.parent / f"{root.name}.mlflow_wrap.py"
        if not wrap.exists():
            write(wrap, MLFLOW_WRAP)
        timing = root.parent / f"{root.name}.mlflow_timing.json"
        env = dict(os.environ)
        # A local file store (MLflow 3 asks for this opt-in; its default is a database).
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        env["PEERS_MLFLOW_URI"] = (root.parent / f"{root.name}.mlruns").as_uri()
        env["PEERS_TIMING"] = str(timing)
        took = timed([sys.executable, str(wrap), *work.argv()[1:]], root, env=env)
        t = json.loads(timing.read_text())
        self.extra.setdefault("fixed", []).append(t["import"] + t["start"] + t["end"])
        return took


def bench_overhead(base: Path, works: list[Workload], arms: list[Arm], pairs: int,
                   results: dict) -> None:
    out = results["overhead"] = {"pairs": pairs, "workloads": {}, "arms": {}}
    usable: list[Arm] = []
    for arm in arms:
        why = arm.available(base)
        out["arms"][arm.name] = {"label": arm.label, "unavailable": why, "notes": arm.notes}
        if why:
            log(f"  {arm.name}: not measured: {why}")
        else:
            usable.append(arm)
    for work in works:
        log(f"overhead: {work.name} ({work.what})")
        data = base / f"data-{work.name}"
        work.make_data(data)
        roots: dict[str, Path] = {}
        row: dict[str, Any] = {"what": work.what, "arms": {}}
        out["workloads"][work.name] = row
        try:
            live: list[Arm] = []
            for arm in usable:
                root = roots[arm.name] = base / f"{work.name}-{arm.name}"
                work.make_project(root, data)
                timed(work.argv(), root)  # warm the page cache and the interpreter's files
                arm.extra.clear()
                try:
                    arm.prepare(root, work)
                    arm.extra.clear()
                    live.append(arm)
                except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as err:
                    row["arms"][arm.name] = {"error": str(err)}
                    log(f"  {arm.name}: failed: {err}")
            pairs_of: dict[str, list[dict[str, float]]] = {a.name: [] for a in live}
            index = {a.name: j for j, a in enumerate(live)}
            for i in range(pairs):
                # Rotate which arm goes first in a round, and alternate within each arm
                # whether the bare run or the watched one comes first.
                order = live[i % len(live):] + live[:i % len(live)] if live else []
                for arm in order:
                    root = roots[arm.name]
                    bare_first = (i + index[arm.name]) % 2 == 0
                    t: dict[str, float] = {}
                    try:
                        for which in (("bare", "watched") if bare_first
                                      else ("watched", "bare")):
                            t[which] = (timed(work.argv(), root) if which == "bare"
                                        else arm.watched(root, work))
                    except (RuntimeError, subprocess.CalledProcessError) as err:
                        row["arms"][arm.name] = {"error": str(err)}
                        log(f"  {arm.name}: failed in pair {i + 1}: {err}")
                        live.remove(arm)
                        continue
                    pairs_of[arm.name].append(t)
                    log(f"  pair {i + 1} {arm.name}: bare {t['bare']:.2f} s, watched "
                        f"{t['watched']:.2f} s, ratio {t['watched'] / t['bare']:.3f} "
                        f"(load {os.getloadavg()[0]:.1f})")
            for arm in live:
                ps = pairs_of[arm.name]
                row["arms"][arm.name] = {
                    "ratios": [p["watched"] / p["bare"] for p in ps],
                    "bare": [p["bare"] for p in ps], "watched": [p["watched"] for p in ps],
                    **{k: v for k, v in arm.extra.items()}}
                arm.extra.clear()
        finally:
            for arm in usable:
                if arm.name in roots:
                    arm.close(roots[arm.name])
            for root in roots.values():
                shutil.rmtree(root, ignore_errors=True)
            for leftover in base.glob(f"{work.name}-*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
            shutil.rmtree(data, ignore_errors=True)


# -- 2. versioning ---------------------------------------------------------------------


def bare_read(paths: list[Path]) -> float:
    """The physical limit: open, read every byte, close; nothing else."""
    buf = bytearray(1 << 20)
    t = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - t


def files_of(root: Path, case: str) -> list[Path]:
    if case == "big":
        return [root / "data" / "big.bin"]
    return sorted((root / "data" / "small").rglob("*.bin"))


def run_writer(root: Path, case: str, size: int) -> dict[str, float]:
    script = write(root / "write.py", WRITE_BIG if case == "big" else WRITE_SMALL)
    out = subprocess.run([sys.executable, script.name, str(size)], cwd=root, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def version_onlooker(base: Path, case: str, size: int, tier: str, copy: bool) -> dict:
    root = base / f"ver-{case}-{tier}{'' if copy else '-default'}"
    root.mkdir()
    extra = f"[store]\nobject_max_bytes = {4 << 30}\n" if copy and case == "big" else ""
    p = Onlooker(root, tier, extra)
    try:
        p.init()
        p.start()
        got = p.tiers()
        p.wait_idle()
        cpu0 = p.cpu_seconds()
        w = run_writer(root, case, size)
        n = 1 if case == "big" else size
        target = "data/big.bin" if case == "big" else "data/small"

        t_cat = wait_for(lambda: p.versions(target, prefix=case != "big") >= n and time.time(),
                         900, f"{n} versions of {target}", every=0.05 if case == "big" else 0.1)
        cpu_cat = p.cpu_seconds() - cpu0
        # agent.json, which `status --json` reports, is rewritten about once a second, so
        # this one lags the catalog by up to that much.
        t_idle = wait_for(lambda: p.idle() and time.time(), 900, "an empty backlog", every=0.05)
        cpu = p.cpu_seconds() - cpu0
        # The same figure through the command a user runs: nothing left to do.
        st = json.loads(p.cli("status", "--json").stdout)
        backlog = st.get("backlog") or {}
        if backlog.get("queue") or backlog.get("hashing") or backlog.get("pending_events"):
            raise RuntimeError(f"status --json still shows a backlog: {backlog}")
        copied = None
        if case == "big":
            objs = root / ".onlooker" / "objects"
            biggest = max((f.stat().st_size for f in objs.rglob("*") if f.is_file()),
                          default=0)
            copied = biggest >= size << 20
        p.stop()
        raw = statistics.median(bare_read(files_of(root, case)) for _ in range(3))
        return {"after_write": t_cat - w["closed"], "idle_after_write": t_idle - w["closed"],
                "writer": w["closed"] - w["t0"], "cpu_to_catalog": cpu_cat, "cpu": cpu,
                "raw": raw, "tiers": "+".join(got), "copied": copied}
    finally:
        p.stop()
        shutil.rmtree(root, ignore_errors=True)


def version_dvc(base: Path, case: str, size: int, dvc: str) -> dict:
    root = base / f"ver-{case}-dvc"
    root.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    try:
        subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=root, check=True, env=env,
                       capture_output=True)
        run_writer(root, case, size)
        raw = statistics.median(bare_read(files_of(root, case)) for _ in range(3))
        target = "data/big.bin" if case == "big" else "data/small"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        out = subprocess.run([dvc, "add", "-q", target], cwd=root, env=env,
                             capture_output=True, text=True)
        wall = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0 or not (root / f"{target}.dvc").exists():
            raise RuntimeError(f"dvc add failed: {out.stderr.strip()[-300:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"wall": wall, "cpu": cpu, "raw": raw}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_versioning(base: Path, q: int, tiers: list[str], results: dict) -> None:
    out = results["versioning"] = {"cases": {}}
    dvc = sibling("dvc")
    for case, size in (("big", SIZES["ver_big_mib"][q]), ("small", SIZES["ver_small"][q])):
        what = (f"one {size:,} MiB file" if case == "big"
                else f"{size:,} files of 1 KiB in {-(-size // 1000)} folders")
        row: dict[str, Any] = {"what": what, "tools": {},
                               "bytes": size << 20 if case == "big" else size * 1024,
                               "files": 1 if case == "big" else size}
        out["cases"][case] = row
        log(f"versioning: {what}")
        variants = [(t, True) for t in tiers]
        if case == "big" and "full" in tiers and size << 20 > 256 << 20:
            variants.append(("full", False))  # the default copy limit: hashed only
        for tier, copy in variants:
            key = f"onlooker-{tier}" + ("" if copy else "-default")
            try:
                r = version_onlooker(base, case, size, tier, copy)
            except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as err:
                row["tools"][key] = {"error": str(err)}
                log(f"  {key}: failed: {err}")
                continue
            row["tools"][key] = r
            log(f"  {key} ({r['tiers']}): in the catalog {r['after_write']:.2f} s after the "
                f"write, empty backlog {r['idle_after_write']:.2f} s, agent CPU {r['cpu']:.2f} s, "
                f"raw read {r['raw']:.3f} s, copied {r['copied']}")
        if dvc is None:
            row["tools"]["dvc"] = {"error": "dvc is not installed (pip install dvc)"}
            continue
        try:
            r = version_dvc(base, case, size, dvc)
        except (RuntimeError, subprocess.CalledProcessError) as err:
            row["tools"]["dvc"] = {"error": str(err)}
            log(f"  dvc: failed: {err}")
            continue
        row["tools"]["dvc"] = r
        log(f"  dvc add: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, raw read {r['raw']:.3f} s")


# -- 3. telemetry per sample -------------------------------------------------------------


def bench_telemetry(base: Path, q: int, results: dict) -> None:
    import psutil

    from onlooker.agent import clock
    from onlooker.agent.workers.telemetry import TelemetrySampler

    n, rounds = SIZES["tel_samples"][q], SIZES["tel_rounds"][q]
    out = results["telemetry"] = {"samples": n, "rounds": rounds, "samplers": {}}
    script = write(base / "tree.py", TREE)
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        def tree() -> frozenset[int]:
            root = psutil.Process(proc.pid)
            return frozenset([proc.pid, *(c.pid for c in root.children(recursive=True))])
        def grown() -> frozenset[int] | None:
            got = tree()
            return got if len(got) >= 8 else None
        pids = wait_for(grown, 30, "8 processes")
        out["procs"] = len(pids)

        samplers: dict[str, Callable[[], Callable[[], None]]] = {}

        def onlooker() -> Callable[[], None]:
            qu: queue.Queue = queue.Queue()
            s = TelemetrySampler(qu, interval=1e-6, runs=lambda: {1: pids})
            now = [clock.now()]
            s.tick(now[0])  # prime: first sight of the processes

            def one() -> None:
                now[0] += 0.2  # every tick is due: one sample of the tree
                s.tick(now[0])
                while not qu.empty():
                    qu.get_nowait()
            return one
        samplers["onlooker"] = onlooker

        def plain() -> Callable[[], None]:
            procs = [psutil.Process(pid) for pid in sorted(pids)]
            for p in procs:
                p.cpu_percent(None)

            def one() -> None:
                for p in procs:
                    p.cpu_percent(None)
                    p.memory_info()
                    p.io_counters()
            return one
        samplers["psutil"] = plain

        def same() -> Callable[[], None]:
            procs = [psutil.Process(pid) for pid in sorted(pids)]

            def one() -> None:
                # The floor under onlooker's sampler: the same psutil calls, no bookkeeping.
                for p in procs:
                    with p.oneshot():
                        p.cpu_times()
                        p.memory_info()
                        p.num_threads()
                    p.io_counters()
                    p.num_fds()
                psutil.cpu_percent(None)
                psutil.virtual_memory()
                os.getloadavg()
            return one
        samplers["psutil-same"] = same

        mlflow_why = None
        try:
            import logging

            logging.getLogger("mlflow").setLevel(logging.ERROR)
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow").setLevel(logging.ERROR)  # its import resets it
        except ImportError:
            mlflow_why = "mlflow is not installed (pip install mlflow-skinny)"
        if mlflow_why is None:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # a local file store, as above
            monitor = SystemMetricsMonitor(run_id="peers-bench",
                                           tracking_uri=(base / "mlruns").as_uri())
            out["mlflow_monitors"] = [type(m).__name__ for m in monitor.monitors]

            def mlflow() -> Callable[[], None]:
                def one() -> None:
                    # One sample as its loop takes it with samples_before_logging=1, less
                    # the run-status read and the metrics write it also does each time.
                    monitor.collect_metrics()
                    monitor.aggregate_metrics()
                    for m in monitor.monitors:
                        m.clear_metrics()
                return one
            samplers["mlflow"] = mlflow

            from mlflow.tracking import MlflowClient

            uri = (base / "mlruns").as_uri()
            run_id = MlflowClient(uri).create_run("0").info.run_id

            def mlflow_loop() -> Callable[[], None]:
                def one() -> None:
                    # Its loop's step less the write: the sample and the run-status read
                    # (a new client and a get_run each time, as the loop does).
                    monitor.collect_metrics()
                    monitor.aggregate_metrics()
                    for m in monitor.monitors:
                        m.clear_metrics()
                    MlflowClient(uri).get_run(run_id)
                return one
            samplers["mlflow-loop"] = mlflow_loop
        else:
            out["samplers"]["mlflow"] = {"unavailable": mlflow_why}

        made = {name: make() for name, make in samplers.items()}
        per: dict[str, list[float]] = {name: [] for name in made}
        names = list(made)
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                one = made[name]
                # CPU time, not wall: the figure must not depend on who else shares the cores.
                t = time.process_time()
                for _ in range(n):
                    one()
                per[name].append((time.process_time() - t) / n * 1e6)
        for name, vals in per.items():
            out["samplers"][name] = {"us": vals}
            log(f"telemetry: {name}: {statistics.median(vals):.0f} us per sample "
                f"({min(vals):.0f}-{max(vals):.0f})")
    finally:
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        proc.kill()
        proc.wait()


# -- the table ---------------------------------------------------------------------------


def versions_of_peers(reprozip: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in ("mlflow", "mlflow-skinny", "dvc", "psutil", "scikit-learn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    exe = reprozip or sibling("reprozip")
    if exe and os.access(exe, os.X_OK):
        got = subprocess.run([exe, "--version"], capture_output=True, text=True)
        m = re.search(r"(\d+\.\d+(\.\d+)?)", got.stdout + got.stderr)
        if m:
            out["reprozip"] = m.group(1)
    return out


def machine() -> dict[str, Any]:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                            "agent", "store", "cli"], capture_output=True, text=True).stdout
    return {"nproc": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "mem_gib": round(mem / 2**30),
            "commit": commit + (" plus uncommitted work" if dirty.strip() else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "user": "root" if os.geteuid() == 0 else "an ordinary user"}


ARM_ORDER = ["onlooker-full", "onlooker-unpriv", "reprozip", "mlflow"]
OVERHEAD_HOW = " ".join("""
    cell (min-max), then the median extra seconds. Each arm has a fresh folder of its own
    (the data files hard links to one copy); each pair is a bare and a watched run in that
    folder, the order alternating from pair to pair, the arms taking turns; an `os.sync()`
    (not timed) before every timed run leaves no writeback from the one before. onlooker:
    `onlooker start` before the watched run and `onlooker stop` after it, neither timed
    (the start-up rescan overlaps the run and is counted; the first scan of the folder was
    done before the pairs, in an untimed watched run, as an always-on agent has long done
    it). ReproZip: `reprozip trace --overwrite -d DIR` with its defaults (the trace and the
    package identification it does at the end), DIR outside the folder. MLflow: a wrapper
    imports mlflow, opens `start_run(log_system_metrics=True)` on a local file store, runs
    the script in the same interpreter, ends the run; its default 10 s sampling; the cell
    also gives the median of what the wrapper spent outside the script (import,
    start_run, end_run). 1.00 = no cost.""".split())
SETTLED = (" With `--settle`: after `onlooker start` the watched run waited, untimed, until "
           "the agent was idle (its start-up work done), as an always-on agent would be.")


def render(results: dict, argv: list[str], note: str | None) -> str:
    m = results["machine"]
    lines = ["## Against peers (`benchmarks/peers.py`)", ""]
    lines.append(textwrap.dedent(f"""\
        onlooker and its peers, installed from the registry (`pip install -e '.[peers]'`:
        reprozip, mlflow-skinny, dvc, scikit-learn), run side by side on this machine by one
        command; every figure is a ratio against a baseline measured in the same run.

        ```console
        {' '.join(['python', 'benchmarks/peers.py', *argv])}
        ```

        **Machine.** {m['nproc']} vCPU, Linux {m['kernel']}, Python {m['python']},
        {m['mem_gib']} GiB RAM, run as {m['user']}. **Date:** {m['date']}, commit
        {m['commit']}. Load average {results['load'][0]:.1f} at the start,
        {results['load'][1]:.1f} at the end. Peers: {', '.join(
            f'{k} {v}' for k, v in results['peers'].items())}.
        """).rstrip())
    if note:
        lines += ["", f"**Note.** {note}"]
    ov = results.get("overhead")
    if ov:
        arms = [a for a in ARM_ORDER if a in ov["arms"]]
        lines += ["", "### Overhead on the run", "",
                  f"Watched wall time / bare wall time, median of {ov['pairs']} pairs per "
                  + OVERHEAD_HOW + (SETTLED if ov.get("settle") else ""), ""]
        labels = [ov["arms"][a]["label"] for a in arms]
        lines.append("| workload | bare run (median) | " + " | ".join(labels) + " |")
        lines.append("| --- | --- | " + " | ".join("---" for _ in arms) + " |")
        for name, row in ov["workloads"].items():
            bares = [b for a in row["arms"].values() for b in a.get("bare", [])]
            cells = []
            for a in arms:
                info = ov["arms"][a]
                got = row["arms"].get(a)
                if info["unavailable"]:
                    cells.append(f"not measured: {info['unavailable']}")
                elif not got:
                    cells.append("not measured")
                elif "error" in got:
                    cells.append(f"failed: {got['error'][:120]}")
                else:
                    extra = statistics.median(
                        w - b for w, b in zip(got["watched"], got["bare"], strict=True))
                    cell = fmt_ratio(got["ratios"]) + f", {extra:+.2f} s"
                    if got.get("fixed"):
                        fixed = statistics.median(got["fixed"])
                        cell += f"; MLflow's own start and end {fixed:.2f} s"
                    cells.append(cell)
            bare = f"{statistics.median(bares):.2f} s" if bares else "-"
            lines.append(f"| {name}: {row['what']} | {bare} | " + " | ".join(cells) + " |")
        notes = [f"{ov['arms'][a]['label']}: {n}" for a in arms for n in ov["arms"][a]["notes"]]
        if notes:
            lines += ["", "Notes: " + "; ".join(notes) + "."]
    ver = results.get("versioning")
    if ver:
        lines += ["", "### Versioning", "",
                  "onlooker: a run writes the files while the agent watches. *In the "
                  "catalog*: wall time from the writer's last close until every version is "
                  "in the catalog; *backlog empty*: until `status --json` (agent.json, "
                  "rewritten about once a second) also shows nothing queued, hashing or "
                  "pending. The agent works during the write too, so its CPU (all its "
                  "processes) is counted from before the write to the empty backlog: for many "
                  "small files that is the steadier figure. `dvc add`: the whole command "
                  "(wall, and CPU of it and its children), on the same files just written. "
                  "*Raw read*: a bare read loop of the same bytes from the page cache, the "
                  "physical limit (read in each tool's folder after the write, 3 times; the "
                  "case gives the median). *raw / x* is the fraction of that limit (1.00 = as fast "
                  "as reading the bytes); *dvc / x* above 1 means faster than `dvc add`.", "",
                  "| case | tool | in the catalog | backlog empty | CPU "
                  "| raw / wall | raw / CPU | dvc / wall | dvc / CPU |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for case in ver["cases"].values():
            dv = case["tools"].get("dvc", {})
            raws = [r["raw"] for r in case["tools"].values() if "raw" in r]
            raw = statistics.median(raws) if raws else 0.0
            if raw > 0:
                speed = (f"{case['bytes'] / 2**30 / raw:.1f} GiB/s" if case["files"] == 1
                         else f"{case['files'] / raw:,.0f} files/s")
                what = (f"{case['what']} (raw read {raw:.3f} s, {speed}; median over "
                        f"{len(raws)} folders)")
            else:
                what = case["what"]
            for tool, r in case["tools"].items():
                if "error" in r:
                    lines.append(f"| {what} | {tool} | failed: {r['error'][:150]} "
                                 "| | | | | | |")
                    what = ""
                    continue
                if tool == "dvc":
                    name, wall, idle = "`dvc add`", r["wall"], "-"
                else:
                    tier = tool.split("-")[1]
                    name = (f"onlooker {tier} ({r['tiers']})"
                            + (", default copy limit: hashed, not copied"
                               if tool.endswith("-default") else
                               ", copy kept" if r.get("copied") else ""))
                    wall, idle = r["after_write"], f"{r['idle_after_write']:.2f} s"
                ours = tool != "dvc"
                vs_wall = f"{dv['wall'] / wall:.2f}" if "wall" in dv and ours else "-"
                vs_cpu = (f"{dv['cpu'] / r['cpu']:.2f}" if "cpu" in dv and ours
                          and r["cpu"] > 0 else "-")
                raw_cpu = fmt_frac(raw / r["cpu"]) if r["cpu"] > 0 else "-"
                lines.append(f"| {what} | {name} | {wall:.2f} s | {idle} | "
                             f"{r['cpu']:.2f} s | {fmt_frac(raw / wall)} | {raw_cpu} | "
                             f"{vs_wall} | {vs_cpu} |")
                what = ""  # the case once, on its first row
    tel = results.get("telemetry")
    if tel:
        base = statistics.median(tel["samplers"]["onlooker"]["us"]) \
            if "us" in tel["samplers"].get("onlooker", {}) else None
        lines += ["", "### Telemetry cost per sample", "",
                  f"CPU time per sample of a live tree of {tel['procs']} processes, median of "
                  f"{tel['rounds']} rounds of {tel['samples']:,} samples (min-max), the "
                  "samplers alternating.", "",
                  "| sampler | what one sample reads | us per sample | this / onlooker |",
                  "| --- | --- | --- | --- |"]
        what = {
            "onlooker": "`TelemetrySampler.tick`: per process CPU times, memory, threads, "
                        "IO counters, fds (one `oneshot`); system CPU, memory, load",
            "mlflow": "`SystemMetricsMonitor` collect + aggregate ("
                      + ", ".join(tel.get("mlflow_monitors", [])) + "): the whole "
                      "machine's CPU %, memory, disk usage and IO, network; not the run's "
                      "processes",
            "mlflow-loop": "the same, plus the run-status read its loop makes each sample "
                           "(a new `MlflowClient` and `get_run` on the local file store)",
            "psutil": "plain psutil: `cpu_percent`, `memory_info`, `io_counters` per process",
            "psutil-same": "psutil making exactly the calls onlooker's sampler makes, with none "
                           "of its bookkeeping: the floor under its figure",
        }
        for name in ("onlooker", "psutil-same", "psutil", "mlflow", "mlflow-loop"):
            s = tel["samplers"].get(name)
            if not s:
                continue
            if "unavailable" in s:
                lines.append(f"| {name} | {what[name]} | not measured: {s['unavailable']} | |")
                continue
            med = statistics.median(s["us"])
            rel = f"{med / base:.2f}" if base else "-"
            lines.append(f"| {name} | {what[name]} | {med:,.0f} ({min(s['us']):,.0f}-"
                         f"{max(s['us']):,.0f}) | {rel} |")
        same = tel["samplers"].get("psutil-same", {}).get("us")
        plain = tel["samplers"].get("psutil", {}).get("us")
        loop = tel["samplers"].get("mlflow-loop", {}).get("us")
        if base and same and plain:
            text = (f"onlooker's sample costs {base / statistics.median(plain):.1f}x the plain "
                    "psutil one because it reads more: per process also the thread count "
                    "(/proc/PID/status) and the open file descriptors (/proc/PID/fd), and once "
                    "per sample the system's CPU, memory and load; the same calls without "
                    "onlooker's bookkeeping cost "
                    f"{statistics.median(same) / base:.0%} of its figure. MLflow's sample is "
                    "cheaper because it reads only machine-wide figures, none of the run's "
                    "processes")
            if loop:
                text += (f"; with the run-status read its loop makes each time it costs "
                         f"{statistics.median(loop) / base:.2f}x onlooker's")
            lines += ["", text + "."]
    # Prose wrapped as the rest of docs/benchmarks.md is; tables and code left whole.
    out, fenced = [], False
    for line in "\n".join(lines).split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or line.startswith(("|", "```")) or len(line) <= 90:
            out.append(line)
        else:
            out.append(textwrap.fill(line, 90, break_on_hyphens=False, break_long_words=False))
    return "\n".join(out) + "\n"


def write_docs(section: str) -> None:
    text = DOCS.read_text()
    block = f"{BEGIN}\n{section}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + block + (("\n" + tail) if tail else "")
    else:
        new = text.rstrip("\n") + "\n\n" + block
    tmp = DOCS.with_suffix(".md.peers-tmp")
    tmp.write_text(new)
    os.replace(tmp, DOCS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and 3 pairs")
    ap.add_argument("--pairs", type=int, help="pairs per workload and arm (7; 3 with --quick)")
    ap.add_argument("--only", default="overhead,versioning,telemetry",
                    help="comma-separated parts: overhead, versioning, telemetry")
    ap.add_argument("--workloads", default="cpu,io,sklearn")
    ap.add_argument("--arms", default=",".join(ARM_ORDER),
                    help="overhead arms: onlooker-full, onlooker-unpriv, reprozip, mlflow")
    ap.add_argument("--settle", action="store_true",
                    help="onlooker: wait after `start` until the agent is idle before the timed "
                         "run (an always-on agent's steady state; default: run at once)")
    ap.add_argument("--reprozip", help="the reprozip executable (default: beside python, PATH)")
    ap.add_argument("--base", help="folder for the temp projects (default: the system temp)")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"replace the section between {BEGIN} and {END} in docs/benchmarks.md")
    ap.add_argument("--note", help="a paragraph printed under the section's header")
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--render", metavar="JSON",
                    help="measure nothing: print (and --write-docs) a saved --json run's table")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        section = render(saved, saved.get("argv", []), args.note)
        print(section)
        if args.write_docs:
            write_docs(section)
            log(f"wrote the section into {DOCS}")
        return
    q = 0 if args.quick else 1
    pairs = args.pairs or SIZES["pairs"][q]
    parts = set(args.only.split(","))
    known_arms = {"onlooker-full": lambda: OnlookerArm("full", args.settle),
                  "onlooker-unpriv": lambda: OnlookerArm("unpriv", args.settle),
                  "reprozip": lambda: ReprozipArm(args.reprozip), "mlflow": MlflowArm}
    bad = [a for a in args.arms.split(",") if a not in known_arms]
    if bad or parts - {"overhead", "versioning", "telemetry"}:
        ap.error(f"unknown arm or part: {', '.join(bad or sorted(parts))}")
    shown, skip = [], False  # the command as the docs show it, less docs-only options
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--note", "--json"):
            skip = True
        elif a != "--write-docs" and not a.startswith(("--note=", "--json=")):
            shown.append(a)
    results: dict[str, Any] = {"machine": machine(), "peers": versions_of_peers(args.reprozip)}
    load0 = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="peers-", dir=args.base))
    try:
        if "overhead" in parts:
            works = [Workload(w, q) for w in args.workloads.split(",")]
            arms = [known_arms[a]() for a in args.arms.split(",")]
            bench_overhead(base, works, arms, pairs, results)
            results["overhead"]["settle"] = args.settle
        if "versioning" in parts:
            tiers = [t for t in ("full", "unpriv")
                     if f"onlooker-{t}" in args.arms.split(",")] or ["full"]
            if os.geteuid() != 0:
                tiers = [t for t in tiers if t != "full"] or ["unpriv"]
            bench_versioning(base, q, tiers, results)
        if "telemetry" in parts:
            bench_telemetry(base, q, results)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results["load"] = (load0, os.getloadavg()[0])
    results["argv"] = shown
    section = render(results, shown, args.note)
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if args.write_docs:
        write_docs(section)
        log(f"wrote the section into {DOCS}")


if __name__ == "__main__":
    main()
