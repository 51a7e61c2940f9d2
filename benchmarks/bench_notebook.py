"""What watching Jupyter kernels costs the agent (the figures in docs/benchmarks.md).

The assembler looks at each live kernel every tick (at most every 50 ms): one sample
of its main thread's wait channel, one stat of its IPython history database, and a
read-only query only when the database changed. This measures, on a real history
database built with IPython's schema and a real sleeping process standing in for the
kernel:

- `idle`: one look at a kernel whose database did not change (the steady state);
- `cell`: one look that finds a new cell (query, step rows in a real catalog);
- the agent CPU that 1, 10 and 50 idle kernels cost per second at 20 looks a second.

    python benchmarks/bench_notebook.py [--looks 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from onlooker.agent import config
from onlooker.agent.assembly.assembler import Assembler, Probes
from onlooker.agent.events import ProcExec
from onlooker.agent.probes import procfs
from onlooker.agent.rules.ignore import Ignore
from onlooker.store.catalog import Catalog

SCHEMA = """
CREATE TABLE sessions (session integer primary key autoincrement, start timestamp,
    end timestamp, num_cmds integer, remark text);
CREATE TABLE history (session integer, line integer, source text, source_raw text,
    PRIMARY KEY (session, line));
CREATE TABLE output_history (session integer, line integer, output text,
    PRIMARY KEY (session, line));
"""


class NoHash:
    def request(self, *a, **kw) -> None:
        pass


def setup(tmp: Path, kernels: int) -> tuple[Assembler, list[subprocess.Popen], Path]:
    project = tmp / "proj"
    project.mkdir()
    ipy = tmp / "ipy" / "profile_default"
    ipy.mkdir(parents=True)
    db = ipy / "history.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO sessions VALUES (NULL, ?, NULL, NULL, '')",
                 (datetime.now().isoformat(" "),))
    conn.commit()
    conn.close()
    cat = Catalog.init(project)
    cfg = config.load(project)
    asm = Assembler(cfg, cat, NoHash(), Ignore(project), probes=Probes(), tier="bench")
    procs = []
    for i in range(kernels):
        # a process waiting in epoll, as an idle kernel does, run as a kernel would be
        p = subprocess.Popen([sys.executable, "-c", "import select; select.epoll().poll(600)",
                              "-m", "ipykernel_launcher", "-f", f"/tmp/kernel-{i}.json"],
                             env={**os.environ, "IPYTHONDIR": str(tmp / "ipy")})
        procs.append(p)
    time.sleep(0.3)
    for p in procs:
        info = procfs.read_info(p.pid)
        # what the agent would see of a kernel: its argv as ipykernel's
        info = dataclasses.replace(info, cwd=str(project), argv=(
            sys.executable, "-m", "ipykernel_launcher", "-f", f"/tmp/kernel-{p.pid}.json"))
        asm.handle(ProcExec(info.started, info))
    return asm, procs, db


def bench(looks: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        asm, procs, db = setup(Path(d), 1)
        try:
            (run,) = [r for r in asm.runs if r.kernel is not None]
            t = time.monotonic()
            asm._kernel_poll(t)  # the session is found once
            cpu = time.process_time()
            for i in range(looks):
                asm._kernel_poll(t + (i + 1) * 0.05)
            idle = (time.process_time() - cpu) / looks
            conn = sqlite3.connect(db)
            cpu, n = time.process_time(), 0
            with asm.catalog.transaction():
                for i in range(200):
                    conn.execute("INSERT INTO history VALUES (1, ?, 'x = 1', 'x = 1')",
                                 (i + 1,))
                    conn.commit()
                    asm._kernel_poll(t + (looks + i + 1) * 0.05)
                    n += 1
            cell = (time.process_time() - cpu) / n
            conn.close()
            print(f"idle look: {idle * 1e6:.1f} us CPU; look finding a cell: "
                  f"{cell * 1e6:.0f} us CPU ({len(run.kernel.cells)} cells)")
        finally:
            for p in procs:
                p.kill()
                p.wait()
    for kernels in (1, 10, 50):
        with tempfile.TemporaryDirectory() as d:
            asm, procs, _ = setup(Path(d), kernels)
            try:
                t = time.monotonic()
                asm._kernel_poll(t)
                cpu = time.process_time()
                for i in range(200):
                    asm._kernel_poll(t + (i + 1) * 0.05)
                per_look = (time.process_time() - cpu) / 200
                print(f"{kernels:3d} idle kernels: {per_look * 20 * 100:.3f}% of one core "
                      f"(20 looks/s, {per_look * 1e6:.0f} us a look)")
            finally:
                for p in procs:
                    p.kill()
                    p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--looks", type=int, default=2000)
    args = ap.parse_args()
    bench(args.looks)


if __name__ == "__main__":
    main()
