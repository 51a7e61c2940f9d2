"""What a Python script's own command line declares (argparse or click), read from its
source without running it: the names of its positional arguments, and which of its
options take no value.

With it, ``python prepare.py data/raw.csv data/prepared --shuffle`` gives the params
``src`` and ``dst`` (the script's names) rather than ``argv[1]`` and ``argv[2]``, and a
flag followed by a positional (``--shuffle data/raw.csv``) is not read as the flag's
value. Only what is certain is used: a script with sub-commands, several parsers, or
positionals whose count varies before the last is given no spec (its argv is parsed
by the generic rules alone).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# argparse actions that take no value on the command line
_FLAG_ACTIONS = frozenset({"store_true", "store_false", "store_const", "count", "help",
                           "version", "append_const", "BooleanOptionalAction"})
_MAX_SOURCE = 1 << 20  # a script bigger than this is not a CLI worth parsing


@dataclass(frozen=True)
class CliSpec:
    """A script's declared command line. `positionals`: (name, nargs) in order, nargs
    None for exactly one value, or ``"?"``, ``"*"``, ``"+"``, an int. `flags`: option
    strings that take no value."""

    positionals: tuple[tuple[str, object], ...] = ()
    flags: frozenset[str] = field(default_factory=frozenset)

    def names(self, count: int) -> list[str] | None:
        """The declared name of each of `count` positionals given, as argparse would
        assign them; None where the declaration does not fit that count (the run failed
        its own parse) or uses a form not followed here (a fixed number above one, or a
        varying count before the last)."""
        out: list[str] = []
        for i, (name, nargs) in enumerate(self.positionals):
            last = i == len(self.positionals) - 1
            if nargs is None or nargs == 1:
                out.append(name)
            elif nargs in ("?", "*", "+") and last:
                rest = count - len(out)
                if (nargs == "?" and rest > 1) or (nargs == "+" and rest < 1):
                    return None
                out.extend([name] * max(rest, 0))
            else:
                return None
        return out if len(out) == count else None

    def many(self, name: str) -> bool:
        """Whether the positional `name` collects a list (``nargs='*'`` or ``'+'``)."""
        return any(n == name and nargs in ("*", "+") for n, nargs in self.positionals)


def _const(node: ast.AST | None) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, int)):
        return -node.operand.value  # click's nargs=-1
    if isinstance(node, ast.Attribute):  # argparse.BooleanOptionalAction
        return node.attr
    return None


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _strings(call: ast.Call) -> list[str] | None:
    out = []
    for a in call.args:
        if not (isinstance(a, ast.Constant) and isinstance(a.value, str)):
            return None
        out.append(a.value)
    return out


def cli_spec(source: bytes | str) -> CliSpec | None:
    """The command line `source` declares, or None when it declares none for sure."""
    if len(source) > _MAX_SOURCE:
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)),
                   key=lambda n: (n.lineno, n.col_offset))
    parsers = sub = 0
    positionals: list[tuple[str, object]] = []
    flags: set[str] = set()
    for call in calls:
        f = call.func
        attr = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(
            f.value, ast.Name) else ""
        if attr == "ArgumentParser":
            parsers += 1
        elif attr in ("add_subparsers", "group") or (owner == "click" and attr == "Group"):
            sub += 1
        elif attr == "add_argument" or (owner == "click" and attr in ("argument", "option")):
            names = _strings(call)
            if not names:
                continue
            if attr == "argument" or (attr == "add_argument" and not names[0].startswith("-")):
                dest = _const(_kw(call, "dest")) if attr == "add_argument" else None
                nargs = _const(_kw(call, "nargs"))
                if attr == "argument" and nargs == -1:
                    nargs = "*"
                positionals.append((str(dest or names[0]).replace("-", "_"), nargs))
                continue
            opts = [n for n in names if n.startswith("-")]
            action = _const(_kw(call, "action"))
            no_value = (action in _FLAG_ACTIONS or _const(_kw(call, "nargs")) == 0
                        or _const(_kw(call, "is_flag")) is True
                        or _const(_kw(call, "count")) is True
                        or any("/" in n for n in opts))  # click's --x/--no-x
            if no_value:
                for n in opts:
                    flags.update(n.split("/"))
    if sub or parsers > 1 or not (positionals or flags):
        return None
    return CliSpec(tuple(positionals), frozenset(x.strip() for x in flags if x.strip()))


__all__ = ["CliSpec", "cli_spec"]
