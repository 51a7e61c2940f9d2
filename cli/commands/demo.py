"""`onlooker demo`: generate a small ML project, watch its pipeline run, show the catalog."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from onlooker.agent import lifecycle
from onlooker.agent.config import instrument
from onlooker.cli import demo_project
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.commands.runs import render_runs
from onlooker.cli.commands.show import render_run
from onlooker.cli.commands.start import tier_name
from onlooker.cli.commands.stop import stop_agent
from onlooker.cli.output import CliError, emit, note

_STEPS = 6


def _say(step: int, text: str) -> None:
    note(click.style(f"[{step}/{_STEPS}] {text}", bold=True))


def _train_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    for run in runs:  # newest first: the last train run
        if any(str(arg).endswith("train.py") for arg in run.get("command") or ()):
            return run
    return None


def run_demo(project: Path) -> None:
    """Generate, instrument, watch the three stages run, stop, and print the catalog."""
    from onlooker.store.catalog import Catalog

    _say(1, f"generating a demo project in {project}")
    demo_project.generate(project)
    if demo_project.git_commit(project):
        note("      data/data.csv, params.yaml, src/{prepare,featurize,train}.py; git commit made")
    else:
        note("      data/data.csv, params.yaml, src/{prepare,featurize,train}.py (git not found)")
    _say(2, "onlooker init")
    instrument(project)
    _say(3, "onlooker start")
    pid = lifecycle.start(project)
    try:
        tiers = lifecycle.status(project).get("tiers") or {}
        note(f"      agent pid {pid}; process tier: {tier_name(tiers, 'process')}, "
             f"files tier: {tier_name(tiers, 'files')}")
        _say(4, "running the pipeline exactly as a person would (no wrapper, no code change)")
        for what, argv in demo_project.STAGES:
            note(f"      $ python {shlex.join(argv)}    # {what}")
            done = subprocess.run([sys.executable, *argv], cwd=project, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True)
            for line in (done.stdout + done.stderr).splitlines()[-5:]:
                note(f"        {line}")
            if done.returncode != 0:
                raise CliError(f"the demo stage '{shlex.join(argv)}' failed with exit status "
                               f"{done.returncode}")
    finally:
        _say(5, "onlooker stop (the agent commits everything it saw, then exits)")
        stop_agent(project)
    _say(6, "what the catalog holds: onlooker runs, then onlooker show on the train run")
    with Catalog.find(project) as catalog:
        runs = catalog.runs(limit=None)
        train = _train_run(runs)
        full = catalog.run(train["id"]) if train is not None else None
    if not runs:
        note("      the agent recorded no runs: see " + str(project / ".onlooker" / "agent.log"))
        return
    emit(render_runs(runs))
    if full is not None:
        emit("")
        emit(render_run(full))


@click.command()
@click.option("--keep", is_flag=True, help="Keep the generated project and print where it is.")
@pass_state
def demo(state: AppState, keep: bool) -> None:
    """Show onlooker at work on a generated three-stage ML pipeline in a temp folder."""
    root = Path(tempfile.mkdtemp(prefix="onlooker-demo-"))
    project = root / "demo-project"
    try:
        run_demo(project)
    finally:
        if keep:
            note(f"the demo project is kept in {project}; try: onlooker -C {project} show last")
        else:
            shutil.rmtree(root, ignore_errors=True)
