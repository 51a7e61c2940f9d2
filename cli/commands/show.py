"""`onlooker show RUN`: everything the catalog knows about one run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state, run_ref_id
from onlooker.cli.commands.runs import command_text, fold, status_text
from onlooker.cli.commands.tag import tag_rows
from onlooker.cli.metrics_view import metrics_sections
from onlooker.cli.output import (
    CliError,
    emit,
    emit_json,
    human_duration,
    human_size,
    json_option,
    local_time,
    note,
    section,
    short_hash,
    table,
)
from onlooker.cli.telemetry_view import telemetry_sections
from onlooker.store import records
from onlooker.store.errors import StoreError


def resolve(catalog: Any, ref: str) -> dict[str, Any]:
    """RUN as an id, or `last` / `-1` for the newest, `-2` for the one before, ..."""
    return catalog.run(run_ref_id(catalog, ref))


# How a file came to a run when no process was seen doing it (records.BASES): shown
# beside it, the guesses starred, so a guess never passes for an observation.
_BASIS_TEXT = {"fd": "fd (seen open)", "argv": "argv (named)", "window": "window*",
               "rescan": "rescan*", "ambiguous": "ambiguous* (shared)"}
GUESS_NOTE = ("* a guess: window = by time alone, rescan = found changed by a later scan,"
              " ambiguous = one of the runs alive then did it, and each of them has it")


def _files(entries: Any) -> str:
    entries = [e for e in entries or () if isinstance(e, dict)]
    bases = [_BASIS_TEXT.get(e.get("basis") or "", "") for e in entries]
    rows = [
        (e.get("path"), e.get("kind") or "-", human_size(e.get("size")), short_hash(e.get("hash")),
         *([b] if any(bases) else []))
        for e, b in zip(entries, bases, strict=True)
    ]
    if not rows:
        return "(none)"
    text = table(None, rows)
    return f"{text}\n{GUESS_NOTE}" if any("*" in b for b in bases) else text


def _meta_files(entries: Any) -> str:
    rows = [
        (e.get("path"), e.get("access") or "-", e.get("kind") or "-", human_size(e.get("size")),
         short_hash(e.get("hash")))
        for e in entries or ()
        if isinstance(e, dict)
    ]
    return table(None, rows) if rows else "(none)"


def _mapping(values: Any) -> str:
    if not values:
        return "(none)"
    # a long or multi-line value (a prompt, a config dumped as text) folds to one line
    return table(None, [(k, fold(_scalar(v))) for k, v in dict(values).items()])


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def _git(git: Any, run_id: Any, diff_text: str | None) -> str:
    if not git:
        return "(not a git repository)"
    rows = [("commit", git.get("commit") or "-"), ("branch", git.get("branch") or "-"),
            ("dirty", "yes" if git.get("dirty") else "no")]
    if git.get("diff"):
        size = "kept" if diff_text is None else f"{len(diff_text.splitlines())} lines"
        rows.append(("diff", f"{size}: onlooker show {run_id} --diff"))
    return table(None, rows)


def diff_text(catalog: Any, run: dict[str, Any]) -> str | None:
    """The uncommitted changes kept for the run (its git.diff object), None if none."""
    ref = (run.get("git") or {}).get("diff")
    if not ref:
        return None
    try:
        with catalog.objects.open(ref) as f:
            return f.read().decode("utf-8", errors="replace")
    except (StoreError, OSError):
        return None


def _env(env: Any) -> str:
    if not env:
        return "(not recorded)"
    py = env.get("python") or {}
    gpus = env.get("gpus") or []
    gpu_text = ", ".join(
        str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus
    ) or "none"
    rows = [
        ("python", f"{py.get('version') or '-'} ({py.get('executable') or '-'})"),
        ("packages", str(len(env.get("packages") or {}))),
        ("os", _os_line(env.get("os"))),
        ("cpu", _cpu_line(env.get("cpu"))),
        ("memory", human_size(env.get("memory_bytes"))),
        ("gpus", gpu_text),
        ("host", f"{env.get('user') or '-'}@{env.get('hostname') or '-'}"),
    ]
    return table(None, rows)


def _seconds(step: dict[str, Any]) -> float | None:
    try:
        start = datetime.fromisoformat(str(step["started_at"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(step["ended_at"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def _first_line(source: Any, width: int = 50) -> str:
    line = next((x.strip() for x in str(source or "").splitlines() if x.strip()), "")
    return line if len(line) <= width else line[:width - 1] + "…"


def _cells(steps: Any) -> str:
    """A kernel run's cells, one line each: number, status, duration, first line of
    source, files read (<) and written (>)."""
    rows = []
    for step in steps or ():
        if step.get("cell") is None:
            continue
        files = [*(f"<{p}" for p in step.get("inputs") or ()),
                 *(f">{p}" for p in step.get("outputs") or ())]
        rows.append((f"[{step['cell']}]", status_text(step), human_duration(_seconds(step)),
                     _first_line(step.get("source")), fold(" ".join(files), 50) or "-"))
    return table(("CELL", "STATUS", "DURATION", "SOURCE", "FILES (<read >written)"), rows)


def _steps(steps: Any) -> str:
    # a kernel run's cells have their own section
    steps = [s for s in steps or () if s.get("cell") is None]
    if not steps:
        return "(none)"
    by_id = {s.get("id"): s for s in steps}
    children: dict[Any, list[dict[str, Any]]] = {}
    roots = []
    for step in steps:
        parent = step.get("parent")
        if parent is not None and parent in by_id and parent != step.get("id"):
            children.setdefault(parent, []).append(step)
        else:
            roots.append(step)
    rows: list[tuple[str, ...]] = []
    seen: set[int] = set()

    def walk(step: dict[str, Any], depth: int) -> None:
        if id(step) in seen:  # a malformed parent cycle must not loop forever
            return
        seen.add(id(step))
        label = "  " * depth + ("└ " if depth else "") + command_text(step.get("argv"))
        rows.append((str(step.get("pid", "-")), status_text(step),
                     human_duration(_seconds(step)),
                     f"{len(step.get('inputs') or ())}/{len(step.get('outputs') or ())}", label))
        for child in children.get(step.get("id"), ()):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return table(("PID", "STATUS", "DURATION", "IN/OUT", "COMMAND"), rows)


def origin_rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    """`imported from HOST:PATH run N, exported TIME` for a run `onlooker import` added."""
    origin = run.get("origin")
    if not origin:
        return []
    return [("origin", f"imported from {origin.get('host') or '-'}:{origin.get('project') or '-'}"
                       f" run {origin.get('run_id')}, exported"
                       f" {local_time(origin.get('exported_at'))}")]


def add_twins(catalog: Any, run: dict[str, Any]) -> None:
    """Put `twins` (ids) and `nondeterministic` (paths) into a run dict for `show`; a
    catalog without twins (an older store) leaves them out."""
    twins_of = getattr(catalog, "twins", None)
    if twins_of is None:
        return
    run["twins"] = twins_of(run["id"])
    run["nondeterministic"] = catalog.nondeterministic(run["id"]) if run["twins"] else []


def twin_rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    """Header rows: the run's twins, and the outputs where they disagree."""
    twins = run.get("twins") or ()
    if not twins:
        return []
    rows = [("twins", "twin of run " + ", ".join(str(t) for t in twins))]
    odd = run.get("nondeterministic") or ()
    if odd:
        rows.append(("nondeterministic", ", ".join(odd) + (" differ" if len(odd) > 1 else
                                                           " differs") + " from a twin's"))
    return rows


