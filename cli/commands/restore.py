"""`onlooker restore RUN [PATH...]` and `onlooker restore PATH@HASH`: the exact versions
a run read or wrote, back from the object store, each checked by hash as it is written."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.output import (
    EXIT_USAGE,
    CliError,
    emit,
    emit_json,
    human_size,
    json_option,
    note,
    short_hash,
    table,
)
from onlooker.store.errors import NoSuchRun, StoreError

# Restores at least this big show progress on a terminal.
_PROGRESS_BYTES = 64 * 1024 * 1024
_PROGRESS_FILES = 500
_HASH_TAIL = re.compile(r"(?:blake3:)?[0-9a-fA-F]+")
_VERBS = {"restored": "restored", "would_restore": "would restore", "unchanged": "unchanged",
          "skipped": "skipped", "refused": "refused", "failed": "failed"}


def split_version(text: str) -> tuple[str, str] | None:
    """`PATH@HASH` -> (PATH, HASH); None when the text is no such form (a run)."""
    head, at, tail = text.rpartition("@")
    if at and head and _HASH_TAIL.fullmatch(tail):
        return head, tail
    return None


class _Progress:
    """`restore: 120/20000 files, 1.2 GiB/3.0 GiB` on one stderr line, for a terminal."""

    def __init__(self) -> None:
        self.shown = False
        self.last = -1

    def __call__(self, done: int, total: int, done_bytes: int, total_bytes: int) -> None:
        if total_bytes < _PROGRESS_BYTES and total < _PROGRESS_FILES:
            return
        pct = int(100 * done_bytes / total_bytes) if total_bytes else int(100 * done / total)
        if pct == self.last:
            return
        self.last = pct
        self.shown = True
        sys.stderr.write(f"\rrestore: {done}/{total} files, {human_size(done_bytes)}/"
                         f"{human_size(total_bytes)} ({pct}%)")
        sys.stderr.flush()

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def summary(report: dict[str, Any]) -> str:
    """One line: what happened to how many files."""
    counts = report["counts"]
    parts = [f"{n} {_VERBS[s]}" for s, n in counts.items() if n]
    what = ", ".join(parts) or "no files"
    size = f" ({human_size(report['bytes_written'])} written)" if report["bytes_written"] else ""
    where = report["target"]
    return f"{what}{size} into {where}" + (" (dry run: nothing written)"
                                           if report["dry_run"] else "")


def render(report: dict[str, Any]) -> str:
    rows = []
    for f in report["files"]:
        why = f.get("reason") or ""
        rows.append((_VERBS[f["status"]], f["role"], f["path"], human_size(f.get("size")),
                     short_hash(f["hash"]), why))
    if not rows:
        return "(no files)"
    return table(("STATUS", "ROLE", "PATH", "SIZE", "HASH", "WHY"), rows)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", metavar="RUN|PATH@HASH")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--inputs", "want", flag_value="inputs", multiple=True,
              help="Restore the files the run read.")
@click.option("--outputs", "want", flag_value="outputs", multiple=True,
              help="Restore the files the run wrote.")
@click.option("--code", "want", flag_value="code", multiple=True,
              help="Restore the code files the run ran.")
@click.option("--all", "want", flag_value="all", multiple=True,
              help="Inputs, outputs and code (the default). Tools' files (meta) are restored "
                   "only when a PATH names them.")
@click.option("--to", "to", metavar="DIR", type=click.Path(file_okay=False),
              help="Restore into DIR, with the project's layout (files from outside the "
                   "project go under DIR/_outside/), instead of the project itself.")
@click.option("--force", is_flag=True,
              help="Overwrite files whose content onlooker never recorded.")
@click.option("--dry-run", is_flag=True, help="Say what would be done; write nothing.")
@json_option
@pass_state
def restore(state: AppState, target: str, paths: tuple[str, ...], want: tuple[str, ...],
            to: str | None, force: bool, dry_run: bool, as_json: bool) -> None:
    """Write back, byte for byte, the files RUN read or wrote (or one version of one
    file: PATH@HASH), each checked against its recorded BLAKE3 hash as it is written.

    RUN is an id, 'last', -N for the Nth newest, or a tag; PATHs (files or folders) pick
    some of its files. A file holding content onlooker never recorded is refused unless
    --force; one already right is left alone. Exits 1 when any file was refused, skipped
    (only referenced: its bytes were never kept) or failed."""
    for p in paths:
        if p.startswith("-"):
            raise click.UsageError(f"no such option: {p}")
    roles = _roles(want)
    cwd = str(state.start_dir())
    version = split_version(target)
    progress = _Progress() if sys.stderr.isatty() and not as_json else None
    with state.catalog() as catalog:
        try:
            if version is not None and not _is_run(catalog, target):
                if paths or want:
                    raise click.UsageError("PATH@HASH restores one file: give no other PATH"
                                           " or role with it")
                path, digits = version
                report = catalog.restore_version(_abs(path, cwd), digits, to=to, force=force,
                                                 dry_run=dry_run)
            else:
                report = catalog.restore(
                    target, paths=[_abs(p, cwd) for p in paths] or None, roles=roles, to=to,
                    force=force, dry_run=dry_run, on_progress=progress)
        except NoSuchRun as err:
            raise CliError(str(err), exit_code=EXIT_USAGE) from err
        except StoreError as err:
            from onlooker.store.restore import VersionNotFound

            usage = isinstance(err, VersionNotFound) or "has no file at" in str(err)
            raise CliError(str(err), exit_code=EXIT_USAGE if usage else 1) from err
        finally:
            if progress is not None:
                progress.end()
    if as_json:
        emit_json(report)
    else:
        emit(render(report))
        note(summary(report))
    if not report["ok"]:
        bad = {s: report["counts"][s] for s in ("refused", "skipped", "failed")
               if report["counts"][s]}
        raise CliError("not everything was restored: " + ", ".join(
            f"{n} {s}" for s, n in bad.items()) + (" (--force overwrites what was refused)"
                                                   if bad.get("refused") else ""))


def _roles(want: tuple[str, ...]) -> tuple[str, ...]:
    if not want or "all" in want:
        return ("inputs", "outputs", "code")
    return tuple(dict.fromkeys(want))


def _abs(path: str, cwd: str) -> str:
    return path if os.path.isabs(path) else os.path.join(cwd, path)


def _is_run(catalog: Any, text: str) -> bool:
    """A tag may hold an `@`: a run ref that resolves wins over PATH@HASH."""
    try:
        catalog.resolve_run(text)
    except StoreError:
        return False
    return True
