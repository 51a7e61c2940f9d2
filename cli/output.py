"""Rendering for people (tables, sizes, times) and programs (--json), and errors as one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_USAGE = 2


def json_option(func: F) -> F:
    """The one `--json` flag every read command has; passes `as_json` to the command."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print exact JSON (stable keys) instead of a table."
    )(func)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit(text: str) -> None:
    """Data for stdout."""
    click.echo(text)


def note(text: str) -> None:
    """A message for the person (stderr), never mixed into the data."""
    click.echo(text, err=True)


# -- errors ----------------------------------------------------------------------------------


class CliError(click.ClickException):
    """A failure shown as one sentence on stderr with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"onlooker: {self.format_message()}", err=True, file=file)


def _domain_errors() -> tuple[type[BaseException], ...]:
    # The agent's one root: every error it raises on purpose is a sentence to show.
    from onlooker.agent.errors import AgentError

    found: list[type[BaseException]] = [AgentError]
    try:
        from onlooker.store.errors import StoreError
    except ImportError:  # pragma: no cover - the store is always installed with us
        pass
    else:
        found.append(StoreError)
    return tuple(found)


def to_cli_error(err: BaseException) -> CliError | None:
    """The CliError for a domain error or OSError; None for anything else (a bug)."""
    if isinstance(err, CliError):
        return err
    if isinstance(err, _domain_errors()):
        return CliError(_one_line(str(err)) if not _multiline_ok(err) else str(err))
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return CliError(f"{where}{err.strerror or err}")
    return None


def _multiline_ok(err: BaseException) -> bool:
    # AgentFailed carries the agent's last log lines after its sentence, on purpose.
    from onlooker.agent.lifecycle import AgentFailed

    return isinstance(err, AgentFailed)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


# -- formatting ------------------------------------------------------------------------------


def terminal_width() -> int:
    return shutil.get_terminal_size((100, 24)).columns


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def local_time(iso: str | None) -> str:
    """An ISO 8601 UTC timestamp shown in the local zone, to the second."""
    if not iso:
        return "-"
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if when.tzinfo is None:
        return when.strftime("%Y-%m-%d %H:%M:%S")
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def short_hash(value: str | None, length: int = 12) -> str:
    """'blake3:<hex>' -> the first `length` hex digits."""
    if not value:
        return "-"
    return value.rpartition(":")[2][:length]


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def table(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[Any]],
    *,
    width: int | None = None,
    shrink: int | None = None,
) -> str:
    """Columns padded to fit (no header line when `headers` is None); column `shrink`
    is cut so each line fits in `width`."""
    cells = [["" if c is None else str(c) for c in r] for r in rows]
    if headers is not None:
        cells.insert(0, [str(h) for h in headers])
    if not cells:
        return ""
    ncols = len(cells[0])
    widths = [max(len(row[i]) for row in cells) for i in range(ncols)]
    if width is not None and shrink is not None:
        others = sum(w for i, w in enumerate(widths) if i != shrink) + 2 * (ncols - 1)
        floor = len(headers[shrink]) if headers is not None else 8
        widths[shrink] = max(floor, min(widths[shrink], width - others))
        for row in cells:
            row[shrink] = truncate(row[shrink], widths[shrink])
    lines = []
    for row in cells:
        padded = [c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def section(title: str, body: str) -> str:
    return f"{title}\n" + "\n".join(f"  {line}" if line else "" for line in body.splitlines())
