"""Domain errors of the store: each carries one sentence a person can act on."""

from __future__ import annotations

import os
import sqlite3


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotInitialized(StoreError):
    """No onlooker project (no `.onlooker/catalog.db`) where one was expected."""


class NoSuchRun(StoreError):
    """The catalog has no run with that id."""


class CatalogCorrupt(StoreError):
    """The catalog file is not a usable SQLite database."""


class SchemaTooNew(StoreError):
    """The catalog was written by a newer onlooker than this one."""


class SchemaTooOld(StoreError):
    """A read-only open found a catalog that still needs a migration."""


class MissingObject(StoreError):
    """The object store has no blob with that hash."""


class HashError(StoreError):
    """A file could not be hashed; `path` names it."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class NotAFile(HashError):
    """The path is a FIFO, socket, device, directory or symlink, not a regular file."""


class FileVanished(HashError):
    """The path disappeared before or while it was hashed."""


class Unreadable(HashError):
    """The file exists but cannot be read (permissions, I/O error)."""


class ChangedWhileHashing(HashError):
    """The file changed between the stat before and the stat after hashing."""


class OpenForWriting(ChangedWhileHashing):
    """A process holds the file open for writing: its content may be half written."""


_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def sqlite_error(err: sqlite3.Error, path: os.PathLike[str] | str) -> StoreError:
    """The StoreError a failed SQLite call on the catalog at `path` is to the user: a
    damaged file is CatalogCorrupt, with the remedy."""
    code = getattr(err, "sqlite_errorcode", None)
    text = str(err)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "not a database" in text or "malformed" in text:
        return CatalogCorrupt(f"{path} is not a usable onlooker catalog ({text}):"
                              " `onlooker doctor --fix` rebuilds it from what is readable")
    return StoreError(f"cannot use the catalog at {path}: {text}")
