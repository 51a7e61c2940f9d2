"""An agent started just before a run does not re-read its interpreter's packages."""

from __future__ import annotations

import json
import sys

from onlooker.agent import daemon
from onlooker.agent.probes import environment


def test_the_interpreters_descriptions_outlive_the_agent(tmp_path, monkeypatch):
    exe = sys.executable
    first = environment.capture(exe)
    daemon.save_env_cache(tmp_path)
    monkeypatch.setattr(environment, "_py_cache", type(environment._py_cache)())
    reads = []
    real = environment._describe_python
    monkeypatch.setattr(environment, "_describe_python",
                        lambda *a: reads.append(a) or real(*a))
    daemon.load_env_cache(tmp_path)
    again = environment.capture(exe)
    assert reads == []  # served from what the last agent kept
    assert again["packages"] == first["packages"] and again["python"] == first["python"]


def test_a_changed_site_packages_is_read_again(tmp_path, monkeypatch):
    environment.capture(sys.executable)
    daemon.save_env_cache(tmp_path)
    path = tmp_path / "tmp" / daemon._ENV_CACHE
    data = json.loads(path.read_text())
    for row in data:  # stamps that no longer match: an install since
        row[1] = [[d, -1] for d, _ in row[1]]
    path.write_text(json.dumps(data))
    monkeypatch.setattr(environment, "_py_cache", type(environment._py_cache)())
    reads = []
    real = environment._describe_python
    monkeypatch.setattr(environment, "_describe_python",
                        lambda *a: reads.append(a) or real(*a))
    daemon.load_env_cache(tmp_path)
    environment.capture(sys.executable)
    assert len(reads) == 1


def test_a_broken_file_is_ignored(tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / daemon._ENV_CACHE).write_text("{not json")
    daemon.load_env_cache(tmp_path)  # no error
