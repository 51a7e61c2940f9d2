"""An error the agent raises on purpose reaches the user as its own sentence."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import onlooker.agent
from onlooker.agent import daemon, lifecycle
from onlooker.agent.errors import AgentError
from onlooker.agent.sources.inotify import InotifySource, WatchError
from onlooker.agent.workers.bulk import BulkProcess

LIMIT = ("cannot start inotify: Too many open files (raise fs.inotify.max_user_instances,"
         " e.g. sysctl fs.inotify.max_user_instances=512)")


def test_every_public_agent_error_derives_from_agent_error():
    found = []
    for mod in pkgutil.walk_packages(onlooker.agent.__path__, "onlooker.agent."):
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, Exception) and not name.startswith("_")
                    and obj.__module__ == module.__name__):
                found.append(obj)
    assert found and [e.__name__ for e in found if not issubclass(e, AgentError)] == []


def _failing_start(self):
    raise WatchError(LIMIT)


def test_watch_says_the_inotify_limit_in_one_sentence(tmp_path, invoke, monkeypatch):
    project = tmp_path / "proj"
    project.mkdir()
    assert invoke("-C", str(project), "init").exit_code == 0
    (project / ".onlooker" / "config.toml").write_text(
        '[capture]\nprocess = "poll"\nfiles = "inotify"\n')
    monkeypatch.setattr(InotifySource, "start", _failing_start)
    spawned = []
    real_spawn = BulkProcess.spawn.__func__

    def spawn(cls, **kw):
        spawned.append(real_spawn(cls, **kw))
        return spawned[-1]

    monkeypatch.setattr(BulkProcess, "spawn", classmethod(spawn))
    res = invoke("-C", str(project), "watch")
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == f"onlooker: {LIMIT}"
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    # The agent that could not start took its hashing process down with it.
    (bulk,) = spawned
    assert bulk._proc.poll() is not None


def test_the_background_agent_logs_the_sentence_start_then_says(tmp_path, monkeypatch, caplog):
    project = tmp_path / "proj"
    (project / ".onlooker").mkdir(parents=True)

    def run(path, stop=None):
        raise WatchError(LIMIT)

    monkeypatch.setattr(daemon, "run", run)
    with caplog.at_level(logging.ERROR):
        assert daemon.main([str(project)]) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line == lifecycle.FAILED_MARK + LIMIT
    # `onlooker start` reads this start's part of agent.log and says that sentence.
    tail = ("2026-12-01 10:00:00,000 INFO __main__: --- onlooker agent starting\n"
            f"2026-12-01 10:00:00,100 ERROR __main__: {line}\n")
    assert lifecycle._sentence_in(tail) == LIMIT
    assert lifecycle._sentence_in("2026-12-01 INFO __main__: watching\n") is None
