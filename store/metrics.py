"""Metrics in the catalog: final values and series read from the files runs wrote."""

from __future__ import annotations

from typing import Any


class MetricsMixin:
    """Catalog methods for the `metrics` table (migration 3)."""

    def metrics_of(self, run_id: int) -> dict[str, Any]:
        return {}

    def metrics_for(self, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        return {}
