"""Describe a run's software and hardware environment without running its interpreter.

The Python facts come from files only: ``pyvenv.cfg``, the ``lib/pythonX.Y``
folder, conda-meta and ``patchlevel.h`` for the exact version, and the
``*.dist-info``/``*.egg-info`` METADATA in site-packages for packages.

Pass the interpreter path *as the run named it* (`interpreter_path` builds it
from argv[0], cwd and PATH): ``/proc/<pid>/exe`` is already resolved past a
venv's symlink (``/usr/bin/python3.11``), which would hide the venv.

Results are cached per interpreter path, keyed by the mtimes of its
site-packages folders (installing or removing a package changes them), so the
agent can call `capture` for every run; host facts are read once per process
and GPU facts at most every five minutes.
"""

from __future__ import annotations

import copy
import glob
import importlib.metadata
import logging
import os
import platform
import pwd
import re
import socket
import threading
import time
from collections import OrderedDict
from typing import Any

from onlooker.agent.rules.classify import PYTHONS, program_name

log = logging.getLogger(__name__)

_GPU_TTL = 300.0
_lock = threading.Lock()
_py_cache: OrderedDict[str, tuple[tuple, dict]] = OrderedDict()
_host: dict[str, Any] = {}
_gpus: tuple[float, list[dict]] | None = None


def _read(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


def _pyvenv(path: str) -> dict[str, str]:
    text = _read(path) or ""
    out = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip().lower()] = value.strip()
    return out


def _find_venv(exe: str) -> tuple[str, str] | None:
    """(prefix, pyvenv.cfg path) for the first venv met following exe's symlinks."""
    path, seen = os.path.abspath(exe), set()
    while path not in seen and len(seen) < 16:
        seen.add(path)
        bindir = os.path.dirname(path)
        for cand in (os.path.join(bindir, "pyvenv.cfg"),
                     os.path.join(os.path.dirname(bindir), "pyvenv.cfg")):
            if os.path.isfile(cand):
                return os.path.dirname(cand), cand
        if not os.path.islink(path):
            break
        try:
            path = os.path.join(os.path.dirname(path), os.readlink(path))
        except OSError:
            break
    return None


def _xy_from(prefix: str, name: str) -> str | None:
    m = re.search(r"(?:python|pypy)(\d+\.\d+)", name)
    libs = sorted(glob.glob(os.path.join(prefix, "lib", "python[0-9]*.[0-9]*")) +
                  glob.glob(os.path.join(prefix, "lib", "pypy[0-9]*.[0-9]*")))
    versions = [re.search(r"(\d+\.\d+)$", p).group(1) for p in libs  # type: ignore[union-attr]
                if re.search(r"(\d+\.\d+)$", p)]
    if m and (m.group(1) in versions or not versions):
        return m.group(1)
    return versions[-1] if versions else None


def _full_version(prefix: str, xy: str) -> str:
    """X.Y.Z from conda-meta or the C headers when present, else X.Y."""
    for meta in glob.glob(os.path.join(prefix, "conda-meta", f"python-{xy}.*.json")):
        m = re.search(r"python-(\d+\.\d+\.\d+)", os.path.basename(meta))
        if m:
            return m.group(1)
    for inc in (os.path.join(prefix, "include", f"python{xy}", "patchlevel.h"),
                os.path.join(prefix, "include", f"python{xy}m", "patchlevel.h")):
        text = _read(inc) or ""
        m = re.search(r'#define\s+PY_VERSION\s+"([^"]+)"', text)
        if m:
            return m.group(1)
    return xy


def _site_dirs(prefix: str, xy: str | None, impl: str) -> list[str]:
    if not xy:
        return []
    out = []
    for lib in ("lib", "lib64"):
        base = "pypy" if impl == "PyPy" else "python"
        out.append(os.path.join(prefix, lib, f"{base}{xy}", "site-packages"))
    if prefix in ("/usr", "/usr/local"):  # Debian's split of pip and apt packages
        out += [f"/usr/local/lib/python{xy}/dist-packages", "/usr/lib/python3/dist-packages",
                f"/usr/lib/python{xy}/dist-packages"]
    seen: list[str] = []
    for d in out:
        real = os.path.realpath(d)
        if os.path.isdir(real) and real not in seen:
            seen.append(real)
    return seen


def _user_site(home: str | None, xy: str | None) -> list[str]:
    if not home or not xy:
        return []
    d = os.path.join(home, ".local", "lib", f"python{xy}", "site-packages")
    return [d] if os.path.isdir(d) else []


