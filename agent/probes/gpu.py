"""GPU readings through NVML: per device, and per process so each run gets only its own.

The NVML module is injected (`GpuReader(nvml=fake)`); by default `pynvml` from
NVIDIA's `nvidia-ml-py` distribution is imported, defensively, on first `probe()`.
No module, no driver, no GPU: the reader is off and `read()` returns None. A reading
the driver answers "not supported" (or any NVML error) is None, never an exception;
"not supported" is remembered so it is not asked again every second.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED
_NOT_FOUND = 6  # NVML_ERROR_NOT_FOUND: no process utilization samples since the timestamp


@dataclass(frozen=True, slots=True)
class Device:
    """One GPU as the whole machine sees it (never a run's own figure)."""

    index: int
    name: str | None
    util: float | None  # % of time a kernel ran, whole device
    mem_used: int | None  # bytes, whole device
    mem_total: int | None
    temp: float | None  # degrees C
    power: float | None  # watts


@dataclass(frozen=True, slots=True)
class GpuProc:
    """One process's use of one device. `pid` is in the agent's pid namespace."""

    pid: int
    device: int
    mem: int | None  # bytes; None where the driver does not say (MIG, some containers)
    sm: float | None  # % SM utilization since the previous read; None where unsupported


@dataclass(frozen=True, slots=True)
class GpuSample:
    devices: tuple[Device, ...]
    procs: tuple[GpuProc, ...]


class GpuReader:
    """NVML, initialised once, handles kept; `read()` is cheap enough for 1 Hz."""

    def __init__(self, nvml: Any | None = None, *, proc: str = "/proc") -> None:
        self._nvml = nvml
        self._proc = proc
        self._handles: list[Any] = []
        self._names: list[str | None] = []
        self._probed: tuple[bool, str] | None = None
        self._unsupported: set[tuple[int, str]] = set()
        self._last_ts: dict[int, int] = {}  # device -> last process-utilization timestamp
        self._nspid: dict[int, tuple[int, ...]] = {}  # our pid -> its NSpid line
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._probed and self._probed[0])

    @property
    def count(self) -> int:
        return len(self._handles) if self.enabled else 0

    def probe(self) -> tuple[bool, str]:
        """(usable, why): initialise NVML once; later calls return the first answer."""
        if self._probed is None:
            self._probed = self._init()
            log.info("gpu: %s", self._probed[1])
        return self._probed

    def _init(self) -> tuple[bool, str]:
        if self._nvml is None:
            try:
                import pynvml  # nvidia-ml-py; optional extra `gpu`
            except Exception as err:  # ImportError, or a broken install
                return False, f"nvidia-ml-py is not installed ({type(err).__name__})"
            self._nvml = pynvml
        nv = self._nvml
        try:
            nv.nvmlInit()
        except Exception as err:
            return False, f"NVML cannot start: {err}"
        try:
            n = int(nv.nvmlDeviceGetCount())
            self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        except Exception as err:
            self._shutdown()
            return False, f"NVML cannot list GPUs: {err}"
        if not self._handles:
            self._shutdown()
            return False, "NVML found no GPU"
        self._names = [self._call(i, "name", nv.nvmlDeviceGetName, h)
                       for i, h in enumerate(self._handles)]
        self._names = [n.decode() if isinstance(n, bytes) else n for n in self._names]
        driver = self._call(-1, "driver", nv.nvmlSystemGetDriverVersion)
        if isinstance(driver, bytes):
            driver = driver.decode()
        return True, f"NVML, driver {driver or '?'}, {len(self._handles)} GPU(s)"

    def close(self) -> None:
        if self.enabled:
            self._shutdown()
        self._probed = (False, "closed")

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # shutting down: nothing useful to do with an error
            pass

    # -- reading ---------------------------------------------------------------

    def _call(self, device: int, what: str, fn: Any, *args: Any) -> Any:
        """fn(*args), or None on any NVML error; "not supported" is not asked again."""
        if (device, what) in self._unsupported:
            return None
        try:
            return fn(*args)
        except Exception as err:
            if getattr(err, "value", None) == getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED",
                                                      _NOT_SUPPORTED):
                self._unsupported.add((device, what))
                log.debug("gpu %d: %s not supported", device, what)
            else:
                log.debug("gpu %d: %s failed: %s", device, what, err)
            return None

    def read(self, pids: Collection[int] = ()) -> GpuSample | None:
        """Every device and every process on it; None when the reader is off.

        `pids` are the pids the caller cares about (the runs' trees); an NVML pid that
        is not one of them and not a process in our namespace is looked up among their
        NSpid aliases (a run in a container, NVML answering with another namespace's pid).
        """
        if not self.probe()[0]:
            return None
        try:
            return self._read(pids)
        except Exception as err:  # a driver or fake misbehaving must not stop sampling
            if not self._warned:
                log.warning("gpu: reading NVML failed: %s", err)
                self._warned = True
            return None

    def _read(self, pids: Collection[int]) -> GpuSample:
        nv = self._nvml
        devices: list[Device] = []
        procs: list[GpuProc] = []
        for i, h in enumerate(self._handles):
            util = self._call(i, "util", nv.nvmlDeviceGetUtilizationRates, h)
            mem = self._call(i, "memory", nv.nvmlDeviceGetMemoryInfo, h)
            temp = self._call(i, "temp", nv.nvmlDeviceGetTemperature, h,
                              getattr(nv, "NVML_TEMPERATURE_GPU", 0))
            power = self._call(i, "power", nv.nvmlDeviceGetPowerUsage, h)
            devices.append(Device(
                index=i, name=self._names[i] if i < len(self._names) else None,
                util=_num(getattr(util, "gpu", None)),
                mem_used=_int(getattr(mem, "used", None)),
                mem_total=_int(getattr(mem, "total", None)),
                temp=_num(temp), power=None if power is None else float(power) / 1000.0))
            mems: dict[int, int | None] = {}
            for what, fn in (("compute", nv.nvmlDeviceGetComputeRunningProcesses),
                             ("graphics", getattr(nv, "nvmlDeviceGetGraphicsRunningProcesses",
                                                  None))):
                if fn is None:
                    continue
                for p in self._call(i, what, fn, h) or ():
                    pid, used = int(p.pid), _int(getattr(p, "usedGpuMemory", None))
                    # One process in both lists is one context: keep the larger figure.
                    old = mems.get(pid)
                    mems[pid] = used if old is None else max(old, used or 0)
            if not mems:
                continue
            sm = self._sm_util(i, h)
            for pid, used in mems.items():
                share = None if sm is None else sm.get(pid, 0.0)
                procs.append(GpuProc(pid=pid, device=i, mem=used, sm=share))
        return GpuSample(tuple(devices), tuple(self._map_pids(procs, pids)))

    def _sm_util(self, device: int, handle: Any) -> dict[int, float] | None:
        """pid -> mean SM % over the samples since the last read; None if unsupported."""
        nv = self._nvml
        fn = getattr(nv, "nvmlDeviceGetProcessUtilization", None)
        if fn is None or (device, "process_util") in self._unsupported:
            return None
        try:
            samples = fn(handle, self._last_ts.get(device, 0))
        except Exception as err:
            code = getattr(err, "value", None)
            if code == getattr(nv, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED):
                self._unsupported.add((device, "process_util"))
                return None
            if code in (getattr(nv, "NVML_ERROR_NOT_FOUND", _NOT_FOUND), 0):
                return {}  # no process ran a kernel since the last read
            return None
        sums: dict[int, list[float]] = {}
        for s in samples or ():
            self._last_ts[device] = max(self._last_ts.get(device, 0), int(s.timeStamp))
            slot = sums.setdefault(int(s.pid), [0.0, 0])
            slot[0] += float(s.smUtil)
            slot[1] += 1
        return {pid: total / n for pid, (total, n) in sums.items()}

    def _map_pids(self, procs: list[GpuProc], pids: Collection[int]) -> list[GpuProc]:
        wanted = set(pids)
        for gone in set(self._nspid) - wanted:
            del self._nspid[gone]
        aliases: dict[int, int] | None = None
        out = []
        for p in procs:
            if p.pid in wanted or os.path.exists(f"{self._proc}/{p.pid}"):
                out.append(p)  # ours, or a process of our namespace that is no run's
                continue
            if aliases is None:
                aliases = self._aliases(wanted)
            mine = aliases.get(p.pid)
            out.append(p if mine is None else GpuProc(mine, p.device, p.mem, p.sm))
        return out

    def _aliases(self, pids: set[int]) -> dict[int, int]:
        """Every other-namespace pid of our pids -> our pid, from /proc/<pid>/status NSpid."""
        out: dict[int, int] = {}
        for pid in pids:
            ns = self._nspid.get(pid)
            if ns is None:
                ns = self._nspid[pid] = _read_nspid(self._proc, pid)
            for alias in ns:
                if alias != pid:
                    out.setdefault(alias, pid)
        return out


def _read_nspid(proc: str, pid: int) -> tuple[int, ...]:
    try:
        with open(f"{proc}/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return tuple(int(x) for x in line.split()[1:] if x.isdigit())
    except OSError:  # the process ended: no aliases
        pass
    return ()


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
