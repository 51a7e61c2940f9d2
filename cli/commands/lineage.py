"""`onlooker lineage PATH|RUN`: the runs and versions that led to a file, or came from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from onlooker.cli.commands import AppState, pass_state
from onlooker.cli.commands.runs import command_text
from onlooker.cli.output import (
    CliError,
    emit,
    emit_json,
    human_size,
    local_time,
    note,
    short_hash,
)
from onlooker.store.errors import NoSuchRun

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("json", "dot", "mermaid")


def graph_formats(func: F) -> F:
    """--json, --dot and --mermaid, spelled the same on every graph command; passes
    `fmt` (None: the terminal view)."""
    for name, text in reversed((
            ("json", "Print exact JSON (stable keys) instead of the terminal view."),
            ("dot", "Print the graph in Graphviz DOT (`| dot -Tsvg > g.svg`)."),
            ("mermaid", "Print the graph as a Mermaid flowchart (for Markdown docs)."))):
        func = click.option(f"--{name}", "fmt", flag_value=name, help=text)(func)
    return func


# -- DOT and Mermaid ----------------------------------------------------------------------------


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dot_graph(name: str, nodes: list[tuple[str, str, str]],
              edges: list[tuple[str, str, str]]) -> str:
    """DOT for (id, label, shape) nodes and (from, to, label) edges."""
    lines = [f"digraph {name} {{", "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for node_id, label, shape in nodes:
        lines.append(f'  "{_dot_text(node_id)}" [label="{_dot_text(label)}", shape={shape}];')
    for a, b, label in edges:
        extra = f' [label="{_dot_text(label)}"]' if label else ""
        lines.append(f'  "{_dot_text(a)}" -> "{_dot_text(b)}"{extra};')
    lines.append("}")
    return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    return (text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;").replace("\n", "<br/>"))


_MERMAID_SHAPES = {"box": ('["', '"]'), "cylinder": ('[("', '")]'), "note": ('>"', '"]')}


def mermaid_graph(nodes: list[tuple[str, str, str]], edges: list[tuple[str, str, str]]) -> str:
    """A Mermaid flowchart for the same nodes and edges as dot_graph (Mermaid ids must
    be plain words: nodes become n0, n1, ...)."""
    ids = {node_id: f"n{i}" for i, (node_id, _, _) in enumerate(nodes)}
    lines = ["flowchart LR"]
    for node_id, label, shape in nodes:
        left, right = _MERMAID_SHAPES.get(shape, ('["', '"]'))
        lines.append(f"  {ids[node_id]}{left}{_mermaid_text(label)}{right}")
    for a, b, label in edges:
        arrow = f' -->|"{_mermaid_text(label)}"| ' if label else " --> "
        lines.append(f"  {ids[a]}{arrow}{ids[b]}")
    return "\n".join(lines)


def typed(argv: Any) -> str:
    """A run's command as a person typed it (`python src/train.py ...`, not the
    interpreter's absolute path)."""
    from onlooker.store.pipeline import typed_program

    if isinstance(argv, (list, tuple)) and argv:
        return command_text([typed_program(str(argv[0])), *argv[1:]])
    return command_text(argv)


def _label(node: dict[str, Any]) -> str:
    if node["type"] == "run":
        head = f"run {node['run']}" + (f": {node['stage']}" if node.get("stage") else "")
        return f"{head}\n{typed(node.get('command'))}"
    mark = "" if node.get("current") else " (old)"
    return f"{node['path']}\n{short_hash(node.get('hash'))}{mark}"


def lineage_shapes(graph: dict[str, Any]) -> tuple[list, list]:
    nodes = [(n["id"], _label(n), "box" if n["type"] == "run" else "cylinder")
             for n in graph["nodes"]]
    edges = [(e["from"], e["to"], "") for e in graph["edges"]]
    return nodes, edges


# -- the terminal tree --------------------------------------------------------------------------


