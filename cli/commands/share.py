"""`onlooker export RUN... -o FILE.tar` and `onlooker import FILE.tar`: runs to a colleague."""

from __future__ import annotations

from pathlib import Path
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
    local_time,
    note,
)
from onlooker.store import query


def _selected(catalog: Any, refs: tuple[str, ...], where: tuple[str, ...], since: str | None,
              every: bool) -> list[int]:
    if refs:
        return sorted({run_ref_id(catalog, ref) for ref in refs})
    try:
        found = catalog.query(list(where), since=since) if (where or since) else (
            catalog.runs() if every else [])
    except query.QueryError as err:
        raise CliError(str(err), exit_code=EXIT_USAGE) from err
    if not found:
        raise CliError("no runs match: nothing to export" if (where or since)
                       else "the catalog has no runs to export")
    running = [r["id"] for r in found if r["status"] == "running"]
    if running and len(running) < len(found):  # picked by a filter: export the ended ones
        note(f"leaving out {len(running)} run{'s' if len(running) != 1 else ''} still running"
             f" ({', '.join(map(str, sorted(running)))})")
        found = [r for r in found if r["status"] != "running"]
    return sorted(r["id"] for r in found)


@click.command("export", context_settings={"ignore_unknown_options": True})
@json_option
@click.option("-o", "--output", "out", metavar="FILE.tar", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The archive to write (replaced if it exists).")
@click.option("--where", "where", metavar="EXPR", multiple=True,
              help="Export the runs passing EXPR (the language of `runs --where`).")
@click.option("--since", metavar="WHEN", help="Export the runs started since WHEN (2d, a date).")
@click.option("--all", "every", is_flag=True, help="Export every run.")
@click.option("--include-secrets", is_flag=True,
              help="Also put in the stored copies whose text holds a credential (a "
                   "config's api_key, a token in a log), which are left out by default.")
@click.argument("refs", metavar="RUN...", nargs=-1)
@pass_state
def export_command(state: AppState, as_json: bool, out: Path, where: tuple[str, ...],
                   since: str | None, every: bool, include_secrets: bool,
                   refs: tuple[str, ...]) -> None:
    """Write runs and the files they need to one archive for another project.

    RUN is an id, 'last' / -N or a tag; or pick runs with --where / --since, or --all.
    The archive holds the runs' catalog rows and the bytes of every stored version
    they read or wrote; files larger than the copy limit go as references (their hash
    and size, no bytes), and so do copies whose text holds a credential (an api_key in a
    config, a token in a log: named on stderr) unless --include-secrets. `onlooker
    import FILE.tar` adds them to another project.
    """
    if sum(bool(x) for x in (refs, where or since, every)) != 1:
        raise CliError("give RUN..., or --where / --since, or --all (one of them)",
                       exit_code=EXIT_USAGE)
    with state.catalog() as catalog:
        ids = _selected(catalog, refs, where, since, every)
        got = catalog.export(ids, out, include_secrets=include_secrets)
    if as_json:
        emit_json({**got, "ids": ids})
        return
    extra = f"; {got['referenced']} large file{'s' if got['referenced'] != 1 else ''}" \
            " only referenced (no bytes)" if got["referenced"] else ""
    if got["missing"]:
        extra += f"; {got['missing']} object{'s' if got['missing'] != 1 else ''} missing from" \
                 " the store, exported as references"
    note(f"exported {got['runs']} run{'s' if got['runs'] != 1 else ''}, {got['objects']}"
         f" objects ({human_size(got['bytes'])}) to {got['path']}{extra}")
    if got["withheld"]:
        names = [f"{w['path'] or 'a git diff'} ({w['why']})" for w in got["withheld"]]
        note(f"left out {len(names)} file{'s' if len(names) != 1 else ''} holding a"
             f" credential, exported as references: {', '.join(names[:5])}"
             + (", ..." if len(names) > 5 else "") + " (--include-secrets puts them in)")


@click.command("import")
@json_option
@click.argument("archive", metavar="FILE.tar", type=click.Path(path_type=Path))
@pass_state
def import_command(state: AppState, as_json: bool, archive: Path) -> None:
    """Add the runs of an `onlooker export` archive to this project.

    Every object is checked against its BLAKE3 hash before anything is written; the
    runs go in in one transaction, so a damaged archive imports nothing. Runs already
    here (imported before) are left as they are; a run whose id is taken here gets a
    new one, and the mapping is printed.
    """
    with state.writable_catalog() as catalog:
        got = catalog.import_archive(archive)
    if as_json:
        emit_json(got)
        return
    where = f"{got['host']}:{got['project']}"
    note(f"imported {got['runs']} run{'s' if got['runs'] != 1 else ''}, {got['objects']}"
         f" objects ({human_size(got['bytes'])}) from {where}, exported"
         f" {local_time(got['exported_at'])}"
         + (f"; {got['present']} already here" if got["present"] else ""))
    for m in got["mapping"]:
        if not m["imported"]:
            emit(f"run {m['source_id']} -> {m['id']} (already here)")
        elif m["id"] != m["source_id"]:
            emit(f"run {m['source_id']} -> {m['id']} (renumbered: {m['source_id']} is taken)")
        else:
            emit(f"run {m['source_id']} -> {m['id']}")
