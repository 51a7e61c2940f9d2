"""Map compiled Python files back to the source a run actually executed."""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger(__name__)

# mod.cpython-311.pyc, mod.cpython-311.opt-1.pyc, mod.pypy39.pyc
_CACHED = re.compile(r"^(?P<mod>[^.]+)\.[A-Za-z]+-?\d+(?:\.opt-\d+)?\.pyc$")
# The import system writes bytecode to `NAME.pyc.<id>` and renames it into place.
_WRITING = re.compile(r"\.pyc\.\d+$")


def is_bytecode(name: str) -> bool:
    """A compiled Python file's name, or the temporary name it is written under."""
    return name.endswith(".pyc") or _WRITING.search(name) is not None


def source_for_pyc(path: str) -> str | None:
    """``pkg/__pycache__/mod.cpython-311.pyc`` -> ``pkg/mod.py`` when that source exists.

    A legacy ``pkg/mod.pyc`` beside its source maps to ``pkg/mod.py`` too. The result
    keeps the form of `path` (relative stays relative). None for anything else.
    """
    folder, name = os.path.split(path)
    name = _WRITING.sub(".pyc", name)
    if not name.endswith(".pyc"):
        return None
    if os.path.basename(folder) == "__pycache__":
        m = _CACHED.match(name)
        if not m:
            return None
        source = os.path.join(os.path.dirname(folder), m["mod"] + ".py")
    else:
        source = os.path.join(folder, name[:-1])
    try:
        return source if os.path.isfile(source) else None
    except (OSError, ValueError):  # an embedded NUL, an unreadable folder
        return None
