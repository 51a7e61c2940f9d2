"""`onlooker stop`: stop the background agent once it has committed what it saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from onlooker.agent import lifecycle, service
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import emit, note


def backlog_text(backlog: Any) -> str:
    """{"hash": 12, "events": 3} -> "hash 12, events 3" (only the non-zero numbers)."""
    if not isinstance(backlog, dict):
        return ""
    parts = [f"{k} {v}" for k, v in backlog.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and v]
    return ", ".join(parts)


def stop_agent(project: Path, *, timeout: float = 600.0) -> bool:
    """lifecycle.stop with progress lines on stderr while the agent commits."""
    shown = {"last": ""}

    def progress(agent_json: dict[str, Any]) -> None:
        text = backlog_text(agent_json.get("backlog"))
        line = f"committing: {text} left" if text else "committing ..."
        if line != shown["last"]:
            shown["last"] = line
            note(line)

    return lifecycle.stop(project, timeout=timeout, progress=progress)


@click.command()
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds to wait for the agent to commit and exit.")
@pass_state
def stop(state: AppState, timeout: float) -> None:
    """Stop the agent; it first commits every run and file it saw.

    When no agent is running this says so on stderr and exits 0.
    """
    project = state.project()
    if service.stop_for(project):  # the service ran it: it commits, then is unregistered
        note("the onlooker service no longer watches this project ('onlooker start' "
             "registers it again)")
    elif not stop_agent(project, timeout=timeout):
        note("the agent is not running")
        return
    with state.catalog() as catalog:
        counts = catalog.counts()
    runs = counts.get("runs") if isinstance(counts, dict) else None
    emit(f"stopped; {runs if runs is not None else '?'} run{'' if runs == 1 else 's'}"
         " in the catalog")
