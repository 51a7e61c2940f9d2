"""sqlite-utils without pandas and numpy.

sqlite_utils.db imports pandas and numpy at import time, for inserting DataFrames,
which onlooker never does: with pandas installed (common where onlooker is used) that
cost every CLI call about 0.8 s and the agent tens of MiB. Both are hidden while it
is imported, unless something already imported them.
"""

from __future__ import annotations

import sys

_HIDDEN = ("pandas", "numpy")

_hide = [name for name in _HIDDEN if name not in sys.modules]
for _name in _hide:
    sys.modules[_name] = None  # type: ignore[assignment]  # import now raises ImportError
try:
    import sqlite_utils
finally:
    for _name in _hide:
        if sys.modules.get(_name) is None:
            del sys.modules[_name]

__all__ = ["sqlite_utils"]