def _line(node: dict[str, Any]) -> str:
    if node["type"] == "run":
        stage = f"  [{node['stage']}]" if node.get("stage") else ""
        status = node.get("status") or "?"
        if node.get("exit_code") not in (None, 0):
            status += f" ({node['exit_code']})"
        return (f"run {node['run']}{stage}  {typed(node.get('command'))}  "
                f"{status}, {local_time(node.get('started_at'))}")
    old = "" if node.get("current") else "  (not the current version)"
    return (f"{node['path']}  {short_hash(node.get('hash'))}  {node.get('kind') or '-'}  "
            f"{human_size(node.get('size'))}{old}")


def render_tree(graph: dict[str, Any]) -> str:
    """The graph as an indented tree from each target; a node met again is named, not
    expanded again ("see above")."""
    by_id = {n["id"]: n for n in graph["nodes"]}
    up = graph["direction"] == "up"
    children: dict[str, list[str]] = {}
    for e in graph["edges"]:
        parent, child = (e["to"], e["from"]) if up else (e["from"], e["to"])
        children.setdefault(parent, []).append(child)
    order = {n["id"]: i for i, n in enumerate(graph["nodes"])}
    for kids in children.values():
        kids.sort(key=lambda k: (by_id[k]["type"] != "run", order[k]))
    lines: list[str] = []
    shown: set[str] = set()
    leaf_note = ("  (no run wrote it)" if up else "  (nothing read it)") \
        if graph.get("depth") is None else ""
    # An explicit stack, not recursion: a chain of thousands of runs is a deep tree.
    stack: list[tuple[str, str, bool, bool]] = [(t, "", True, True)
                                                for t in reversed(graph["targets"])]
    while stack:
        node_id, prefix, last, top = stack.pop()
        node = by_id[node_id]
        branch = "" if top else ("└─ " if last else "├─ ")
        kids = children.get(node_id, [])
        again = node_id in shown and bool(kids)
        tail = "  (see above)" if again else (
            leaf_note if not kids and node["type"] == "version" else "")
        lines.append(f"{prefix}{branch}{_line(node)}{tail}")
        if again:
            continue
        shown.add(node_id)
        inner = prefix + ("" if top else ("   " if last else "│  "))
        for i in range(len(kids) - 1, -1, -1):
            stack.append((kids[i], inner, i == len(kids) - 1, False))
    return "\n".join(lines)


def render_graph(graph: dict[str, Any], fmt: str | None, name: str) -> None:
    if fmt == "json":
        emit_json(graph)
    elif fmt in ("dot", "mermaid"):
        nodes, edges = lineage_shapes(graph)
        emit(dot_graph(name, nodes, edges) if fmt == "dot" else mermaid_graph(nodes, edges))
    else:
        emit(render_tree(graph))


@click.command()
@click.argument("target", metavar="PATH|RUN")
@click.option("--up/--down", "up", default=True,
              help="Follow what led to it (--up, the default) or what came from it (--down).")
@click.option("--depth", type=click.IntRange(min=0), metavar="N",
              help="Follow at most N runs from the target (default: all the way).")
@graph_formats
@pass_state
def lineage(state: AppState, target: str, up: bool, depth: int | None,
            fmt: str | None) -> None:
    """The runs and versions that led to a file, or (--down) that came from it.

    PATH is a file (its current version), a folder (each file under it), or
    PATH@HASH for another version (a prefix of its hash, as `onlooker show` prints
    it). RUN is a run id, 'last', -N or a tag. Code and tools' files are never
    followed (with --json, each run lists its code).
    """
    from onlooker.store.lineage import NotInCatalog

    with state.catalog() as catalog:
        try:
            graph = catalog.lineage(target, up=up, depth=depth, cwd=str(state.start_dir()))
        except NotInCatalog as err:
            raise CliError(str(err)) from err
        except NoSuchRun as err:
            raise CliError(str(err)) from err
    render_graph(graph, fmt, "lineage")
    if fmt is None and depth != 0 and len(graph["nodes"]) <= len(graph["targets"]):
        what = "no run wrote it" if up else "no run read it"
        note(f"{target}: {what} while the agent watched")