def render_run(run: dict[str, Any], diff: str | None = None, *, show_all: bool = False) -> str:
    """The people's view of one run dict (the JSON contract), in sections; `diff` is the
    text behind git.diff where the caller read it; `show_all` adds the files tools read
    and wrote around the run (meta)."""
    notebook = run.get("notebook") or {}
    unseen = records.exit_unseen(run.get("status"), run.get("tier"))
    header = table(None, [
        *([("notebook", f"{notebook.get('path')} (kernel; found by "
                        f"{notebook.get('found_by') or '-'})")] if notebook else []),
        ("status", status_text(run)),
        ("exit", f"not seen: {unseen}" if unseen else _scalar(run.get("exit_code"))),
        ("started", local_time(run.get("started_at"))),
        ("ended", local_time(run.get("ended_at"))),
        ("duration", human_duration(run.get("duration"))),
        ("cwd", _scalar(run.get("cwd"))),
        ("command", command_text(run.get("command"))),
        ("tier", _scalar(run.get("tier"))),
        *tag_rows(run),
        *origin_rows(run),
        *twin_rows(run),
    ])
    parts = [
        section(f"run {run.get('id')}", header),
        section("params", _mapping(run.get("params"))),
        section("inputs", _files(run.get("inputs"))),
        section("outputs", _files(run.get("outputs"))),
        section("code", _files(run.get("code"))),
        *([section("meta (tool files)", _meta_files(run.get("meta")))] if show_all else []),
        *metrics_sections(run),
        *telemetry_sections(run),
        section("git", _git(run.get("git"), run.get("id"), diff)),
        section("env", _env(run.get("env"))),
        section("steps", _steps(run.get("steps"))),
        *([section("cells", _cells(run.get("steps")))]
          if any(st.get("cell") is not None for st in run.get("steps") or ()) else []),
    ]
    return "\n\n".join(parts)


