"""`onlooker start`: run the agent in the background for this project."""

from __future__ import annotations

import click

from onlooker.agent import config, lifecycle, service
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import emit, note


@click.command()
@pass_state
def start(state: AppState) -> None:
    """Start the agent in the background; it watches until 'onlooker stop'."""
    project = state.project()
    config.load(project)  # a bad config is reported before anything else is said
    served = service.start_for(project)  # None: no service for it, the agent runs as you
    if served is not None:
        emit(service.watching_line(served))
        return
    note(f"starting the agent for {project} ...")
    pid = lifecycle.start(project)
    tiers = lifecycle.status(project).get("tiers") or {}
    emit(
        f"onlooker is watching {project} (pid {pid}; process tier: {tier_name(tiers, 'process')},"
        f" files tier: {tier_name(tiers, 'files')})"
    )


def tier_name(tiers: dict, which: str) -> str:
    tier = tiers.get(which)
    if isinstance(tier, dict):
        return str(tier.get("name") or "?")
    return "?"
