"""Idle CPU and IO priority for the agent's bulk work, per thread (Linux).

Scheduling policy, nice value and IO priority are per thread on Linux, and a thread
(or process) made after the change inherits it. The agent lowers its bulk process
(`agent/workers/bulk.py`) once at its start, before it makes any thread, so every
thread of it (the BLAKE3 pool's included) runs only when a core would otherwise idle.

Never lower a thread of the event-path process: a SCHED_IDLE or nice-19 thread that
the kernel preempts while it holds the GIL stalls every other thread of the process
until it runs again, which under a busy run is up to seconds (measured with
`benchmarks/bench_overhead.py --gil-check`: the main thread's 5 ms sleeps took up to
1.1-2.7 s beside one such thread and three CPU hogs).
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

IDLE = "idle"  # SCHED_IDLE
NICE = "nice 19"
NORMAL = "normal"


def lower_this_thread() -> dict[str, str]:
    """Put the calling thread at idle CPU and IO priority, as far as the kernel allows.

    CPU: SCHED_IDLE, else nice 19 where SCHED_IDLE is refused (a seccomp profile, an
    old kernel), else unchanged. IO: the idle class (ioprio_set), else best-effort 7.
    Returns {"cpu": ..., "io": ...} saying what was obtained. Never raises.
    """
    return {"cpu": _lower_cpu(), "io": _lower_io()}


def _lower_cpu() -> str:
    try:
        # pid 0 is the calling thread, not the whole process.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return IDLE
    except (AttributeError, OSError) as err:
        log.info("SCHED_IDLE refused (%s); trying nice 19", err)
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        return NICE
    except (AttributeError, OSError) as err:
        log.warning("cannot lower the CPU priority of the bulk work: %s", err)
        return NORMAL


def _lower_io() -> str:
    try:
        import psutil

        # psutil's ionice calls ioprio_set(IOPRIO_WHO_PROCESS, pid): given a thread id,
        # the kernel sets that one thread.
        me = psutil.Process(threading.get_native_id())
        try:
            me.ionice(psutil.IOPRIO_CLASS_IDLE)
            return IDLE
        except (OSError, psutil.Error) as err:
            log.info("idle IO class refused (%s); trying best-effort 7", err)
        me.ionice(psutil.IOPRIO_CLASS_BE, 7)
        return "best-effort 7"
    except Exception as err:  # psutil missing, no ioprio on this platform
        log.warning("cannot lower the IO priority of the bulk work: %s", err)
        return NORMAL


def of_this_thread() -> dict[str, str]:
    """What the calling thread runs at, read back from the kernel (for status, tests)."""
    try:
        policy = os.sched_getscheduler(0)
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return {"cpu": "unknown", "io": "unknown"}
    if policy == getattr(os, "SCHED_IDLE", -1):
        cpu = IDLE
    elif nice >= 19:
        cpu = NICE
    else:
        cpu = NORMAL if nice == 0 else f"nice {nice}"
    try:
        import psutil

        io = psutil.Process(threading.get_native_id()).ionice()
        klass = int(io.ioclass)
        io_name = {int(psutil.IOPRIO_CLASS_IDLE): IDLE,
                   int(psutil.IOPRIO_CLASS_BE): f"best-effort {io.value}",
                   int(psutil.IOPRIO_CLASS_RT): "realtime"}.get(klass, NORMAL)
    except Exception:
        io_name = "unknown"
    return {"cpu": cpu, "io": io_name}
