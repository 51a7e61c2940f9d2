"""Telemetry in the catalog: per-run samples, downsampling, series and summaries."""

from __future__ import annotations

from typing import Any


class TelemetryMixin:
    """Catalog methods for the `telemetry` table (migration 2)."""

    def telemetry_summary(self, run_id: int) -> dict[str, Any] | None:
        return None

    def telemetry_summaries(self, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        return {}
