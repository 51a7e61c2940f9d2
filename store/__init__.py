"""The catalog (SQLite) and the content-addressed object store; imports nothing of ours."""

from __future__ import annotations

from .catalog import CATALOG_NAME, OBJECTS_NAME, STORE_DIR, Catalog
from .errors import (
    CatalogCorrupt,
    ChangedWhileHashing,
    FileVanished,
    HashError,
    MissingObject,
    NoSuchRun,
    NotAFile,
    NotInitialized,
    SchemaTooNew,
    SchemaTooOld,
    StoreError,
    Unreadable,
)
from .objects import HashResult, ObjectStore, hash_bytes, hash_file

__all__ = [
    "CATALOG_NAME", "OBJECTS_NAME", "STORE_DIR", "Catalog", "CatalogCorrupt",
    "ChangedWhileHashing", "FileVanished", "HashError", "HashResult", "MissingObject",
    "NoSuchRun", "NotAFile", "NotInitialized", "ObjectStore", "SchemaTooNew", "SchemaTooOld",
    "StoreError", "Unreadable", "hash_bytes", "hash_file",
]
