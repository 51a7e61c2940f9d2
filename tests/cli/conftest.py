"""Fixtures for the CLI tests: a CliRunner and a small in-memory stand-in for the catalog."""

from __future__ import annotations

import copy
import io
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from onlooker.cli.main import cli
from onlooker.store.errors import MissingObject, NoSuchRun, NotInitialized


def make_run(run_id: int, **over: Any) -> dict[str, Any]:
    """A run dict as Catalog.run returns it (the JSON contract)."""
    run = {
        "id": run_id,
        "command": ["python", "src/train.py", "data/features", "model.pkl", "--n-est", "50"],
        "cwd": "/proj",
        "status": "completed",
        "exit_code": 0,
        "signal": None,
        "started_at": f"2025-01-0{run_id}T10:00:00Z",
        "ended_at": f"2025-01-0{run_id}T10:01:05Z",
        "duration": 65.0,
        "params": {"n_est": 50, "params.yaml:train.seed": 7},
        "inputs": [{"path": "data/features/train.pkl", "hash": "blake3:" + "ab" * 32,
                    "size": 123456, "kind": "dataset"}],
        "outputs": [{"path": "model.pkl", "hash": "blake3:" + "cd" * 32, "size": 2048,
                     "kind": "model"},
                    {"path": "metrics.json", "hash": "blake3:" + "ef" * 32, "size": 40,
                     "kind": "metrics"}],
        "code": [{"path": "src/train.py", "hash": "blake3:" + "12" * 32, "size": 900,
                  "kind": "code"}],
        "env": {"python": {"executable": "/usr/bin/python3", "version": "3.11.4"},
                "packages": {"PyYAML": "6.0.1", "numpy": "1.26.0"}, "os": "Linux 6.1",
                "cpu": "8 x Xeon", "memory_bytes": 16 * 2**30, "gpus": [],
                "hostname": "box", "user": "me"},
        "git": {"commit": "3a7cb96" + "0" * 33, "branch": "main", "dirty": True,
                "diff": DIFF_REF},
        "steps": [
            {"id": 1, "pid": 100, "ppid": 1, "parent": None, "argv": ["make", "train"],
             "cwd": "/proj", "started_at": "2025-01-01T10:00:00Z",
             "ended_at": "2025-01-01T10:01:05Z", "status": "completed", "exit_code": 0,
             "signal": None, "inputs": [], "outputs": []},
            {"id": 2, "pid": 101, "ppid": 100, "parent": 1, "argv": ["python", "src/train.py"],
             "cwd": "/proj", "started_at": "2025-01-01T10:00:01Z",
             "ended_at": "2025-01-01T10:01:04Z", "status": "completed", "exit_code": 0,
             "signal": None, "inputs": ["data/features/train.pkl"], "outputs": ["model.pkl"]},
        ],
        "tier": "netlink+inotify",
    }
    run.update(over)
    return run


DIFF_REF = "blake3:" + "77" * 32
DIFF_TEXT = "--- a/src/train.py\n+++ b/src/train.py\n@@ -1 +1 @@\n-lr = 0.1\n+lr = 0.2\n"


class FakeObjects:
    """The object store's read side: the sample run's diff, nothing else."""

    def open(self, ref: str):
        if ref != DIFF_REF:
            raise MissingObject(f"object {ref} is not in the store")
        return io.BytesIO(DIFF_TEXT.encode())


class FakeCatalog:
    """Catalog's read API over a list of run dicts (newest last in `stored`)."""

    stored: list[dict[str, Any]] = []
    objects = FakeObjects()

    def __init__(self, project: Path) -> None:
        self.project = project

    @classmethod
    def init(cls, project: Path) -> FakeCatalog:
        (Path(project) / ".onlooker").mkdir(parents=True, exist_ok=True)
        (Path(project) / ".onlooker" / "catalog.db").touch()
        return cls(Path(project))

    @classmethod
    def find(cls, start: Path) -> FakeCatalog:
        start = Path(start).resolve()
        for folder in (start, *start.parents):
            if (folder / ".onlooker" / "catalog.db").exists():
                return cls(folder)
        raise NotInitialized(f"{start} is not in an onlooker project")

    def __enter__(self) -> FakeCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def runs(self, limit: int | None = None, status: str | None = None) -> list[dict]:
        found = [
            {k: v for k, v in copy.deepcopy(r).items() if k not in ("env", "steps")}
            for r in reversed(self.stored)
            if status is None or r["status"] == status
        ]
        return found if limit is None else found[:limit]

    def query(self, where: Any = None, *, since: Any = None, until: Any = None,
              status: str | None = None, sort: str | None = None,
              limit: int | None = None) -> list[dict]:
        # The store's own filter over the stored dicts: the language is the store's.
        from onlooker.store.query import filter_runs

        return filter_runs(self.runs(status=status), where, since=since, until=until,
                           sort=sort, limit=limit)

    def run(self, run_id: Any) -> dict[str, Any]:
        for r in self.stored:
            if str(r["id"]) == str(run_id):
                return copy.deepcopy(r)
        raise NoSuchRun(f"no run {run_id} in the catalog")

    def resolve_run(self, ref: Any) -> int:
        text = str(ref)
        if text == "last" or (text.startswith("-") and text[1:].isdigit()):
            nth = 1 if text == "last" else int(text[1:])
            if len(self.stored) < nth:
                raise NoSuchRun("the catalog has no runs yet" if not self.stored
                                else f"the catalog has only {len(self.stored)} runs")
            return self.stored[-nth]["id"]
        for r in self.stored:
            if str(r["id"]) == text:
                return r["id"]
        raise NoSuchRun(f"no run {text} in the catalog")

    def counts(self) -> dict[str, int]:
        return {"runs": len(self.stored), "versions": 3}


@pytest.fixture
def fake_catalog(monkeypatch) -> type[FakeCatalog]:
    """Route the CLI's `onlooker.store.catalog.Catalog` to FakeCatalog."""
    module = types.ModuleType("onlooker.store.catalog")
    module.Catalog = FakeCatalog  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onlooker.store.catalog", module)
    monkeypatch.setattr(FakeCatalog, "stored", [])
    return FakeCatalog


@pytest.fixture
def invoke():
    """Run the CLI in-process: invoke(*args) -> click Result (stdout and stderr apart)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, list(args))

    return run
