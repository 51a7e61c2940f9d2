"""Jupyter notebooks and kernels, read from outside: pure parsers and one reader.

- A kernel process: ``python -m ipykernel_launcher -f .../kernel-ID.json`` (and
  ``ipython kernel -f ...``; IRkernel and IJulia without cells); `kernel_of` gives its
  connection file.
- The notebook it serves, where its own process says so: ``JPY_SESSION_NAME`` in its
  environment or ``jupyter_session`` in its connection file (jupyter_server 2 and
  VS Code set them when they start a kernel for a notebook); `session_name`.
- The cells it executed: IPython's history database (``history.sqlite`` in the
  profile folder under ``IPYTHONDIR``, else ``~/.ipython``), one session per kernel
  start, one row per cell input in execution order (``line`` is the execution count);
  `history_path`, `read_sessions`, `read_inputs`, `pick_session`.
- A saved ``.ipynb`` (nbformat 4): its code cells with execution counts, tags and
  outputs (`parse_ipynb`); a papermill ``parameters`` / ``injected-parameters`` cell's
  assignments (`parameters`); the text its cells printed (`output_text`), for the log
  parsers.

Nothing here runs user code: sources are parsed with `ast`, values by `literal_eval`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from onlooker.agent.rules import classify

# A cell's source kept in the catalog is cut here (a cell pasting a whole dataset).
SOURCE_MAX = 64 * 1024
# Kernels of other languages, by what their kernelspecs run; they keep no IPython history,
# so their runs have a notebook and files but no cells.
_OTHER_KERNEL = re.compile(r"IRkernel::main\(\)|IJulia[/\\]src[/\\]kernel\.jl$")
PARAMETER_TAGS = ("parameters", "injected-parameters")  # papermill's, in apply order
_DEFAULT_PROFILE = "profile_default"


# ---------------------------------------------------------------------------- kernels


def kernel_of(argv: Iterable[str], exe: str | None = None, cwd: str | None = None
              ) -> str | None:
    """The connection file of a Jupyter kernel process (absolute), "" for a kernel
    started without one, None for any other process."""
    argv = list(argv)
    if other_kernel(argv):
        # IRkernel (`R ... -e 'IRkernel::main()' --args FILE`), IJulia (`julia ...
        # IJulia/src/kernel.jl FILE`): their connection file is their last argument.
        last = argv[-1]
        if last.endswith(".json"):
            return os.path.normpath(os.path.join(cwd or "/", os.path.expanduser(last)))
        return ""
    inv = classify.parse_invocation(argv, exe)
    if not (inv.mode == "module" and inv.target in classify.KERNEL_MODULES):
        return None
    args = list(inv.args)
    for i, a in enumerate(args):
        if a in ("-f", "--f", "--file", "--IPKernelApp.connection_file") and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(("--f=", "--file=", "--IPKernelApp.connection_file=")):
            value = a.split("=", 1)[1]
        else:
            continue
        return os.path.normpath(os.path.join(cwd or "/", os.path.expanduser(value)))
    return ""


def other_kernel(argv: Iterable[str]) -> bool:
    """A kernel of another language than Python (no IPython history)."""
    return any(_OTHER_KERNEL.search(a) for a in list(argv)[1:])


def kernel_id(connection_file: str) -> str | None:
    """The kernel id a Jupyter server knows it by: ``kernel-<id>.json``."""
    name = os.path.basename(connection_file)
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-"):-len(".json")] or None
    return None


def session_name(environ: Mapping[str, str], connection: Mapping[str, object] | None,
                 cwd: str | None) -> str | None:
    """The notebook a kernel was started for, as its own process says (absolute)."""
    for value in (environ.get("JPY_SESSION_NAME"),
                  (connection or {}).get("jupyter_session")):
        if isinstance(value, str) and value.strip():
            return os.path.normpath(os.path.join(cwd or "/", os.path.expanduser(value)))
    return None


def read_connection(data: bytes | None) -> dict[str, object] | None:
    """A connection file's JSON object, or None."""
    if not data:
        return None
    try:
        got = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return got if isinstance(got, dict) else None


# ---------------------------------------------------------------------------- history


def history_path(environ: Mapping[str, str], argv: Iterable[str] = ()) -> str | None:
    """Where the kernel's IPython keeps its history: ``$IPYTHONDIR`` (else
    ``$HOME/.ipython``) / ``profile_<name>`` / ``history.sqlite``, or the file
    ``--HistoryManager.hist_file`` names. None when the environment does not say."""
    profile = _DEFAULT_PROFILE
    args = list(argv)
    for i, a in enumerate(args):
        if a.startswith("--HistoryManager.hist_file="):
            return os.path.expanduser(a.split("=", 1)[1])
        if a.startswith("--profile="):
            profile = "profile_" + a.split("=", 1)[1]
        elif a == "--profile" and i + 1 < len(args):
            profile = "profile_" + args[i + 1]
        elif a.startswith("--profile-dir="):
            return os.path.join(os.path.expanduser(a.split("=", 1)[1]), "history.sqlite")
    base = environ.get("IPYTHONDIR")
    if not base:
        home = environ.get("HOME")
        if not home:
            return None
        base = os.path.join(home, ".ipython")
    base = os.path.expanduser(base)
    if not os.path.isabs(base):
        return None
    return os.path.join(base, profile, "history.sqlite")


@dataclass(frozen=True)
class Session:
    number: int
    start: float | None  # Unix seconds (IPython writes local time without a zone)
    ended: bool


