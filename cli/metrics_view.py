"""How `show` and `metrics` present a run's metrics (final values and series)."""

from __future__ import annotations

from typing import Any

from onlooker.cli.output import section, table


def number_text(value: Any) -> str:
    """A metric value for people: 6 significant digits; NaN/inf as written."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _step(step: Any) -> str:
    if step is None:
        return "-"
    return str(int(step)) if float(step).is_integer() else f"{step:g}"


def final_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key, number_text(v)) for key, v in metrics.items() if not isinstance(v, dict)]


def series_rows(metrics: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for key, s in metrics.items():
        if not isinstance(s, dict):
            continue
        rows.append((key, number_text(s.get("last")), _step(s.get("last_step")),
                     number_text(s.get("min")), _step(s.get("min_step")),
                     number_text(s.get("max")), _step(s.get("max_step")),
                     str(s.get("count", "-")),
                     number_text(s["final"]) if "final" in s else ""))
    return rows


def metrics_table(metrics: dict[str, Any]) -> str:
    """Final values, then one line per series with its last, min and max and their steps."""
    parts = []
    finals = final_rows(metrics)
    if finals:
        parts.append(table(None, finals))
    series = series_rows(metrics)
    if series:
        headers = ["SERIES", "LAST", "@STEP", "MIN", "@STEP", "MAX", "@STEP", "N", "FINAL"]
        if not any(r[-1] for r in series):
            headers.pop()
            series = [r[:-1] for r in series]
        parts.append(table(headers, series))
    return "\n\n".join(parts)


def metrics_sections(run: dict[str, Any]) -> list[str]:
    """Sections for `show`; none when the run has no metrics."""
    metrics = run.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return []
    return [section("metrics", metrics_table(metrics))]
