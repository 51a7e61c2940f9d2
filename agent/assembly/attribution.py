"""Which run a file event without a pid belongs to, when several were alive then.

The unprivileged tier sees a file event with no process: the candidates are the runs
alive at its time (`FileSide._pidless_candidates`). When there are several, these
rules are tried in order; the first that names exactly one run decides, with the basis
it gives. None deciding, the event is nobody's (counted as unattributed): onlooker
records a change with no run rather than guess.

Each rule is a pure function of the candidates and the evidence, tested alone
(tests/agent/test_attribution.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from onlooker.agent.assembly.model import Proc, Run


@dataclass(frozen=True)
class Evidence:
    """What is known of one pid-less file event besides its time."""

    t: float  # when the agent saw it (agent clock)
    path: str  # the file, as the run names it (a .pyc read stands for its source)
    holders: Mapping[int, Proc]  # run id -> a process of it seen holding the file open


# A rule: the one run it names, or None.
Rule = Callable[[list[Run], Evidence], "Run | None"]


def sequential_pipeline(cands: list[Run], ev: Evidence) -> Run | None:
    """Polling sees an end late: a run that may have ended already loses to the one run
    surely alive then, if every other was last seen alive before that one started."""
    sure = [r for r in cands if r.surely_alive_at(ev.t)]
    if len(sure) == 1 and all(
            r is sure[0] or (r.ended_after is not None and r.ended_after < sure[0].started)
            for r in cands):
        return sure[0]
    return None


def held_open(cands: list[Run], ev: Evidence) -> Run | None:
    """fd sampling saw one of the candidates' processes holding the file."""
    found = [r for r in cands if r.db_id in ev.holders]
    return found[0] if len(found) == 1 else None


def named_in_argv(cands: list[Run], ev: Evidence) -> Run | None:
    """Exactly one candidate names the file (or a folder above it) on its command line."""
    found = [r for r in cands if named(ev.path, r.argv_paths)]
    return found[0] if len(found) == 1 else None


def stream_marker(cands: list[Run], ev: Evidence) -> Run | None:
    """All but the run that showed itself last in the event stream (its script's open)
    have ended, showed themselves earlier, and were last alive before it started: a
    sequential pipeline whose ends polling saw late."""
    latest = max(cands, key=lambda r: r.marker)
    if all(r is latest or (r.ended_at is not None and r.marker < latest.marker
                           and r.last_alive() < latest.started + 0.011)
           for r in cands):
        return latest
    return None


# In order, with the basis each gives (records.BASES).
RULES: tuple[tuple[str, Rule], ...] = (
    ("window", sequential_pipeline),
    ("fd", held_open),
    ("argv", named_in_argv),
    ("window", stream_marker),
)


def decide(cands: list[Run], ev: Evidence) -> tuple[Run, str] | None:
    """The run of several candidates the first deciding rule names, and its basis."""
    for basis, rule in RULES:
        run = rule(cands, ev)
        if run is not None:
            return run, basis
    return None


def named(path: str, argv_paths: set[str]) -> bool:
    """Whether `path` is one of `argv_paths` or lies in a folder among them."""
    return path in argv_paths or any(path.startswith(p.rstrip("/") + "/") for p in argv_paths)
