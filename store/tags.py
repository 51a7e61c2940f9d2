"""Tags and notes: what a person writes on runs (migration 5, and runs.note)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from .errors import NoSuchRun, StoreError

TAGS_SINCE = 5  # the schema version that made the tags table
_CHUNK = 500  # run ids per query: well under SQLite's bound-parameter limit


class BadTagName(StoreError):
    """A tag name that could be mistaken for another kind of run reference."""


def check_tag(name: str) -> str:
    """The tag name as stored, or BadTagName saying why it cannot be one.

    A tag names a run wherever a RUN is asked for, so it must not look like the other
    references (`12`, `last`, `-2`) nor split on the command line."""
    if not isinstance(name, str) or not name:
        raise BadTagName("a tag name cannot be empty")
    if any(ch.isspace() for ch in name):
        raise BadTagName(f"tag name {name!r} has whitespace: use - or _ instead")
    if name.isdigit():
        raise BadTagName(f"tag name {name!r} is all digits, which reads as a run id")
    if name == "last":
        raise BadTagName("'last' cannot be a tag: it already names the newest run")
    if name.startswith("-"):
        raise BadTagName(f"tag name {name!r} starts with '-', which reads as -N or an option")
    return name


class TagsMixin:
    """Catalog methods for tags (table `tags`) and notes (column runs.note)."""

    # Provided by Catalog.
    _execute: Any
    transaction: Any
    _snapshot: Any
    _conn: sqlite3.Connection
    path: Any
    schema_version: int

    def _has_tags(self) -> bool:
        # A read-only open accepts a catalog not yet migrated (schema.READABLE_FROM):
        # it has no tags yet.
        return self.schema_version >= TAGS_SINCE

    def _need_run(self, run_id: int) -> None:
        if self._execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise NoSuchRun(f"there is no run {run_id} in {self.path}")

    # ---- writes (people, through `onlooker tag` / `note`) --------------------------
    def tag(self, run_id: int, *names: str) -> list[str]:
        """Put tags on a run (ones it has already stay as they were); returns its tags."""
        checked = [check_tag(n) for n in names]
        now = time.time()
        with self.transaction():
            self._need_run(run_id)
            self._conn.executemany("INSERT OR IGNORE INTO tags (run_id, name, created_at)"
                                   " VALUES (?, ?, ?)", [(run_id, n, now) for n in checked])
        return self.tags_of(run_id)

    def untag(self, run_id: int, *names: str) -> list[str]:
        """Take tags off a run (a tag it does not have is no error); returns its tags."""
        with self.transaction():
            self._need_run(run_id)
            self._conn.executemany("DELETE FROM tags WHERE run_id = ? AND name = ?",
                                   [(run_id, n) for n in names])
        return self.tags_of(run_id)

    def set_note(self, run_id: int, text: str | None) -> str | None:
        """Replace the run's note (one per run); empty text or None removes it."""
        text = None if text is None else text.strip() or None
        with self.transaction():
            cur = self._execute("UPDATE runs SET note = ? WHERE id = ?", (text, run_id))
        if cur.rowcount == 0:
            raise NoSuchRun(f"there is no run {run_id} in {self.path}")
        return text

    # ---- reads -------------------------------------------------------------------
    def tags_of(self, run_id: int) -> list[str]:
        """The run's tags, sorted."""
        return self.tags_for([run_id]).get(int(run_id), [])

    def tags_for(self, run_ids: Sequence[int]) -> dict[int, list[str]]:
        """run id -> its tags, sorted; runs without tags are left out."""
        out: dict[int, list[str]] = {}
        if not self._has_tags():
            return out
        ids = list(dict.fromkeys(int(i) for i in run_ids))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for r in self._execute(f"SELECT run_id, name FROM tags WHERE run_id IN ({marks})"
                                   " ORDER BY run_id, name", chunk):
                out.setdefault(r[0], []).append(r[1])
        return out

    def note_of(self, run_id: int) -> str | None:
        """The run's note, None if it has none."""
        row = self._execute("SELECT note FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NoSuchRun(f"there is no run {run_id} in {self.path}")
        return row[0]

    def run_tagged(self, name: str) -> int | None:
        """The newest run (by start) carrying tag `name`, None if no run does."""
        if not self._has_tags():
            return None
        row = self._execute(
            "SELECT r.id FROM tags t JOIN runs r ON r.id = t.run_id WHERE t.name = ?"
            " ORDER BY r.started_at DESC, r.id DESC LIMIT 1", (name,)).fetchone()
        return None if row is None else int(row[0])

    def all_tags(self) -> dict[str, int]:
        """Every tag name -> how many runs carry it."""
        if not self._has_tags():
            return {}
        return {r[0]: r[1] for r in self._execute(
            "SELECT name, count(*) FROM tags GROUP BY name ORDER BY name")}
