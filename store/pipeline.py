"""The pipeline a project actually ran, inferred from its runs' observed I/O.

A stage is a command that recurs: runs are grouped by program and script (`python
src/featurize.py ...`, `Rscript fit.R`, `python -m pkg.train`, `make train`), whatever
their other arguments; arguments that varied between the runs show as `{name}` in the
stage's pattern. The latest finished run of each stage gives its concrete deps
(inputs and code), outs and params; stage A feeds stage B where one of A's outs is
one of B's deps. Nothing is declared: this is what happened.

Params from a config file (`params.yaml:featurize.max_features`) are a stage's when
they lie in a top-level section named after it (DVC's convention: `featurize:` in
params.yaml is the featurize stage's), or in no stage's section (shared keys); a
file with no section named after any stage gives every stage that read it all its
keys. onlooker sees that a run read the file, not which keys it used: the convention
is what keeps a change to `featurize.*` from making `prepare` out of date.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import records

if TYPE_CHECKING:
    from .catalog import Catalog

_PYTHON = re.compile(r"(?:python|pypy|ipython)(?:\d+(?:\.\d+)*)?[mwd]?")
_VERSIONED = re.compile(r"(.+?)(?:-?\d+(?:\.\d+)*)$")
# Python's own options that take the next word as their value.
_PY_VALUE_OPTS = {"-W", "-X", "--check-hash-based-pycs"}
# Sources of params that are not config files.
NOT_FILES = {"argv", "env", "framework"}
# Config formats DVC reads params from (others become plain deps in a dvc.yaml).
DVC_PARAM_EXT = {".yaml", ".yml", ".json", ".toml", ".py"}
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_FINISHED = ("completed", "ended")
_NOT_LATEST = ("running",)


def program_name(argv0: str) -> str:
    """`/usr/bin/python3.11` -> `python`; other programs keep their basename."""
    base = os.path.basename(str(argv0)) or str(argv0)
    if _PYTHON.fullmatch(base):
        return "python"
    return base.lstrip("-") or base


def _script_index(argv: Sequence[str]) -> tuple[int | None, str | None]:
    """(index of the script in argv, module) for a Python command line."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith("-m") and len(arg) > 2:
            return i, arg[2:]
        if arg in ("-c", "-"):
            return None, None
        if arg in _PY_VALUE_OPTS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return i, None
    return None, None


def _project_path(arg: str, cwd: str | None, relpath: Callable[[str], str]) -> str:
    joined = arg if os.path.isabs(arg) or not cwd else os.path.join(cwd, arg)
    return relpath(joined)


def relpath_memo(catalog: Catalog) -> Callable[[str], str]:
    """catalog.relpath, remembered: thousands of runs name the same few scripts."""
    return functools.lru_cache(maxsize=65536)(catalog.relpath)


def stage_key(command: Sequence[str] | None, cwd: str | None, code: Iterable[str],
              relpath: Callable[[str], str]) -> tuple[str, str, int]:
    """(key, name, script index) of a run's command: runs with one key are one stage.

    The key is the program (versions stripped) and its script as a project path
    (`python src/featurize.py`), or its module (`python -m pkg.train`), or for other
    programs the first argument that is one of the run's code files (`Rscript fit.R`,
    `bash run.sh`), else its first word that is not an option (`make train`). The name
    is the script's stem (`featurize`), else `program-word` (`make-train`). The index
    says where the arguments that may vary begin. `relpath`: the catalog's name of a
    path (`catalog.relpath`, or `relpath_memo(catalog)` for many runs)."""
    argv = [str(a) for a in (command or [])]
    if not argv:
        return "?", "unknown", 1
    prog = program_name(argv[0])
    code_set = set(code)
    if prog == "python":
        idx, module = _script_index(argv)
        if module is not None:
            return f"python -m {module}", module.rpartition(".")[2] or module, (idx or 0) + 1
        if idx is None:
            return "python -c" if "-c" in argv else "python", "python", len(argv)
        script = _project_path(argv[idx], cwd, relpath)
        return f"python {script}", _stem(script), idx + 1
    for i, arg in enumerate(argv[1:], start=1):
        if not arg.startswith("-") and _project_path(arg, cwd, relpath) in code_set:
            script = _project_path(arg, cwd, relpath)
            return f"{prog} {script}", _stem(script), i + 1
    for i, arg in enumerate(argv[1:], start=1):
        if not arg.startswith("-"):
            return f"{prog} {arg}", f"{_stem(prog)}-{arg}", i + 1
    return prog, _stem(prog), len(argv)