@click.command(context_settings={"ignore_unknown_options": True})
@json_option
@click.option("--diff", "show_diff", is_flag=True,
              help="Print the uncommitted changes (git diff) the run started with.")
@click.option("--all", "show_all", is_flag=True,
              help="Also show the files tools read and wrote around the run (meta: git, "
                   "DVC, packaging, caches, tracking-store bookkeeping).")
@click.argument("run_ref", metavar="RUN")
@pass_state
def show(state: AppState, as_json: bool, show_diff: bool, show_all: bool, run_ref: str) -> None:
    """Show one run: RUN is its id, or 'last' / -1 for the newest (-2 the one before)."""
    if as_json and show_diff:
        raise click.UsageError("--diff prints the diff itself: use it without --json")
    with state.catalog() as catalog:
        run = resolve(catalog, run_ref)
        add_twins(catalog, run)
        diff = diff_text(catalog, run)
    if show_diff:
        if diff is None:
            git = run.get("git")
            raise CliError(f"run {run['id']} " + (
                "was not started in a git repository" if not git else
                "started from a clean tree: there is no diff" if not git.get("diff") else
                "has a diff recorded, but its object is missing from the store"))
        click.echo(diff, nl=not diff.endswith("\n"))
    elif as_json:
        emit_json(run)
    else:
        emit(render_run(run, diff, show_all=show_all))
        hidden = len(run.get("meta") or ())
        if hidden and not show_all:
            note(f"{hidden} tool file{'s' if hidden != 1 else ''} (meta) not shown: "
                 f"onlooker show {run.get('id')} --all")


def _os_line(os_info: object) -> str:
    if not isinstance(os_info, dict):
        return _scalar(os_info)
    parts = [os_info.get("distro"), " ".join(
        str(x) for x in (os_info.get("system"), os_info.get("release")) if x)]
    return ", ".join(p for p in parts if p) or "-"


def _cpu_line(cpu: object) -> str:
    if not isinstance(cpu, dict):
        return _scalar(cpu)
    model, count = cpu.get("model"), cpu.get("count")
    if model and count:
        return f"{model} x {count}"
    return str(model or count or "-")
