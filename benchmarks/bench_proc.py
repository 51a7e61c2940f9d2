"""Benchmark the process sources: share of short processes each one sees, and idle CPU.

    python benchmarks/bench_proc.py [--count 200] [--duration 0.1] [--hz 20] [--idle 10]

Launches `count` processes of `duration` seconds each, one after another, while the
netlink and the polling source run side by side, and prints the share of those
processes each source reported (a ProcExec with the right argv). Then measures the
polling source's own CPU use over `idle` seconds with nothing launched.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import time

from onlooker.agent.events import ProcExec
from onlooker.agent.sources.netlink import NetlinkProcSource
from onlooker.agent.sources.poll import PollProcSource


def _seen(q: queue.Queue, pids: set[int], argv: tuple[str, ...]) -> int:
    found = set()
    while True:
        try:
            ev = q.get_nowait()
        except queue.Empty:
            return len(found)
        if isinstance(ev, ProcExec) and ev.info.pid in pids and ev.info.argv == argv:
            found.add(ev.info.pid)


def detection(count: int, duration: float, hz: float) -> None:
    argv = ("sleep", f"{duration:g}")
    poll_q: queue.Queue = queue.Queue()
    poll = PollProcSource(poll_q, hz=hz, ignore_pid=os.getpid(), watched=lambda: ())
    ok, why = NetlinkProcSource.probe()
    net_q: queue.Queue = queue.Queue()
    net = NetlinkProcSource(net_q, ignore_pid=os.getpid()) if ok else None
    poll.start()
    if net is not None:
        net.start()
    # Let the poller's initial listing pass before measuring.
    deadline = time.monotonic() + 5
    while poll.ticks < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pids: set[int] = set()
    cpu0, t0 = poll.cpu_seconds(), time.monotonic()
    for _ in range(count):
        proc = subprocess.Popen(argv)
        pids.add(proc.pid)
        proc.wait()
    cpu1, t1 = poll.cpu_seconds(), time.monotonic()
    # Two more ticks so the last process is looked at.
    target = poll.ticks + 2
    while poll.ticks < target:
        time.sleep(0.01)
    poll.stop()
    if net is not None:
        time.sleep(0.2)  # the netlink thread drains what the kernel queued
        net.stop()
    print(f"{count} processes of {duration * 1000:.0f} ms in sequence, poll at {hz:g} Hz")
    if net is not None:
        n = _seen(net_q, pids, argv)
        print(f"  netlink: {n}/{count} = {n / count:.1%}")
    else:
        print(f"  netlink: unavailable ({why})")
    p = _seen(poll_q, pids, argv)
    print(f"  poll:    {p}/{count} = {p / count:.1%}")
    print(f"  poll CPU while launching: {(cpu1 - cpu0) / (t1 - t0):.2%} of a core")


def idle_cost(seconds: float, hz: float) -> None:
    q: queue.Queue = queue.Queue()
    poll = PollProcSource(q, hz=hz, ignore_pid=os.getpid(), watched=lambda: ())
    poll.start()
    deadline = time.monotonic() + 5
    while poll.ticks < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu0, t0, ticks0, lists0 = poll.cpu_seconds(), time.monotonic(), poll.ticks, poll.relists
    time.sleep(seconds)
    cpu1, t1, ticks1, lists1 = poll.cpu_seconds(), time.monotonic(), poll.ticks, poll.relists
    poll.stop()
    share = (cpu1 - cpu0) / (t1 - t0)
    per_tick = (cpu1 - cpu0) / max(1, ticks1 - ticks0) * 1e6
    print(f"poll idle at {hz:g} Hz over {t1 - t0:.1f} s, {len(os.listdir('/proc'))} /proc "
          f"entries: {share:.2%} of a core ({per_tick:.0f} us per tick, "
          f"{(ticks1 - ticks0) / (t1 - t0):.1f} ticks/s; {lists1 - lists0} of "
          f"{ticks1 - ticks0} ticks listed /proc because other tasks started or ended)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--duration", type=float, default=0.1)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds; 0 skips")
    args = ap.parse_args()
    detection(args.count, args.duration, args.hz)
    if args.idle > 0:
        idle_cost(args.idle, args.hz)


if __name__ == "__main__":
    main()
