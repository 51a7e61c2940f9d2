"""`onlooker status`: is the agent watching, with which tiers, and what it holds."""

from __future__ import annotations

from typing import Any

import click

from onlooker.agent import config, lifecycle, service
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.commands.stop import backlog_text
from onlooker.cli.output import (
    emit,
    emit_json,
    human_duration,
    human_size,
    json_option,
    table,
)


def gather(state: AppState) -> dict[str, Any]:
    """lifecycle.status plus the catalog's counts (`catalog`)."""
    project = state.project()
    config.load(project)  # a broken config is the first thing a person must hear
    out = lifecycle.status(project)
    out["service"] = service.registration(project)  # None: the service does not run it
    with state.catalog() as catalog:
        out["catalog"] = catalog.counts()
    return out


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def render_backlog(backlog: Any) -> str:
    """"1,204 files to hash (at least 3.1 MiB), 12 events queued, scanning" or "none"."""
    if not isinstance(backlog, dict):
        return "none"
    parts = []
    files, size = backlog.get("hashing"), backlog.get("hash_bytes")
    if _num(files) and files:
        text = f"{files:,} file{'s' if files != 1 else ''} to hash"
        if _num(size) and size:
            text += f" (at least {human_size(int(size))})"
        parts.append(text)
    for key, label in (("queue", "events queued"),
                       ("pending_events", "events in the grace window")):
        if _num(backlog.get(key)) and backlog[key]:
            parts.append(f"{backlog[key]:,} {label}")
    if backlog.get("scanning") is True:
        parts.append("scanning")
    known = {"hashing", "hash_bytes", "queue", "pending_events", "scanning"}
    rest = backlog_text({k: v for k, v in backlog.items() if k not in known})
    if rest:
        parts.append(rest)
    return ", ".join(parts) or "none"


def render_bulk(bulk: Any) -> str | None:
    """"bulk process 1234 at CPU idle, IO idle" (None when the agent did not say)."""
    if not isinstance(bulk, dict) or not bulk:
        return None
    where = bulk.get("where", "?")
    if bulk.get("pid"):
        where += f" {bulk['pid']}"
    return f"{where} at CPU {bulk.get('cpu', '?')}, IO {bulk.get('io', '?')}"


def render_status(st: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [("project", st["project"])]
    if st["running"]:
        agent = f"{st['state']} (pid {st['pid']}"
        if st.get("uptime") is not None:
            agent += f", up {human_duration(st['uptime'])}"
        agent += ")"
        if st.get("responsive") is False:
            agent += f"; not heard from for {human_duration(st['last_seen'])}: it may be stuck"
    elif st.get("last_seen") is not None and st.get("last_state") == "stopped":
        agent = f"not running (stopped {human_duration(st['last_seen'])} ago)"
    elif st.get("last_seen") is not None:
        agent = (f"not running (last seen {human_duration(st['last_seen'])} ago; "
                 "it did not stop cleanly, see the log)")
    else:
        agent = "not running (never started here)"
    rows.append(("agent", agent))
    if st.get("service"):
        rows.append(("service", f"the onlooker service runs it: {service.describe(st['service'])}"))
    for which in ("process", "files", "gpu"):
        tier = (st.get("tiers") or {}).get(which)
        if isinstance(tier, dict):
            why = f" ({tier['why']})" if tier.get("why") else ""
            rows.append((f"{which} tier", f"{tier.get('name', '?')}{why}"))
    counts = st.get("catalog") or {}
    if isinstance(counts, dict) and counts:
        rows.append(("catalog", ", ".join(f"{k} {v}" for k, v in counts.items())))
    if st["running"]:
        rows.append(("backlog", render_backlog(st.get("backlog"))))
        bulk = render_bulk(st.get("bulk"))
        if bulk is not None:
            rows.append(("hashing", bulk))
    rows.append(("log", st["log"]))
    return table(None, rows)


@click.command()
@json_option
@pass_state
def status(state: AppState, as_json: bool) -> None:
    """Show the agent's state, capture tiers (and why), counts and backlog.

    Exits 0 whether or not the agent runs; 1 when the folder is not instrumented or
    its config cannot be used.
    """
    st = gather(state)
    if as_json:
        emit_json(st)
    else:
        emit(render_status(st))
