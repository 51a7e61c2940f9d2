"""Which run a file event without a pid belongs to, when several were alive then.

The unprivileged tier sees a file event with no process: the candidates are the runs
alive at its time (`FileSide._pidless_candidates`). When there are several, these
rules are tried in order; the first that names exactly one run decides, with the basis
it gives. None deciding, `share` says who has the file: a read that candidates were
seen reading (fd sampling) is theirs; otherwise each candidate gets it, with basis
`ambiguous` (counted as unattributed): shown as shared by the runs that may have done
it, never silently on one of them and never dropped. Such a write names no producer and
gives no metrics, such a read no params.

fd sightings of reads are counted: each (process, file) sighting stands for one open,
so it explains one close of that file after it (`Evidence.readers`). A close no sighting
is left for is not put down to the readers already seen: of eight runs reading one data
file at once, two seen holding it, two closes are those two's; a third close may be any
candidate's, so each of them has the file then (the two seen with `fd`).

Each rule is a pure function of the candidates and the evidence, tested alone
(tests/agent/test_attribution.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from onlooker.agent.assembly.model import Proc, Run


@dataclass(frozen=True)
class Evidence:
    """What is known of one pid-less file event besides its time."""

    t: float  # when the agent saw it (agent clock)
    path: str  # the file, as the run names it (a .pyc read stands for its source)
    holders: Mapping[int, Proc]  # run id -> a process of it seen holding the file open
    write: bool = False  # a close after writing, a creation or a rename into place
    # run id -> a process of it seen holding the file open read-only by `t` (the close
    # came after), that sighting not yet put down to an earlier close: reads only
    readers: Mapping[int, Proc] = field(default_factory=dict)
    # run id -> a process of it ever seen holding the file open read-only
    read_by: Mapping[int, Proc] = field(default_factory=dict)


AMBIGUOUS = "ambiguous"  # the basis of a file the candidates share (records.BASES)

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
    """fd sampling saw one of the candidates' processes holding the file (for a read:
    before the close, with that sighting not put down to another close yet)."""
    pool = ev.holders if ev.write else ev.readers
    found = [r for r in cands if r.db_id in pool]
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


def share(cands: list[Run], ev: Evidence) -> list[tuple[Run, str]]:
    """Who has a file no rule gave to one run, each with its basis: a read that several
    candidates were seen reading is theirs alone (each held it: `fd`; the close is one of
    theirs); otherwise every candidate, those ever seen reading it with `fd` (they did),
    the others `ambiguous`."""
    if not ev.write:
        readers = [r for r in cands if r.db_id in ev.readers]
        if readers:
            return [(r, "fd") for r in readers]
    return [(r, "fd" if not ev.write and r.db_id in ev.read_by else AMBIGUOUS)
            for r in cands]


def named(path: str, argv_paths: set[str]) -> bool:
    """Whether `path` is one of `argv_paths` or lies in a folder among them."""
    return path in argv_paths or any(path.startswith(p.rstrip("/") + "/") for p in argv_paths)