def _local_unix(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp()  # naive: local time, as IPython wrote it


def _connect(path: str) -> sqlite3.Connection:
    # Read-only and never creating: the kernel's database is its own.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2)
    conn.execute("PRAGMA query_only = 1")
    return conn


def read_sessions(path: str, since: float | None = None) -> list[Session]:
    """The history sessions (kernel starts), oldest first; [] when unreadable."""
    try:
        conn = _connect(path)
    except sqlite3.Error:
        return []
    try:
        rows = conn.execute("SELECT session, start, end FROM sessions ORDER BY session").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    out = [Session(int(n), _local_unix(start), end is not None) for n, start, end in rows]
    return [s for s in out if since is None or (s.start is not None and s.start >= since)]


def read_inputs(path: str, session: int, after: int = 0) -> list[tuple[int, str]] | None:
    """(execution count, source as typed) of the session's cells after count `after`,
    in order; None when the database cannot be read now (locked, gone)."""
    try:
        conn = _connect(path)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute(
            "SELECT line, source_raw FROM history WHERE session = ? AND line > ?"
            " ORDER BY line", (session, after)).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return [(int(line), str(src or "")) for line, src in rows]


def pick_session(sessions: list[Session], started: float, taken: Iterable[int] = ()
                 ) -> Session | None:
    """The session a kernel started at `started` (Unix seconds) opened: the first one
    begun from its start on (IPython opens it while the kernel starts, within a minute)
    that no other kernel took."""
    taken = set(taken)
    cands = [s for s in sessions if s.number not in taken and s.start is not None
             and started - 1.0 <= s.start <= started + 60.0]
    return min(cands, key=lambda s: s.start or 0.0) if cands else None


# ---------------------------------------------------------------------------- notebooks


@dataclass
class NotebookCell:
    kind: str  # code, markdown, raw
    source: str
    execution_count: int | None = None
    tags: tuple[str, ...] = ()
    text: str = ""  # what it printed: stream output and plain-text results
    error: bool = False  # an error output


@dataclass
class Notebook:
    cells: list[NotebookCell] = field(default_factory=list)
    language: str | None = None

    def code(self) -> list[NotebookCell]:
        return [c for c in self.cells if c.kind == "code"]


def _text(value: object) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else ""


def parse_ipynb(data: bytes) -> Notebook | None:
    """A saved notebook (nbformat 4; 3's worksheets too), or None if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    cells = doc.get("cells")
    if cells is None and isinstance(doc.get("worksheets"), list):  # nbformat 3
        cells = [c for w in doc["worksheets"] if isinstance(w, dict)
                 for c in w.get("cells") or ()]
    if not isinstance(cells, list):
        return None
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    lang = (meta.get("language_info") or {}).get("name") if isinstance(
        meta.get("language_info"), dict) else None
    nb = Notebook(language=lang)
    for c in cells:
        if not isinstance(c, dict):
            continue
        kind = str(c.get("cell_type") or "")
        cmeta = c.get("metadata") if isinstance(c.get("metadata"), dict) else {}
        tags = tuple(t for t in cmeta.get("tags") or () if isinstance(t, str))
        count = c.get("execution_count", c.get("prompt_number"))
        cell = NotebookCell(kind, _text(c.get("source", c.get("input"))),
                            count if isinstance(count, int) else None, tags)
        texts: list[str] = []
        for out in c.get("outputs") or ():
            if not isinstance(out, dict):
                continue
            otype = out.get("output_type")
            if otype == "stream":
                texts.append(_text(out.get("text")))
            elif otype in ("execute_result", "display_data", "pyout"):
                got = out.get("data") if isinstance(out.get("data"), dict) else out
                plain = _text(got.get("text/plain", got.get("text")))
                if plain:
                    texts.append(plain if plain.endswith("\n") else plain + "\n")
            elif otype in ("error", "pyerr"):
                cell.error = True
        cell.text = "".join(texts)
        nb.cells.append(cell)
    return nb


def parameters(nb: Notebook) -> dict[str, object]:
    """The notebook's parameters: literal assignments in its ``parameters`` cell, then
    its ``injected-parameters`` cell (papermill's), the later winning."""
    out: dict[str, object] = {}
    for tag in PARAMETER_TAGS:
        for cell in nb.code():
            if tag in cell.tags:
                out.update(assignments(cell.source))
    return out


def assignments(source: str) -> dict[str, object]:
    """``name = <literal>`` statements of a cell (``a = b = 1`` too); others skipped."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        try:
            literal = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        for t in targets:
            if isinstance(t, ast.Name):
                out[t.id] = literal
    return out


def output_text(nb: Notebook) -> bytes:
    """What the code cells printed, in notebook order: a log for the log parsers."""
    return "".join(c.text for c in nb.code() if c.text).encode("utf-8")


def same_source(a: str, b: str) -> bool:
    """Two cell sources are the same cell (trailing blanks and line ends aside)."""
    return _norm(a) == _norm(b)


def _norm(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def matches(nb: Notebook, executed: Iterable[str]) -> int:
    """How many of the executed sources are code cells of the notebook."""
    cells = {_norm(c.source) for c in nb.code() if c.source.strip()}
    return sum(1 for src in executed if src.strip() and _norm(src) in cells)


def first_line(source: str | None, width: int = 60) -> str:
    """A cell's first non-blank line, cut to `width`: how `show` names a cell."""
    for line in (source or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= width else line[:width - 1] + "…"
    return ""
