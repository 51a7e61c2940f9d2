"""Real-GPU check: a run that allocates GPU memory shows it in its own telemetry.

Usage: python tests/gpu/check_gpu.py   (exit 0 with a message where there is no GPU)
Drives TelemetrySampler + GpuReader directly on a child process that allocates
~1 GiB with torch where installed, else with CUDA's driver API through ctypes.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from onlooker.agent.probes.gpu import GpuReader
from onlooker.agent.workers.telemetry import TelemetrySampler

ALLOC = r"""
import ctypes, sys, time
size = 1 << 30
try:
    import torch
    x = torch.empty(size, dtype=torch.uint8, device="cuda"); x.fill_(1)
    torch.cuda.synchronize()
    end = time.time() + 4
    while time.time() < end:
        x.add_(1); torch.cuda.synchronize()
    print("torch", flush=True)
except ImportError:
    cuda = ctypes.CDLL("libcuda.so.1")
    ctx, ptr = ctypes.c_void_p(), ctypes.c_uint64()
    assert cuda.cuInit(0) == 0
    dev = ctypes.c_int()
    assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0
    assert cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size)) == 0
    assert cuda.cuMemsetD8_v2(ptr, 1, ctypes.c_size_t(size)) == 0
    cuda.cuCtxSynchronize()
    print("cuda", flush=True)
    time.sleep(4)
"""


def main() -> int:
    reader = GpuReader()
    ok, why = reader.probe()
    if not ok:
        print(f"SKIP: no usable NVIDIA GPU ({why})")
        return 0
    print(f"gpu: {why}")
    proc = subprocess.Popen([sys.executable, "-c", ALLOC])
    out: queue.Queue = queue.Queue()
    sampler = TelemetrySampler(out, interval=0.5, gpu=reader,
                               runs=lambda: {1: frozenset([proc.pid])} if proc.poll() is None
                               else {})
    started = time.monotonic()
    sampler.start()
    try:
        proc.wait(timeout=120)
    finally:
        sampler.stop()
    rows = []
    while not out.empty():
        rows.extend(out.get().rows)
    if proc.returncode != 0:
        print(f"FAIL: the allocating child exited {proc.returncode}")
        return 1
    mems = [d.get("gpu.0.mem") for _, _, d in rows if "gpu.0.mem" in d]
    utils = [d.get("gpu.0.util") for _, _, d in rows if d.get("gpu.0.util") is not None]
    peak = max((m for m in mems if m is not None), default=0)
    print(f"{len(rows)} samples in {time.monotonic() - started:.1f}s; run's peak GPU memory "
          f"{peak / 2**20:.0f} MiB; run's SM util samples {utils[:8]}; "
          f"sampler CPU {sampler.cpu_seconds():.3f}s")
    for _, _, d in rows[-3:]:
        print({k: v for k, v in d.items() if k.startswith(("gpu.", "dev."))})
    if peak < 2**30:
        print("FAIL: the run's telemetry does not show its 1 GiB allocation")
        return 1
    print("OK: the run's own GPU memory is in its telemetry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
