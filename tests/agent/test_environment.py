"""The software environment of a run, read from files, never by running python."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from onlooker.agent.probes import environment
from onlooker.agent.probes.environment import capture, interpreter_path


def _dist(site: Path, name: str, version: str) -> None:
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture()
def venv(tmp_path: Path) -> Path:
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=60)
    xy = f"{sys.version_info[0]}.{sys.version_info[1]}"
    _dist(path / "lib" / f"python{xy}" / "site-packages", "Foo_Bar.baz", "1.2")
    return path


def test_real_venv(venv: Path) -> None:
    env = capture(str(venv / "bin" / "python"))
    py = env["python"]
    assert py["version"] == ".".join(map(str, sys.version_info[:3]))
    assert py["prefix"] == str(venv) and py["venv"] is True
    assert py["implementation"] == "CPython"
    assert env["packages"] == {"foo-bar-baz": "1.2"}  # PEP 503 name, nothing from the base


def test_system_site_packages(venv: Path) -> None:
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("include-system-site-packages = false",
                                           "include-system-site-packages = true"))
    env = capture(str(venv / "bin" / "python"))
    assert env["packages"]["foo-bar-baz"] == "1.2"
    assert len(env["packages"]) > 1  # the base interpreter's packages too


def test_cache_sees_new_packages(venv: Path) -> None:
    exe = str(venv / "bin" / "python")
    first = capture(exe)
    xy = f"{sys.version_info[0]}.{sys.version_info[1]}"
    _dist(venv / "lib" / f"python{xy}" / "site-packages", "newpkg", "0.1")
    st = os.stat(venv / "lib" / f"python{xy}" / "site-packages")
    os.utime(venv / "lib" / f"python{xy}" / "site-packages",
             ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse-mtime filesystems
    second = capture(exe)
    assert "newpkg" not in first["packages"] and second["packages"]["newpkg"] == "0.1"
    second["packages"]["mutated"] = "1"
    assert "mutated" not in capture(exe)["packages"]  # callers get copies


def test_repeated_capture_is_quick() -> None:
    capture(sys.executable)
    start = time.perf_counter()
    for _ in range(50):
        capture(sys.executable)
    assert (time.perf_counter() - start) / 50 < 0.01


def test_the_tests_own_venv() -> None:
    # The interpreter running the tests has onlooker's dependencies installed.
    env = capture(sys.executable)
    assert env["python"]["prefix"] == sys.prefix
    assert env["packages"]["blake3"] and env["packages"]["pyyaml"]
    assert env["packages"]["sqlite-utils"]


def test_base_interpreter_resolved_path() -> None:
    real = os.path.realpath(sys.executable)
    env = capture(real)
    assert env["python"]["venv"] is False or "pyvenv.cfg" in os.listdir(
        os.path.dirname(os.path.dirname(real)))
    assert env["python"]["version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")


def test_version_from_lib_folder_and_name(tmp_path: Path) -> None:
    prefix = tmp_path / "py"
    (prefix / "bin").mkdir(parents=True)
    _dist(prefix / "lib" / "python3.9" / "site-packages", "numpy", "1.26.0")
    exe = prefix / "bin" / "python3"
    exe.write_text("")
    env = capture(str(exe))
    assert env["python"]["version"] == "3.9" and env["packages"] == {"numpy": "1.26.0"}
    (prefix / "include" / "python3.9").mkdir(parents=True)
    (prefix / "include" / "python3.9" / "patchlevel.h").write_text('#define PY_VERSION "3.9.18"\n')
    environment._py_cache.clear()
    assert capture(str(exe))["python"]["version"] == "3.9.18"


def test_non_python_program() -> None:
    env = capture("/usr/bin/Rscript")
    assert env["program"] == {"executable": "/usr/bin/Rscript", "name": "Rscript"}
    assert "packages" not in env and "python" not in env


def test_missing_exe_does_not_raise(tmp_path: Path) -> None:
    env = capture(str(tmp_path / "gone" / "bin" / "python3.12"))
    assert env["python"]["version"] in (None, "3.12")
    assert env["packages"] == {}
    assert capture(None)["hostname"]


def test_host_facts() -> None:
    env = capture(None)
    assert env["os"]["system"] == "Linux" and env["os"]["release"]
    assert env["cpu"]["count"] >= 1 and env["memory_bytes"] > 0
    assert env["user"] and env["hostname"]
    assert capture(None, uid=0)["user"] == "root"


class FakeNVML:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML_ERROR_LIBRARY_NOT_FOUND")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54"

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return f"NVIDIA H100 #{h}"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=80 * 2**30, used=0, free=80 * 2**30)


def test_gpus_through_fake_nvml() -> None:
    nvml = FakeNVML()
    assert capture(None, nvml=nvml)["gpus"] == [
        {"name": "NVIDIA H100 #0", "driver": "550.54", "memory_bytes": 80 * 2**30},
        {"name": "NVIDIA H100 #1", "driver": "550.54", "memory_bytes": 80 * 2**30}]
    assert nvml.shutdown


def test_nvml_errors_give_no_gpus() -> None:
    assert capture(None, nvml=FakeNVML(fail=True))["gpus"] == []
    broken = FakeNVML()
    broken.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(OSError("gone"))  # type: ignore
    assert capture(None, nvml=broken)["gpus"] == []


def test_interpreter_path(tmp_path: Path) -> None:
    got = interpreter_path(".venv/bin/python", "/p", {}, "/usr/bin/python3")
    assert got == "/p/.venv/bin/python"
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text("#!/bin/sh\n")
    (bindir / "python").chmod(0o755)
    assert interpreter_path("python", "/p", {"PATH": f"{bindir}:/usr/bin"},
                            "/usr/bin/python3.11") == str(bindir / "python")
    assert interpreter_path("python", "/p", {"PATH": str(tmp_path)}, "/x") == "/x"
