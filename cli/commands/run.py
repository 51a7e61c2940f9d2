"""`onlooker run -- CMD ...`: the optional launcher (see agent/launcher.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from onlooker.agent import config, launcher, lifecycle
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import CliError

log = logging.getLogger(__name__)
STOP_WAIT = 60.0  # past this the agent finishes committing on its own


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--no-agent", is_flag=True,
              help="Do not start a capture when no agent runs (only keep the log and status).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_state
def run(state: AppState, no_agent: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND in the foreground exactly as without onlooker, keeping its output as the
    run's log and its exact exit status; starts a capture of its own if no agent runs.

    Example: onlooker run -- python train.py --lr 0.1
    """
    project = state.project()
    try:
        config.load(project)
    except config.ConfigError as err:
        # The command still runs: onlooker must never be why it did not.
        log.warning("no capture for this run: %s", err)
        no_agent = True
    store_dir = lifecycle.store_dir_of(project)
    started_agent = False
    if not no_agent and lifecycle.running_pid(store_dir) is None:
        try:
            lifecycle.start(project)
            started_agent = True
        except lifecycle.AlreadyRunning:
            pass
        except lifecycle.LifecycleError as err:
            # The command still runs: onlooker must never be why it did not.
            log.warning("no capture for this run: %s", err)
    try:
        outcome = launcher.run(list(command), project=project, store_dir=store_dir)
    except launcher.LaunchError as err:
        raise CliError(str(err), exit_code=127) from err
    finally:
        if started_agent:
            _stop_agent(project, store_dir)
    launcher.exit_like(outcome)


def _stop_agent(project: Path, store_dir: Path) -> None:
    if launcher.live_launchers(store_dir):
        log.info("another 'onlooker run' still uses the agent; leaving it running")
        return
    try:
        lifecycle.stop(project, timeout=STOP_WAIT)
    except lifecycle.StopTimeout:
        log.info("the agent goes on committing in the background")
    except lifecycle.LifecycleError as err:
        log.warning("cannot stop the agent started for this run: %s", err)
