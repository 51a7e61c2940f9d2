"""`onlooker doctor [--fix]`: check the catalog and the object store, and repair what can
be repaired (agent/doctor.py does the work)."""

from __future__ import annotations

import sys

import click

from onlooker.agent.errors import AgentError
from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import CliError, emit, emit_json, json_option, note, table
from onlooker.store.errors import StoreError


class _Progress:
    """`doctor: 1200/20000 objects` on one stderr line, for a terminal."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if total < 2000 or (done % 500 and done != total):
            return
        self.shown = True
        sys.stderr.write(f"\rdoctor: {done}/{total} objects")
        sys.stderr.flush()

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def render(report: dict) -> str:
    rows = []
    for c in report["checks"]:
        status = c["status"] + (" (fixed)" if c["fixed"] else "")
        text = c["message"] + (f"; {c['fix']}" if c["fix"] and not c["fixed"] else "")
        rows.append((c["name"], status, text))
    return table(("CHECK", "STATUS", "WHAT"), rows)


@click.command()
@click.option("--fix", is_flag=True,
              help="Repair what can be: rebuild a damaged catalog (keeping the damaged "
                   "file), put back or mark lost objects, remove old temporary files. "
                   "Needs the agent stopped.")
@click.option("--quick", is_flag=True,
              help="Check that every stored object is there without hashing its bytes.")
@json_option
@pass_state
def doctor(state: AppState, fix: bool, quick: bool, as_json: bool) -> None:
    """Check the project's catalog (SQLite's integrity check) and object store (every
    stored version there and, unless --quick, hashing to its name); say what is wrong
    and how to repair it. Exit 0 when nothing is in error, 1 otherwise."""
    from onlooker.agent.doctor import doctor as do_doctor

    progress = _Progress() if sys.stderr.isatty() and not as_json else None
    try:
        report = do_doctor(state.project(), fix=fix, verify=not quick, on_progress=progress)
    except (AgentError, StoreError) as err:
        raise CliError(str(err)) from err
    finally:
        if progress is not None:
            progress.end()
    if as_json:
        emit_json(report)
    else:
        emit(render(report))
    if not report["ok"]:
        raise CliError("the project has problems" + ("" if fix else ": --fix repairs what"
                                                     " it can"))
    if not as_json:
        note("no problems found" if all(c["status"] == "ok" for c in report["checks"])
             else "no errors; see the warnings above")
