"""How `show` presents a run's metrics (final values and series)."""

from __future__ import annotations

from typing import Any


def metrics_sections(run: dict[str, Any]) -> list[str]:
    """Sections for `show`; none when the run has no metrics."""
    return []
