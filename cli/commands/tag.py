"""`onlooker tag RUN NAME...` and `onlooker note RUN TEXT`: what a person writes on runs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state, run_ref_id
from onlooker.cli.output import EXIT_USAGE, CliError, emit, emit_json, json_option, note
from onlooker.store.errors import StoreError

TAGS_HEADER = "TAGS"


# -- rendering, shared with `show` and `runs` ------------------------------------------------


def tags_text(run: dict[str, Any]) -> str:
    """A run's tags for a table cell: `baseline,best`, or "" when it has none."""
    return ",".join(str(t) for t in run.get("tags") or ())


def any_tagged(runs: Iterable[dict[str, Any]]) -> bool:
    """Whether a runs table needs a TAGS column: only when a shown run has a tag."""
    return any(run.get("tags") for run in runs)


def tag_rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the top of `show`: tags, then the note (each of its lines), if any."""
    rows: list[tuple[str, str]] = []
    if run.get("tags"):
        rows.append(("tags", ", ".join(str(t) for t in run["tags"])))
    text = run.get("note")
    if text:
        for i, line in enumerate(str(text).splitlines() or [""]):
            rows.append(("note" if i == 0 else "", line))
    return rows


# -- commands --------------------------------------------------------------------------------


def _store_call(func: Any, *args: Any) -> Any:
    from onlooker.store.tags import BadTagName

    try:
        return func(*args)
    except BadTagName as err:
        raise CliError(str(err), exit_code=EXIT_USAGE) from err


def _summary(run_id: int, tags: list[str], text: str | None) -> dict[str, Any]:
    return {"id": run_id, "tags": tags, "note": text}


@click.command(context_settings={"ignore_unknown_options": True})
@json_option
@click.option("--rm", "remove", is_flag=True, help="Take the tags off the run instead.")
@click.argument("run_ref", metavar="RUN")
@click.argument("names", metavar="NAME...", nargs=-1)
@pass_state
def tag(state: AppState, as_json: bool, remove: bool, run_ref: str,
        names: tuple[str, ...]) -> None:
    """Put tags on a run (--rm: take them off); without NAME, print its tags.

    RUN is an id, 'last' / -N, or a tag (the newest run carrying it). A tag names a
    run everywhere a RUN is asked for: `onlooker show baseline`. Names have no
    whitespace, are not all digits, not 'last', and do not start with '-'.
    """
    if remove and not names:
        raise click.UsageError("--rm needs the tag names to take off")
    if names and any(n.startswith("-") for n in names):
        bad = next(n for n in names if n.startswith("-"))
        raise CliError(f"tag name {bad!r} starts with '-', which reads as -N or an option",
                       exit_code=EXIT_USAGE)
    opener = AppState.writable_catalog if names else AppState.catalog
    with opener(state) as catalog:
        run_id = run_ref_id(catalog, run_ref)
        if not names:
            tags = catalog.tags_of(run_id)
        elif remove:
            missing = sorted(set(names) - set(catalog.tags_of(run_id)))
            tags = catalog.untag(run_id, *names)
            if missing:
                note(f"run {run_id} had no tag {', '.join(missing)}")
        else:
            tags = _store_call(catalog.tag, run_id, *names)
        text = catalog.note_of(run_id)
    if as_json:
        emit_json(_summary(run_id, tags, text))
    elif not names:
        if tags:
            emit("\n".join(tags))
        else:
            note(f"run {run_id} has no tags")
    else:
        note(f"run {run_id}: " + (f"tags {', '.join(tags)}" if tags else "no tags"))


@click.command("note", context_settings={"ignore_unknown_options": True})
@json_option
@click.argument("run_ref", metavar="RUN")
@click.argument("words", metavar="TEXT...", nargs=-1)
@pass_state
def note_command(state: AppState, as_json: bool, run_ref: str, words: tuple[str, ...]) -> None:
    """Write a note on a run (one per run; a new note replaces the old one).

    The words of TEXT are joined by spaces; `-` reads the note from stdin (several
    lines); an empty TEXT ("") removes the note. Without TEXT, print the note.
    """
    if words == ("-",):
        words = (sys.stdin.read(),)
    opener = AppState.writable_catalog if words else AppState.catalog
    with opener(state) as catalog:
        run_id = run_ref_id(catalog, run_ref)
        if words:
            try:
                text = catalog.set_note(run_id, " ".join(words))
            except StoreError as err:
                raise CliError(str(err)) from err
        else:
            text = catalog.note_of(run_id)
        tags = catalog.tags_of(run_id)
    if as_json:
        emit_json(_summary(run_id, tags, text))
    elif not words:
        if text:
            emit(text)
        else:
            note(f"run {run_id} has no note")
    else:
        note(f"run {run_id}: " + ("note saved" if text else "note removed"))