def _describe_python(exe: str, home: str | None) -> tuple[dict, list[str]]:
    venv = _find_venv(exe)
    real = os.path.realpath(exe)
    impl = "PyPy" if "pypy" in os.path.basename(real).lower() else "CPython"
    dirs: list[str]
    if venv:
        prefix, cfg_path = venv
        cfg = _pyvenv(cfg_path)
        version = cfg.get("version") or cfg.get("version_info") or ""
        version = ".".join(version.split(".")[:3]) if version else ""
        impl = cfg.get("implementation", impl)
        base_bin = cfg.get("home") or os.path.dirname(real)
        base_prefix = os.path.dirname(base_bin.rstrip("/"))
        xy = ".".join(version.split(".")[:2]) or _xy_from(prefix, os.path.basename(real))
        if not version and xy:
            version = _full_version(base_prefix, xy)
        dirs = _site_dirs(prefix, xy, impl)
        if cfg.get("include-system-site-packages", "false").lower() == "true":
            dirs += _user_site(home, xy) + _site_dirs(base_prefix, xy, impl)
    else:
        prefix = base_prefix = os.path.dirname(os.path.dirname(real))
        xy = _xy_from(prefix, os.path.basename(real))
        version = _full_version(prefix, xy) if xy else ""
        dirs = _user_site(home, xy) + _site_dirs(prefix, xy, impl)
    info = {"executable": exe, "version": version or None, "prefix": prefix,
            "base_prefix": base_prefix, "implementation": impl, "venv": venv is not None,
            "site_packages": dirs}
    return info, dirs


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packages(dirs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in dirs:  # the first folder wins, as on sys.path
        try:
            dists = list(importlib.metadata.distributions(path=[d]))
        except OSError as err:
            log.debug("cannot list %s: %s", d, err)
            continue
        for dist in dists:
            try:
                name, version = dist.metadata["Name"], dist.version
            except (OSError, KeyError, ValueError):
                continue
            if name and version and _normalize(name) not in out:
                out[_normalize(name)] = version
    return dict(sorted(out.items()))


def _mtimes(dirs: list[str]) -> tuple:
    out = []
    for d in dirs:
        try:
            out.append((d, os.stat(d).st_mtime_ns))
        except OSError:
            out.append((d, None))
    return tuple(out)


def _python(exe: str, home: str | None) -> dict:
    key = f"{exe}\0{home}"
    with _lock:
        hit = _py_cache.get(key)
    if hit and hit[0] == _mtimes(hit[1]["python"]["site_packages"]):
        return hit[1]
    info, dirs = _describe_python(exe, home)
    result = {"python": info, "packages": _packages(dirs)}
    with _lock:
        _py_cache[key] = (_mtimes(dirs), result)
        _py_cache.move_to_end(key)
        while len(_py_cache) > 64:
            _py_cache.popitem(last=False)
    return result


def _os_release() -> str | None:
    text = _read("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else None


def _host_facts() -> dict[str, Any]:
    with _lock:
        if _host:
            return _host
    cpuinfo = _read("/proc/cpuinfo", 1 << 16) or ""
    m = re.search(r"^(?:model name|Processor|cpu model)\s*:\s*(.+)$", cpuinfo, re.M)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        memory = None
    facts = {
        "os": {"system": platform.system(), "release": platform.release(),
               "distro": _os_release()},
        "cpu": {"model": m.group(1).strip() if m else platform.processor() or None,
                "count": os.cpu_count()},
        "memory_bytes": memory,
        "hostname": socket.gethostname(),
    }
    with _lock:
        _host.update(facts)
    return facts


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def gpus(nvml: Any = None) -> list[dict]:
    """[{name, driver, memory_bytes}] through NVML; [] when NVML is missing or fails."""
    global _gpus
    if nvml is None:
        with _lock:
            if _gpus and time.monotonic() - _gpus[0] < _GPU_TTL:
                return copy.deepcopy(_gpus[1])
        try:
            import pynvml as nvml_mod
        except Exception:  # noqa: BLE001 - no NVML is a normal machine
            nvml_mod = None
        found = _query_nvml(nvml_mod) if nvml_mod else []
        with _lock:
            _gpus = (time.monotonic(), found)
        return copy.deepcopy(found)
    return _query_nvml(nvml)


def _query_nvml(nvml: Any) -> list[dict]:
    try:
        nvml.nvmlInit()
    except Exception as err:  # noqa: BLE001 - NVML raises its own error types
        log.debug("NVML unavailable: %s", err)
        return []
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        out = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            out.append({"name": _text(nvml.nvmlDeviceGetName(handle)), "driver": driver,
                        "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total)})
        return out
    except Exception as err:  # noqa: BLE001
        log.debug("NVML query failed: %s", err)
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _user(uid: int | None) -> tuple[str | None, str | None]:
    uid = os.getuid() if uid is None else uid
    try:
        entry = pwd.getpwuid(uid)
        return entry.pw_name, entry.pw_dir
    except KeyError:
        return str(uid), None


def capture(exe: str | None, *, nvml: Any = None, uid: int | None = None) -> dict:
    """The environment of a run whose interpreter or program is `exe`.

    `uid` is the run's user (the agent may run as root); it names the user and
    finds their ``~/.local`` site-packages. Never raises for a missing path.
    """
    user, home = _user(uid)
    env: dict[str, Any] = copy.deepcopy(_host_facts())
    env["user"] = user
    env["gpus"] = gpus(nvml)
    if exe:
        name = program_name([os.path.basename(exe)], exe)
        if name in PYTHONS:
            try:
                env.update(copy.deepcopy(_python(exe, home)))
            except OSError as err:
                log.info("cannot describe python %s: %s", exe, err)
                env["program"] = {"executable": exe, "name": name}
        else:
            env["program"] = {"executable": exe, "name": name}
    return env


def interpreter_path(argv0: str, cwd: str | None, environ: dict[str, str] | None,
                     exe: str | None) -> str | None:
    """The interpreter as the run named it: argv[0] against cwd, else on its PATH,
    else /proc's exe."""
    if "/" in argv0:
        return os.path.normpath(os.path.join(cwd or "/", argv0))
    for d in ((environ or {}).get("PATH") or "").split(":"):
        cand = os.path.join(d or ".", argv0)
        if d and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return exe
