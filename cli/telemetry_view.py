"""How `show` presents a run's telemetry summary."""

from __future__ import annotations

from typing import Any

from onlooker.cli.output import human_duration, human_size, section, table


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}%"


def summary_rows(tele: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines for a telemetry summary dict (store/telemetry.py)."""
    rows = [
        ("samples", f"{tele.get('samples') or 0} over {human_duration(tele.get('duration'))}"),
        ("cpu", f"{human_duration(tele.get('cpu_seconds'))} CPU time, mean "
                f"{_pct(tele.get('cpu_pct_mean'))}, peak {_pct(tele.get('cpu_pct_peak'))}"
                " (100% = one core)"),
        ("memory", f"peak RSS {human_size(tele.get('rss_peak'))}"),
        ("io", f"read {human_size(tele.get('read_bytes'))}, "
               f"wrote {human_size(tele.get('write_bytes'))}"),
    ]
    for dev, gpu in (tele.get("gpus") or {}).items():
        if not isinstance(gpu, dict):
            continue
        own = _pct(gpu.get("util_mean")) if gpu.get("util_mean") is not None else "n/a"
        text = f"peak {human_size(gpu.get('mem_peak'))}, mean util {own}"
        if gpu.get("device_util_mean") is not None:
            text += f" (whole device {_pct(gpu.get('device_util_mean'))})"
        rows.append((f"gpu {dev}", text))
    if tele.get("gpu_hours") is not None:
        rows.append(("gpu-hours", f"{float(tele['gpu_hours']):.3f}"))
    return rows


def telemetry_sections(run: dict[str, Any]) -> list[str]:
    """Sections for `show`; none when the run has no telemetry."""
    tele = run.get("telemetry")
    if not isinstance(tele, dict) or not tele.get("samples"):
        return []
    return [section("telemetry", table(None, summary_rows(tele)))]