def _stem(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or path
    return _NAME_BAD.sub("-", stem).strip("-") or "stage"


# -- params: which keys of a config file are a stage's ------------------------------------


def split_key(key: str) -> tuple[str, str]:
    """`params.yaml:train.seed` -> (`params.yaml`, `train.seed`)."""
    head, sep, tail = key.partition(":")
    return (head, tail) if sep else ("", key)


def stage_params(keys: Iterable[str], stage: str, stages: Iterable[str]) -> list[str]:
    """The keys (`file:a.b`, all of one file or several) that are this stage's by the
    section convention (see the module's docstring)."""
    names = set(stages)
    by_file: dict[str, list[str]] = {}
    for key in keys:
        by_file.setdefault(split_key(key)[0], []).append(key)
    out: list[str] = []
    for file_keys in by_file.values():
        tops = {split_key(k)[1].split(".", 1)[0] for k in file_keys}
        if not tops & names:
            out.extend(file_keys)
            continue
        for key in file_keys:
            top = split_key(key)[1].split(".", 1)[0]
            if top == stage or top not in names:
                out.append(key)
    return sorted(out)


# -- loading what the stages need ---------------------------------------------------------


def _all_runs(catalog: Catalog) -> list[Any]:
    return catalog._execute("SELECT id, command, cwd, status, started_at FROM runs"
                            " ORDER BY started_at, id").fetchall()


def _code_paths(catalog: Catalog) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for r in catalog._execute(
            "SELECT DISTINCT io.run_id, a.path FROM io JOIN versions v ON v.id = io.version_id"
            " JOIN assets a ON a.id = v.asset_id WHERE io.role = 'code'"):
        out.setdefault(int(r[0]), []).append(r[1])
    return out


def group_runs(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """key -> {"name" (unique), "base" (the name before it was made unique), "runs":
    [rows oldest first], "start": script index}, in the order of their first runs;
    one query for the runs and one for their code files."""
    code = _code_paths(catalog)
    relpath = relpath_memo(catalog)
    groups: dict[str, dict[str, Any]] = {}
    for row in _all_runs(catalog):
        command = records.loads(row["command"]) or []
        key, name, start = stage_key(command, row["cwd"], code.get(int(row["id"]), ()),
                                     relpath)
        group = groups.setdefault(key, {"key": key, "name": name, "base": name, "runs": [],
                                        "start": start})
        group["runs"].append({"id": int(row["id"]), "command": command, "cwd": row["cwd"],
                              "status": row["status"], "start": start})
    _unique_names(list(groups.values()))
    return groups


def latest_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run that speaks for a stage: the newest that finished well, else the newest
    that is not still running, else the newest."""
    for wanted in (_FINISHED, None):
        for run in reversed(runs):
            if wanted is None and run["status"] not in _NOT_LATEST:
                return run
            if wanted is not None and run["status"] in wanted:
                return run
    return runs[-1]


def run_files(catalog: Catalog, run_ids: list[int]) -> dict[int, dict[str, list[dict]]]:
    """run id -> {"inputs", "outputs", "code", "meta"} as `show` has them."""
    from .catalog import _FILES_SQL

    return records.group_files(catalog._execute(
        f"{_FILES_SQL} WHERE io.run_id IN (SELECT value FROM json_each(?))"
        " ORDER BY a.path, v.id", (records.dumps(sorted(run_ids)),)))


def run_param_rows(catalog: Catalog, run_ids: list[int]) -> dict[int, dict[str, tuple]]:
    """run id -> {key: (value, source)}."""
    out: dict[int, dict[str, tuple]] = {}
    for r in catalog._execute(
            "SELECT run_id, key, value, source FROM params"
            " WHERE run_id IN (SELECT value FROM json_each(?))",
            (records.dumps(sorted(run_ids)),)):
        out.setdefault(int(r[0]), {})[r[1]] = (records.loads(r[2]), r[3])
    return out


def config_keys(params: dict[str, tuple]) -> list[str]:
    """The keys of a run's params that came from config files it read."""
    return sorted(k for k, (_, source) in params.items()
                  if source not in NOT_FILES and split_key(k)[0] == source)


# -- varying arguments --------------------------------------------------------------------


def _items(args: Sequence[str]) -> list[tuple[str, int, str]]:
    """(label, index, prefix) of each word that carries a value: `--k v` (the value
    word, prefix ''), `--k=v` and `k=v` (prefix `--k=`), positionals (`argN`); a flag
    alone carries none. The value is the word past its prefix."""
    out: list[tuple[str, int, str]] = []
    positional = 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            name, eq, _ = arg.lstrip("-").partition("=")
            if eq:
                out.append((name, i, arg[: arg.index("=") + 1]))
            elif i + 1 < len(args) and not (args[i + 1].startswith("-")
                                            and not _is_number(args[i + 1])):
                out.append((name, i + 1, ""))
                i += 1
            i += 1
            continue
        name, eq, _ = arg.partition("=")
        if eq and name and "/" not in name:
            out.append((name, i, name + "="))
        else:
            positional += 1
            out.append((f"arg{positional}", i, ""))
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def generalise(commands: list[list[str]], start: int) -> tuple[str, dict[str, list[str]]]:
    """The pattern of the latest command with the values that varied between the
    commands as `{label}`, and label -> the distinct values seen (oldest first); a
    label some commands lack varies too."""
    values: dict[str, list[str]] = {}
    presence: dict[str, int] = {}
    for argv in commands:
        tail = [str(a) for a in argv[start:]]
        for label, index, prefix in _items(tail):
            seen = values.setdefault(label, [])
            value = tail[index][len(prefix):]
            if value not in seen:
                seen.append(value)
            presence[label] = presence.get(label, 0) + 1
    varying = {k: v for k, v in values.items() if len(v) > 1 or presence[k] < len(commands)}
    latest = [str(a) for a in commands[-1]] if commands else []
    if not latest:
        return "", varying
    words = [shlex.quote(w) for w in [typed_program(latest[0]), *latest[1:]]]
    tail = latest[start:]
    for label, index, prefix in _items(tail):
        if label in varying:
            words[start + index] = (shlex.quote(prefix) if prefix else "") + "{" + label + "}"
    return " ".join(words), varying


def typed_program(argv0: str) -> str:
    """The program as a person types it: `/venv/bin/python3` -> `python3` (found on
    PATH), a project-relative `./bin/train` as it is."""
    text = str(argv0)
    if os.path.isabs(text):
        return os.path.basename(text) or text
    return text


def command_line(argv: Sequence[str]) -> str:
    """The command as a person types it: the program by name, then its words."""
    if not argv:
        return ""
    return shlex.join([typed_program(argv[0]), *[str(a) for a in argv[1:]]])


# -- the pipeline -------------------------------------------------------------------------


def _unique_names(groups: list[dict[str, Any]]) -> None:
    taken: dict[str, int] = {}
    for group in groups:
        name = group["name"]
        if name in taken:
            taken[name] += 1
            group["name"] = f"{name}-{taken[name]}"
        else:
            taken[name] = 1


def _topological(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Kahn's order, upstream first; ties (and cycles) keep the given order."""
    order = {n: i for i, n in enumerate(names)}
    preds: dict[str, set[str]] = {n: set() for n in names}
    for a, b in edges:
        if a != b:
            preds[b].add(a)
    out: list[str] = []
    done: set[str] = set()
    while len(out) < len(names):
        ready = [n for n in names if n not in done and preds[n] <= done]
        if not ready:  # a cycle: take the earliest left, the rest follow
            ready = [min((n for n in names if n not in done), key=order.__getitem__)]
        nxt = ready[0]
        out.append(nxt)
        done.add(nxt)
    return out


def pipeline(catalog: Catalog) -> dict[str, Any]:
    """The inferred pipeline as a JSON-ready dict.

    ``{"stages": [{"name", "key", "pattern", "varying": {label: [values]}, "cmd",
    "command", "wdir", "runs": [ids], "latest_run", "deps", "code", "outs",
    "params": {file: [keys]}}], "edges": [{"from", "to", "paths"}], "warnings"}``,
    stages upstream first. `deps` are the latest run's inputs and code (config files
    whose keys are listed under `params` are left out of `deps`, as in a dvc.yaml);
    `code` names the deps that are code. Paths are project-relative.
    """
    with catalog._snapshot():
        groups = list(group_runs(catalog).values())
        chosen = {g["key"]: latest_run(g["runs"]) for g in groups}
        ids = [r["id"] for r in chosen.values()]
        files = run_files(catalog, ids)
        params = run_param_rows(catalog, ids)
    empty = records.empty_files()
    stages: list[dict[str, Any]] = []
    for group in groups:
        run = chosen[group["key"]]
        got = files.get(run["id"], empty)
        if not got["inputs"] and not got["outputs"]:
            continue  # no data flows through it: not a stage of the pipeline
        stages.append({"group": group, "run": run, "files": got})
    names = {g["base"] for g in groups}
    out_stages = []
    for s in stages:
        group, run, got = s["group"], s["run"], s["files"]
        keys = stage_params(config_keys(params.get(run["id"], {})), group["base"], names)
        by_file: dict[str, list[str]] = {}
        for key in keys:
            f, k = split_key(key)
            by_file.setdefault(f, []).append(k)
        outs = sorted({e["path"] for e in got["outputs"]})
        code = sorted({e["path"] for e in got["code"]} - set(outs))
        param_files = {f for f in by_file}
        read_params = {e["path"] for e in got["inputs"]
                       if any(k.startswith(e["path"] + ":") for k, (_, src)
                              in params.get(run["id"], {}).items() if src == e["path"])}
        inputs = sorted({e["path"] for e in got["inputs"]} - set(outs) - param_files
                        - read_params)
        pattern, varying = generalise([r["command"] for r in group["runs"]], group["start"])
        wdir = catalog.relpath(run["cwd"]) if run["cwd"] else "."
        out_stages.append({
            "name": group["name"], "key": group["key"], "pattern": pattern,
            "varying": varying, "cmd": command_line(run["command"]),
            "command": run["command"], "wdir": wdir if not os.path.isabs(wdir) else ".",
            "runs": [r["id"] for r in group["runs"]], "latest_run": run["id"],
            "deps": sorted(set(inputs) | set(code)), "code": code, "outs": outs,
            "params": {f: sorted(v) for f, v in sorted(by_file.items())},
        })
    edges, warnings = _edges(out_stages)
    order = _topological([s["name"] for s in out_stages], [(e["from"], e["to"]) for e in edges])
    rank = {n: i for i, n in enumerate(order)}
    out_stages.sort(key=lambda s: rank[s["name"]])
    edges.sort(key=lambda e: (rank[e["from"]], rank[e["to"]]))
    return {"stages": out_stages, "edges": edges, "warnings": warnings}


def _edges(stages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    writers: dict[str, list[str]] = {}
    for s in stages:
        for path in s["outs"]:
            writers.setdefault(path, []).append(s["name"])
    warnings = [f"{path} is written by several stages: {', '.join(names)}"
                for path, names in sorted(writers.items()) if len(names) > 1]
    pairs: dict[tuple[str, str], list[str]] = {}
    for s in stages:
        needs = set(s["deps"]) | set(s["params"])
        for path in sorted(needs):
            for writer in writers.get(path, ()):
                if writer != s["name"]:
                    pairs.setdefault((writer, s["name"]), []).append(path)
    edges = [{"from": a, "to": b, "paths": paths} for (a, b), paths in pairs.items()]
    return edges, warnings


# -- dvc.yaml -----------------------------------------------------------------------------


def dvc_yaml(pipe: dict[str, Any], at: str = ".") -> str:
    """A dvc.yaml for the inferred pipeline (`pipeline(catalog)`): `stages: NAME: cmd,
    wdir, deps, params, outs`. `at`: the project-relative folder the file will be in
    (DVC reads a stage's paths from its folder). Params of `params.yaml` are a plain
    key list; of other YAML/JSON/TOML files `- FILE: [keys]`; a config DVC cannot read
    params from is a dep. Outs outside the project, and outs a stage already listed
    before it, are left out (DVC refuses both), with a comment saying so."""
    import yaml

    stages: dict[str, Any] = {}
    notes: list[str] = []
    claimed: set[str] = set()
    for s in pipe["stages"]:
        wdir = s.get("wdir") or "."

        def here(path: str, wdir: str = wdir) -> str:
            if os.path.isabs(path):
                return path
            return os.path.relpath(path, wdir) if wdir != "." else path

        deps = list(s["deps"])
        params: list[Any] = []
        for file, keys in s["params"].items():
            if os.path.splitext(file)[1].lower() not in DVC_PARAM_EXT:
                deps.append(file)
                continue
            if here(file) == "params.yaml":
                params[:0] = list(keys)
            else:
                params.append({here(file): list(keys)})
        outs = []
        for path in s["outs"]:
            if os.path.isabs(path):
                notes.append(f"{s['name']}: {path} is outside the project (not an out)")
            elif path in claimed:
                notes.append(f"{s['name']}: {path} is an out of an earlier stage too")
            else:
                claimed.add(path)
                outs.append(here(path))
        entry: dict[str, Any] = {"cmd": s["cmd"]}
        rel_wdir = os.path.relpath(wdir, at) if at != "." else wdir
        if rel_wdir != ".":
            entry["wdir"] = rel_wdir
        if deps:
            entry["deps"] = sorted({here(p) for p in deps})
        if params:
            entry["params"] = params
        if outs:
            entry["outs"] = outs
        stages[s["name"]] = entry
    head = ["# Inferred by `onlooker pipeline --dvc-yaml` from the runs it observed:",
            "# each stage is the latest run of a command that recurs. Check before use."]
    head += [f"# note: {n}" for n in notes]
    body = yaml.safe_dump({"stages": stages}, sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=1000)
    return "\n".join(head) + "\n" + body
