"""`onlooker pipeline`: the workflow the project ran, inferred from its runs; and
`onlooker outdated`: what is out of date since, and what to re-run."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.commands.lineage import dot_graph, graph_formats, mermaid_graph
from onlooker.cli.output import (
    CliError,
    emit,
    emit_json,
    human_size,
    json_option,
    note,
    section,
    short_hash,
    table,
)

_PROGRESS_BYTES = 64 << 20  # files smaller than this hash too fast to be worth a line
EMPTY_PIPELINE = ("no pipeline yet: no command that reads or writes files has run while "
                  "the agent watched")


def _shapes(pipe: dict[str, Any]) -> tuple[list, list]:
    nodes = [(s["name"], f"{s['name']}\n{s['pattern']}", "box") for s in pipe["stages"]]
    edges = []
    for e in pipe["edges"]:
        paths = e["paths"]
        label = ", ".join(paths[:3]) + (f" (+{len(paths) - 3})" if len(paths) > 3 else "")
        edges.append((e["from"], e["to"], label))
    return nodes, edges


def _listing(values: list[str]) -> str:
    return ", ".join(values) if values else "-"


def render_pipeline(pipe: dict[str, Any]) -> str:
    parts = []
    for s in pipe["stages"]:
        rows = [("command", s["pattern"]),
                ("runs", f"{len(s['runs'])} (latest {s['latest_run']})")]
        for label, values in sorted(s["varying"].items()):
            rows.append((f"{{{label}}}", _listing(values)))
        rows.append(("deps", _listing(s["deps"])))
        for file, keys in s["params"].items():
            rows.append(("params", f"{file}: {_listing(keys)}"))
        rows.append(("outs", _listing(s["outs"])))
        parts.append(section(f"stage {s['name']}", table(None, rows)))
    if pipe["edges"]:
        rows = [(f"{e['from']} -> {e['to']}", _listing(e["paths"])) for e in pipe["edges"]]
        parts.append(section("edges", table(None, rows)))
    return "\n\n".join(parts)


def _write_project_file(path: Path, data: bytes) -> None:
    """A file of the project's own (0644 less the umask), made at once (a temp renamed
    over it), never through a link at the temp's name, and its folder owner's when root
    writes it (`sudo onlooker pipeline --dvc-yaml`): root must leave no file of its own
    in a user's tree."""
    from onlooker.store.private import Owner, open_private

    tmp = path.with_name(f".{path.name}.onlooker-tmp")
    tmp.unlink(missing_ok=True)  # one left by a crash, or a link planted there
    try:
        fd = open_private(tmp, os.O_WRONLY | os.O_EXCL, Owner.of(path.parent), mode=0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {err.strerror or err}") from err


def _write_dvc_yaml(state: AppState, pipe: dict[str, Any], target: str, force: bool) -> None:
    from onlooker.store.pipeline import dvc_yaml

    if target == "-":
        emit(dvc_yaml(pipe).rstrip("\n"))
        return
    project = state.project()
    path = Path(target)
    if not path.is_absolute():
        path = state.start_dir() / path
    if path.is_dir():
        path = path / "dvc.yaml"
    where = os.path.relpath(path.parent, project)
    if where.startswith(".."):
        raise CliError(f"{path} is outside the project at {project}: DVC reads a dvc.yaml "
                       "from inside the repository", exit_code=2)
    if path.exists() and not force:
        raise CliError(f"{path} exists: give another FILE, or --force to replace it",
                       exit_code=2)
    text = dvc_yaml(pipe, at=where)
    _write_project_file(path, text.encode("utf-8"))
    note(f"wrote {len(pipe['stages'])} stages to {path} (check with `dvc dag`, "
         "`dvc repro --dry`)")


@click.command()
@graph_formats
@click.option("--dvc-yaml", "dvc_target", metavar="[FILE]", is_flag=False, flag_value="-",
              default=None,
              help="Write the pipeline as a dvc.yaml to FILE (a folder: FILE/dvc.yaml); "
                   "alone, print it.")
@click.option("--force", is_flag=True, help="With --dvc-yaml FILE: replace FILE if it exists.")
@pass_state
def pipeline(state: AppState, fmt: str | None, dvc_target: str | None, force: bool) -> None:
    """The workflow the project actually ran, inferred from what its runs read and wrote.

    A stage is a command that recurs (runs grouped by program and script, arguments
    that varied shown as {name}); its deps, outs and params are those of its latest
    run; one stage feeds another where an out of the first is a dep of the second.
    """
    if dvc_target is not None and fmt is not None:
        raise click.UsageError(f"--dvc-yaml and --{fmt} are two outputs: give one")
    with state.catalog() as catalog:
        pipe = catalog.pipeline()
    for warning in pipe["warnings"]:
        note(f"warning: {warning}")
    if dvc_target is not None:
        if not pipe["stages"]:
            raise CliError(EMPTY_PIPELINE)
        _write_dvc_yaml(state, pipe, dvc_target, force)
    elif fmt == "json":
        emit_json(pipe)
    elif fmt in ("dot", "mermaid"):
        nodes, edges = _shapes(pipe)
        emit(dot_graph("pipeline", nodes, edges) if fmt == "dot" else mermaid_graph(nodes, edges))
    elif not pipe["stages"]:
        note(EMPTY_PIPELINE)
    else:
        emit(render_pipeline(pipe))


# -- outdated -------------------------------------------------------------------------------


def _value(value: Any) -> str:
    return "(none)" if value is None else str(value)


def reason_text(reason: dict[str, Any]) -> str:
    kind = reason["kind"]
    if kind == "param":
        return f"param {reason['key']}: {_value(reason['was'])} -> {_value(reason['now'])}"
    if kind == "upstream":
        return (f"reads what {reason['stage'] or 'run'} (run {reason['run']}) makes, which is "
                f"out of date: {_listing(reason['paths'])}")
    hashes = f"{short_hash(reason['was'])} -> {short_hash(reason['now'])}"
    if kind == "output":
        if reason["now"] is None:
            return f"output {reason['path']} was removed since the run"
        return f"output {reason['path']} was changed since the run ({hashes})"
    if reason["now"] is None:
        return f"{kind} {reason['path']} was removed"
    return f"{kind} {reason['path']} changed ({hashes})"


CURRENT_TEXT = {
    "catalog": "current content: the catalog's latest versions (the agent is watching)",
    "disk": "current content: the files on disk, hashed (the agent is not running)",
}


def render_outdated(report: dict[str, Any]) -> str:
    parts = []
    for r in report["runs"]:
        rows = [("why", reason_text(x)) for x in r["reasons"]]
        outs = [o for o in report["outputs"] if o["run"] == r["run"]]
        for o in outs:
            rows.append(("out", f"{o['path']} ({o['state']})"))
        parts.append(section(f"run {r['run']} [{r['stage']}]  {r['cmd']}", table(None, rows)))
    steps = "\n".join(f"{i}. {r['cmd']}" for i, r in enumerate(report["runs"], 1))
    parts.append(section("re-run, in this order:", steps))
    return "\n\n".join(parts)


def _current_mode(state: AppState) -> str:
    from onlooker.agent import lifecycle

    store_dir = lifecycle.store_dir_of(state.project())
    return "catalog" if lifecycle.running_pid(store_dir) is not None else "disk"


@click.command()
@json_option
@pass_state
def outdated(state: AppState, as_json: bool) -> None:
    """Which outputs are out of date (an input, the code or a param changed since the
    run that made them, or the output itself was changed by hand) and which runs to
    re-run, upstream first. Like `dvc status`, with no dvc.yaml.

    While the agent runs, the current content of each file is the catalog's latest
    version; otherwise the files on disk are hashed.
    """
    from onlooker.agent.rules.params import config_params

    current = _current_mode(state)

    def hashing(path: str, size: int) -> None:
        if size >= _PROGRESS_BYTES:
            click.echo(f"hashing {path} ({human_size(size)}) ...", err=True)

    with state.catalog() as catalog:
        report = catalog.outdated(current,
                                  read_params=lambda rel, data: config_params(rel, data, rel),
                                  on_hash=hashing if sys.stderr.isatty() else None)
    if as_json:
        emit_json(report)
        return
    checked = report["checked"]
    summary = (f"{checked['outputs']} outputs of {checked['runs']} runs checked; "
               f"{CURRENT_TEXT[report['current']]}")
    if not report["runs"]:
        note(f"everything is up to date ({summary})")
        return
    emit(render_outdated(report))
    note(summary)
