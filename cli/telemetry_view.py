"""How `show` presents a run's telemetry summary."""

from __future__ import annotations

from typing import Any


def telemetry_sections(run: dict[str, Any]) -> list[str]:
    """Sections for `show`; none when the run has no telemetry."""
    return []
