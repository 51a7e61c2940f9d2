"""`onlooker rm`, `gc` and `du`: remove runs, collect unneeded objects, see what runs hold.

Thin skins over store/manage.py (Catalog.remove_runs, gc, du)."""

from __future__ import annotations

import sys
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state, run_ref_id
from onlooker.cli.output import (
    EXIT_USAGE,
    CliError,
    emit,
    emit_json,
    human_size,
    json_option,
    note,
    table,
)


def _interactive() -> bool:
    """Whether there is a person at a terminal to ask (a function so tests can say yes)."""
    return sys.stdin.isatty()


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from onlooker.store.manage import BadDuration, duration_seconds

    try:
        return duration_seconds(value)
    except BadDuration as err:
        raise click.BadParameter(str(err)) from err


def _runs_text(ids: list[int]) -> str:
    return ("run " if len(ids) == 1 else "runs ") + ", ".join(str(i) for i in ids)


@click.command("rm", context_settings={"ignore_unknown_options": True})
@json_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@pass_state
def rm(state: AppState, as_json: bool, yes: bool, run_refs: tuple[str, ...]) -> None:
    """Remove runs from the catalog (their objects stay until `onlooker gc`).

    RUN is an id, 'last' / -N, or a tag. Asks first on a terminal; --yes skips the
    question (needed without a terminal). A run still running cannot be removed.
    """
    with state.writable_catalog() as catalog:
        ids = sorted({run_ref_id(catalog, ref) for ref in run_refs})
        if not yes:
            if not _interactive():
                raise CliError(f"refusing to remove {_runs_text(ids)} without confirmation:"
                               " pass --yes (there is no terminal to ask on)",
                               exit_code=EXIT_USAGE)
            if not click.confirm(f"Remove {_runs_text(ids)} from the catalog?", default=False,
                                 err=True):
                raise CliError("nothing removed")
        result = catalog.remove_runs(ids)
    if as_json:
        emit_json(result)
    else:
        its = "its" if len(result["removed"]) == 1 else "their"
        note(f"removed {_runs_text(result['removed'])}; {its} stored bytes stay until"
             " `onlooker gc`")


def _gc_lines(report: dict[str, Any]) -> list[str]:
    verb = "would free" if report["dry_run"] else "freed"
    lines = []
    if report["removed_runs"]:
        how = "would remove" if report["dry_run"] else "removed"
        lines.append(f"{how} {_runs_text(report['removed_runs'])}")
    freed, kept, young = report["freed"], report["kept"], report["young"]
    lines.append(f"{verb} {freed['objects']} objects ({human_size(freed['bytes'])})")
    lines.append(f"kept {kept['objects']} objects ({human_size(kept['bytes'])})")
    if young["objects"]:
        lines.append(f"kept {young['objects']} unreferenced objects younger than the grace"
                     f" period ({human_size(young['bytes'])})")
    return lines


@click.command("gc")
@json_option
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
@click.option("--older-than", metavar="AGE", callback=_duration,
              help="Also remove runs that started longer ago than AGE (30d, 12h, 90m).")
@click.option("--keep-tagged", is_flag=True,
              help="With --older-than, keep the old runs that carry a tag.")
@click.option("--grace", metavar="AGE", callback=_duration, default="1h", show_default=True,
              help="Never remove an object younger than AGE (the agent may be writing it).")
@pass_state
def gc(state: AppState, as_json: bool, dry_run: bool, older_than: float | None,
       keep_tagged: bool, grace: float) -> None:
    """Remove stored objects that no run needs any more.

    Kept: every version a run in the catalog read or wrote (inputs, outputs, code, tool
    files), each run's git diff, the content each file has now, and anything younger
    than --grace. With --older-than, the ended runs older than that are removed first
    (with --keep-tagged, untagged ones only). Safe while the agent runs.
    """
    if keep_tagged and older_than is None:
        raise click.UsageError("--keep-tagged only means something with --older-than")
    with state.writable_catalog() as catalog:
        report = catalog.gc(dry_run=dry_run, keep_tagged=keep_tagged, older_than=older_than,
                            grace=grace)
    if as_json:
        emit_json(report)
    else:
        emit("\n".join(_gc_lines(report)))


@click.command("du", context_settings={"ignore_unknown_options": True})
@json_option
@click.argument("run_refs", metavar="[RUN...]", nargs=-1)
@pass_state
def du(state: AppState, as_json: bool, run_refs: tuple[str, ...]) -> None:
    """Bytes each run holds in the object store, what removing it would free, and totals.

    STORED counts every stored object the run read or wrote (shared ones too); FREES
    what only it needs; NOT STORED the versions recorded by hash only (over the copy
    limit). Without RUN, every run.
    """
    with AppState.catalog(state) as catalog:
        ids = [run_ref_id(catalog, ref) for ref in run_refs] if run_refs else None
        result = catalog.du(ids)
    if as_json:
        emit_json(result)
        return
    rows = [(r["id"], r["objects"], human_size(r["bytes"]), human_size(r["frees"]["bytes"]),
             human_size(r["referenced_only"]["bytes"])) for r in result["runs"]]
    total = result["total"]
    if rows:
        emit(table(("RUN", "OBJECTS", "STORED", "FREES", "NOT STORED"), rows))
    emit(f"store: {total['objects']} objects, {human_size(total['bytes'])}; unreferenced"
         f" {total['unreferenced']['objects']} ({human_size(total['unreferenced']['bytes'])});"
         f" not stored {total['referenced_only']['versions']} versions"
         f" ({human_size(total['referenced_only']['bytes'])})")

