"""GpuReader against an injected fake NVML: devices, per-process memory and SM util, errors."""

from __future__ import annotations

from types import SimpleNamespace

from onlooker.agent.probes.gpu import GpuReader

NOT_SUPPORTED, NOT_FOUND = 3, 6


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"nvml error {value}")
        self.value = value


class FakeNVML:
    """The slice of pynvml that GpuReader uses; `unsupported` names readings that fail."""

    NVMLError = FakeNVMLError
    NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    NVML_ERROR_NOT_FOUND = NOT_FOUND
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices: int = 2, *, init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.procs: dict[int, list[tuple[int, int | None]]] = {i: [] for i in range(devices)}
        self.graphics: dict[int, list[tuple[int, int | None]]] = {i: [] for i in range(devices)}
        self.sm: dict[int, list[tuple[int, int, int]]] = {i: [] for i in range(devices)}
        self.unsupported: set[str] = set()
        self.calls: dict[str, int] = {}
        self.inits = 0

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if what in self.unsupported:
            raise FakeNVMLError(NOT_SUPPORTED)

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.1"

    def nvmlDeviceGetCount(self) -> int:
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"Fake H100"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        self._count("util")
        return SimpleNamespace(gpu=90 + h, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        self._count("memory")
        return SimpleNamespace(used=(10 + h) * 2**30, total=80 * 2**30, free=0)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        self._count("temp")
        return 60

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._count("power")
        return 250_000  # milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        self._count("compute")
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self.procs[h]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        self._count("graphics")
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self.graphics[h]]

    def nvmlDeviceGetProcessUtilization(self, h: int, since: int) -> list[SimpleNamespace]:
        self._count("process_util")
        got = [SimpleNamespace(pid=p, timeStamp=ts, smUtil=sm, memUtil=0)
               for p, ts, sm in self.sm[h] if ts > since]
        if not got:
            raise FakeNVMLError(NOT_FOUND)
        return got


def test_probe_reports_why_it_is_off() -> None:
    reader = GpuReader(nvml=FakeNVML(init_error=9))  # driver not loaded
    ok, why = reader.probe()
    assert not ok and "NVML cannot start" in why
    assert reader.read({1}) is None
    ok, why = GpuReader(nvml=FakeNVML(devices=0)).probe()
    assert not ok and "no GPU" in why


def test_init_once_and_device_readings() -> None:
    nv = FakeNVML()
    reader = GpuReader(nvml=nv)
    assert reader.probe() == (True, "NVML, driver 550.1, 2 GPU(s)")
    for _ in range(3):
        sample = reader.read()
    assert nv.inits == 1
    dev = sample.devices[1]
    assert (dev.index, dev.name, dev.util, dev.mem_used, dev.temp, dev.power) == (
        1, "Fake H100", 91.0, 11 * 2**30, 60.0, 250.0)
    assert sample.procs == ()


def test_processes_with_memory_and_sm_util(tmp_path) -> None:
    nv = FakeNVML()
    nv.procs[0] = [(100, 3 * 2**30), (200, 2**30)]
    nv.graphics[0] = [(100, 2**30)]  # the same context listed twice: not double counted
    nv.procs[1] = [(100, None)]  # the driver does not say (MIG, some containers)
    nv.sm[0] = [(100, 10, 40), (100, 20, 60), (200, 15, 5)]
    reader = GpuReader(nvml=nv, proc=str(tmp_path))
    sample = reader.read({100, 200})
    got = {(p.pid, p.device): (p.mem, p.sm) for p in sample.procs}
    assert got == {(100, 0): (3 * 2**30, 50.0), (200, 0): (2**30, 5.0), (100, 1): (None, 0.0)}
    # Samples already seen are not counted again; no new samples: 0 % for live processes.
    again = {(p.pid, p.device): p.sm for p in reader.read({100, 200}).procs}
    assert again[(100, 0)] == 0.0


def test_not_supported_is_none_and_not_asked_again(tmp_path) -> None:
    nv = FakeNVML(devices=1)
    nv.unsupported = {"process_util", "power", "temp"}
    nv.procs[0] = [(100, 2**30)]
    reader = GpuReader(nvml=nv, proc=str(tmp_path))
    for _ in range(3):
        sample = reader.read({100})
    assert sample.devices[0].power is None and sample.devices[0].temp is None
    assert sample.devices[0].util == 90.0
    assert sample.procs[0].sm is None and sample.procs[0].mem == 2**30
    assert nv.calls["process_util"] == 1 and nv.calls["power"] == 1
    assert nv.calls["util"] == 3


def test_a_broken_driver_never_raises(tmp_path) -> None:
    nv = FakeNVML(devices=1)

    def boom(h: int) -> list:
        raise RuntimeError("driver went away")

    nv.nvmlDeviceGetComputeRunningProcesses = boom  # type: ignore[method-assign]
    reader = GpuReader(nvml=nv, proc=str(tmp_path))
    sample = reader.read({1})
    assert sample is not None and sample.procs == ()
    nv.nvmlDeviceGetUtilizationRates = None  # type: ignore[assignment]  # not callable
    assert reader.read({1}).devices[0].util is None


def test_container_pids_map_through_nspid(tmp_path) -> None:
    # Our pid 4000 is pid 12 inside its container; NVML answers with 12.
    (tmp_path / "4000").mkdir()
    (tmp_path / "4000" / "status").write_text("Name:\tpython\nNSpid:\t4000\t12\n")
    (tmp_path / "77").mkdir()  # pid 77 is a process of our namespace, no run's
    (tmp_path / "77" / "status").write_text("Name:\tother\nNSpid:\t77\n")
    nv = FakeNVML(devices=1)
    nv.procs[0] = [(12, 2**30), (77, 2**20), (555, 2**20)]
    reader = GpuReader(nvml=nv, proc=str(tmp_path))
    pids = {p.pid for p in reader.read({4000}).procs}
    assert pids == {4000, 77, 555}  # 12 -> 4000; others stay as they are, never ours
