"""`onlooker diff A B`: what differs between two runs, section by section, and why."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state, run_ref_id
from onlooker.cli.commands.runs import command_text
from onlooker.cli.metrics_view import number_text
from onlooker.cli.output import (
    emit,
    emit_json,
    human_duration,
    human_size,
    json_option,
    note,
    short_hash,
    terminal_width,
)

TITLES = {"command": "command", "params": "params", "metrics": "metrics", "code": "code",
          "environment": "environment", "inputs": "inputs", "outputs": "outputs",
          "telemetry": "telemetry"}
MARKS = {"changed": ("~", "yellow"), "added": ("+", "green"), "removed": ("-", "red"),
         "same": ("=", None)}
NONE = "(none)"
_SECONDS = {"duration", "cpu_seconds"}
_BYTES = {"rss_peak", "read_bytes", "write_bytes", "mem_peak", "memory_bytes"}
_PCT = {"cpu_pct_mean", "cpu_pct_peak", "util_mean", "device_util_mean"}


def _style(text: str, fg: str | None = None, bold: bool = False) -> str:
    # click.echo drops the colours when stdout is not a terminal
    return click.style(text, fg=fg, bold=bold or None) if fg or bold else text


def _plain(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return number_text(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _series(value: Any) -> str:
    if not isinstance(value, dict):
        return _plain(value)
    text = (f"last {number_text(value.get('last'))} (min {number_text(value.get('min'))},"
            f" max {number_text(value.get('max'))}, n {value.get('count', '-')})")
    return text + (f", final {number_text(value['final'])}" if "final" in value else "")


def _measure(key: str, value: Any, *, signed: bool = False) -> str:
    """A telemetry or environment figure in its unit."""
    if value is None:
        return NONE
    leaf = key.rpartition(".")[2]
    sign = "+" if signed and isinstance(value, (int, float)) and value > 0 else ""
    if leaf in _SECONDS:
        return sign + human_duration(value)
    if leaf in _BYTES:
        return sign + human_size(value)
    if leaf in _PCT:
        return f"{sign}{float(value):.0f}%"
    if leaf == "gpu_hours":
        return f"{sign}{float(value):.3f}"
    return sign + _plain(value) if signed else _plain(value)


def _file(hash: Any, size: Any) -> str:
    if hash is None:
        return NONE
    return f"{short_hash(hash)} ({human_size(size)})" if size is not None else short_hash(hash)


def _values(section: str, e: dict[str, Any]) -> str:
    """`old -> new` (and the delta) of one entry, as people read it."""
    key, old, new = e["key"], e["old"], e["new"]
    if section == "command" and key == "argv":
        pair = (command_text(old), command_text(new))
    elif section == "metrics":
        pair = (_series(old), _series(new))
    elif section in ("inputs", "outputs") or (section == "code" and not key.startswith("git.")):
        pair = (_file(old, e.get("old_size")), _file(new, e.get("new_size")))
    elif key == "git.commit":
        pair = (str(old)[:12] if old else NONE, str(new)[:12] if new else NONE)
    elif key == "git.diff":
        pair = tuple(NONE if h is None else f"{short_hash(h)} ({n} lines)" if n is not None
                     else short_hash(h) for h, n in ((old, e.get("old_lines")),
                                                     (new, e.get("new_lines"))))
    elif section in ("telemetry", "environment"):
        pair = (_measure(key, old), _measure(key, new))
    else:
        pair = (_plain(old), _plain(new))
    text = pair[0] if e["change"] == "same" else f"{pair[0]} -> {pair[1]}"
    delta = e.get("delta")
    if delta is not None and e["change"] == "changed":
        shown = _measure(key, delta, signed=True) if section == "telemetry" else _signed(delta)
        text += f"  ({shown})"
    return text


def _signed(value: Any) -> str:
    return f"{value:+.6g}" if isinstance(value, float) else f"{value:+d}"


def _diff_lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        colour = ("cyan" if line.startswith("@@") else None if line.startswith(("+++", "---"))
                  else "green" if line.startswith("+") else "red" if line.startswith("-")
                  else None)
        out.append("      " + _style(line, colour, bold=line.startswith(("+++", "---"))))
    return out


def render_section(name: str, entries: list[dict[str, Any]]) -> str:
    width = max((len(e["key"]) for e in entries), default=0)
    lines = [_style(TITLES.get(name, name), bold=True)]
    for e in entries:
        mark, colour = MARKS.get(e["change"], ("?", None))
        lines.append(f"  {_style(mark, colour)} {e['key'].ljust(width)}  {_values(name, e)}")
        if e.get("diff"):
            lines.extend(_diff_lines(e["diff"]))
        elif e.get("diff_note") and e["change"] == "changed":
            lines.append(f"      (no diff: {e['diff_note']})")
    if not entries:
        lines.append(f"  {NONE}")
    return "\n".join(lines)


def render_causes(causes: list[dict[str, Any]], width: int | None = None) -> str:
    width = max(40, (width or terminal_width()) - 2)
    lines = [_style("causes (most upstream first)", bold=True)]
    for i, cause in enumerate(causes, 1):
        lead = f"  {i}. "
        lines.append(textwrap.fill(cause["sentence"], width=width, initial_indent=lead,
                                   subsequent_indent=" " * len(lead), break_long_words=False,
                                   break_on_hyphens=False))
    if not causes:
        lines.append("  (none found: the runs and the runs upstream of them read the same"
                     " inputs with the same params and code)")
    return "\n".join(lines)


def render_diff(result: dict[str, Any], *, show_all: bool = False,
                width: int | None = None) -> str:
    """The people's view of a diff (store/diff/'s structure): the sections that have
    entries (all of them with `show_all`), then the causes."""
    labels = result.get("labels") or {}

    def named(side: str) -> str:
        tags = (labels.get(side) or {}).get("tags") or []
        return f"run {result[side]}" + (f" ({', '.join(tags)})" if tags else "")

    head = [_style(f"{named('a')} -> {named('b')}", bold=True)]
    for side in ("a", "b"):
        note = (labels.get(side) or {}).get("note")
        if note:
            first, _, rest = note.partition("\n")
            head.append(f"  note on run {result[side]}: {first}" + (" …" if rest else ""))
    parts = ["\n".join(head)]
    for name, entries in result["sections"].items():
        if entries or show_all:
            parts.append(render_section(name, entries))
    if not result["same_run"]:
        parts.append(render_causes(result["causes"], width))
    return "\n\n".join(parts)


@click.command(context_settings={"ignore_unknown_options": True})
@json_option
@click.option("--all", "show_all", is_flag=True,
              help="Show every key of every section, the same ones too.")
@click.argument("a_ref", metavar="A")
@click.argument("b_ref", metavar="B")
@pass_state
def diff(state: AppState, as_json: bool, show_all: bool, a_ref: str, b_ref: str) -> None:
    """What differs between runs A and B, and why: A and B are ids, 'last' or -N.

    Sections (command, params, metrics, code, environment, inputs, outputs, telemetry)
    show only what differs unless --all; the causes follow each changed input up the
    lineage to the runs that made it, most upstream first.
    """
    with state.catalog() as catalog:
        a, b = run_ref_id(catalog, a_ref), run_ref_id(catalog, b_ref)
        result = catalog.diff(a, b, all=show_all)
    if as_json:
        emit_json(result)
        return
    if result["same_run"] and not show_all:
        note(f"runs {a} and {b} are the same run: nothing differs")
        return
    if not result["differs"] and not show_all:
        note(f"runs {a} and {b} do not differ (telemetry within jitter); "
             f"onlooker diff {a} {b} --all shows every key")
        return
    emit(render_diff(result, show_all=show_all))
