"""Fakes for driving the assembler as pure logic: a recording catalog, hasher and ignore."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from onlooker.agent.events import ProcInfo


class FakeCatalog:
    """Records what the assembler writes, in the shape the real catalog stores it."""

    def __init__(self) -> None:
        self.runs: dict[int, dict] = {}
        self.steps: dict[int, dict] = {}
        self.versions: dict[int, dict] = {}
        self.links: list[tuple[int, int, str, int | None]] = []
        self.basis: dict[tuple, str | None] = {}  # link -> how it was attributed
        self.access: dict[tuple, str | None] = {}  # meta link -> "read" | "write"
        self.params: dict[int, dict] = {}
        self.envs: list[dict] = []
        self.stat: list[tuple] = []
        self.metrics: list[tuple] = []
        self.telemetry: list[tuple] = []

    @contextlib.contextmanager
    def transaction(self):
        yield

    def begin_run(self, **kw) -> int:
        rid = len(self.runs) + 1
        self.runs[rid] = {**kw, "status": "running"}
        return rid

    def update_run(self, run_id: int, **kw) -> None:
        self.runs[run_id].update(kw)

    def add_step(self, run_id: int, **kw) -> int:
        sid = len(self.steps) + 1
        self.steps[sid] = {"run_id": run_id, **kw, "status": "running"}
        return sid

    def update_step(self, step_id: int, **kw) -> None:
        self.steps[step_id].update(kw)

    def add_version(self, path: str, **kw) -> int:
        for vid, v in self.versions.items():
            if v["path"] == path and v["hash"] == kw["hash"]:
                if kw.get("run_id") and not v.get("run_id"):
                    v["run_id"] = kw["run_id"]
                return vid
        vid = len(self.versions) + 1
        self.versions[vid] = {"path": path, **kw}
        return vid

    def link(self, run_id: int, version_id: int, role: str, step_id: int | None = None, *,
             producer_set: bool = False, basis: str | None = None,
             access: str | None = None) -> None:
        # the assembler may skip setting the producer only where the version has one, or
        # where the writer is a guess among runs (none of them is named the producer)
        assert not producer_set or self.versions[version_id].get("run_id") \
            or basis == "ambiguous", version_id
        assert (role == "meta") == (access is not None), (role, access)
        key = (run_id, version_id, role, step_id)
        if key not in self.links:
            self.links.append(key)
            self.basis[key] = basis
            self.access[key] = access

    def unlink(self, run_id: int, version_id: int, role: str, step_id: int | None = None,
               *, access: str | None = None) -> None:
        self.links = [k for k in self.links if k != (run_id, version_id, role, step_id)]

    def set_params(self, run_id: int, params: dict, *, drop=()) -> None:
        self.params[run_id] = dict(params)

    def put_env(self, env: dict) -> int:
        self.envs.append(env)
        return len(self.envs)

    def has_metrics(self, run_id: int, source: str) -> bool:
        return any(src == source for r, src, _ in self.metrics if r == run_id)

    def set_metrics(self, run_id: int, source: str, metrics) -> None:
        self.metrics = [m for m in self.metrics if (m[0], m[1]) != (run_id, source)]
        self.metrics.append((run_id, source, list(metrics)))

    def add_telemetry(self, rows) -> None:
        self.telemetry.extend(rows)

    def compact_telemetry(self, now: float) -> None:
        pass

    def stat_store(self, rows) -> None:
        self.stat.extend(rows)

    # views for assertions
    def io(self, run_id: int, role: str) -> dict[str, str]:
        return {self.versions[v]["path"]: self.versions[v]["hash"]
                for r, v, ro, _ in self.links if r == run_id and ro == role}


class FakeClock:
    """The assembler's clock, set by the test: no test depends on the machine's uptime
    or on the wall clock."""

    WALL0 = 1.8e9  # the Unix time of agent-clock zero

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def to_wall(self, t: float) -> float:
        return self.WALL0 + t


class FakeHasher:
    def __init__(self) -> None:
        self.requests: list[str] = []

    def request(self, path: str, *, copy: bool, prio: int = 0, delay: float = 0.0,
                settled: bool = False) -> None:
        self.requests.append(path)


class FakeIgnore:
    def __init__(self, project: Path) -> None:
        self.project = str(project)

    def inside(self, p: str) -> bool:
        return p == self.project or p.startswith(self.project + "/")

    def rel(self, p: str) -> str:
        return os.path.relpath(p, self.project)

    def outside_ok(self, p: str) -> bool:
        return not p.startswith(("/usr", "/proc", "/etc"))

    def named_ok(self, p: str) -> bool:
        return not p.startswith(("/proc", "/sys", "/dev"))

    def skip_file(self, p: str) -> bool:
        return False


def info(pid: int, argv: list[str], *, ppid: int = 1, cwd: str, started: float,
         ancestors: tuple[int, ...] = (), exe: str | None = "/usr/bin/python3",
         environ: tuple = (), stdio: tuple = (None, None)) -> ProcInfo:
    return ProcInfo(pid=pid, ppid=ppid, argv=tuple(argv), cwd=cwd, exe=exe, uid=0,
                    start_ticks=int(started * 100), started=started,
                    ancestors=ancestors or (ppid,), environ=environ, stdio=stdio)
