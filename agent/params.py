"""Turn a run's argv, config files and environment into flat, typed, redacted params.

Decisions:

* argv: the interpreter and its options are dropped (``python -u train.py``); what
  the script (or ``-m`` module, or a program such as ``make``) receives is parsed.
  ``--k v``, ``--k=v``, ``-k v`` give ``k``; ``k=v``, ``a.b=c``, ``+a.b=c``,
  ``++a.b=c`` give ``k``/``a.b`` (Hydra's ``+`` only says the key is new);
  ``~a`` (Hydra delete) gives ``a: None``; an option followed by no value is
  ``True``; an option followed by two or more numbers is a list
  (``--layers 64 128``); repeated options collect a list. Positionals are
  ``argv[1]``, ``argv[2]``... numbered among positionals only, 1-based, so that
  moving an option does not renumber them (``make train X=1`` -> ``argv[1]:
  train``, ``X: 1``). A word after ``--`` is always positional.
* Launchers (torchrun, deepspeed, accelerate launch, mpirun, ``python -m
  torch.distributed.run``): the inner script's args are the params; the
  launcher's own options are kept as ``<launcher>:<option>``
  (``torchrun:nproc_per_node: 2``) because they change what a run computes.
* Values: ``true``/``false`` (any case) -> bool, ``null``/``None`` -> None, decimal
  integers without leading zeros -> int (``007`` stays a string), decimals and
  exponents -> float; everything else stays a string. ``-1`` after an option is
  its value, not a flag. Non-finite floats from configs become strings.
* Config files by extension (YAML, JSON, TOML, INI/CFG/CONF), else by content.
  Nested mappings flatten with dots under ``rel:``; lists of scalars stay lists;
  lists holding mappings flatten by index (``a.0.b``). At most 10,000 values per
  file (YAML alias bombs). ``yaml.safe_load`` only: ``!!python`` tags fail safely.
* Everything returned goes through `secrets.redact_mapping`.
"""

from __future__ import annotations

import configparser
import datetime
import fnmatch
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping

import yaml

from .classify import parse_invocation
from .secrets import redact_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

MAX_VALUES = 10_000

_INT = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_KV = re.compile(r"(?P<key>\+{0,2}[A-Za-z_][\w.\-/@\[\]]*)=(?P<val>.*)", re.S)
_DEL = re.compile(r"~(?P<key>[A-Za-z_][\w.\-/@\[\]]*)(?:=.*)?", re.S)
_NULLS = frozenset({"null", "Null", "NULL", "None"})


def typed(text: str) -> object:
    """``"0.1"`` -> 0.1, ``"3"`` -> 3, ``"true"`` -> True, ``"null"`` -> None."""
    if len(text) > 64:  # int() refuses huge digit strings; nobody types such a param
        return text
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if text in _NULLS:
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text) and any(c in text for c in ".eE"):
        return float(text)
    return text


def _is_number(text: str) -> bool:
    return bool(_FLOAT.fullmatch(text))


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and len(arg) > 1 and arg != "--" and not _is_number(arg)


def _add(out: dict[str, object], multi: set[str], key: str, value: object) -> None:
    if key in out:
        prev = out[key]
        out[key] = [*prev, value] if key in multi and isinstance(prev, list) else [prev, value]
        multi.add(key)
    else:
        out[key] = value


def _parse_args(args: Iterable[str], prefix: str, out: dict[str, object]) -> None:
    args = list(args)
    multi: set[str] = set()
    pos = 0
    i, n = 0, len(args)
    only_positional = False
    while i < n:
        a = args[i]
        i += 1
        if only_positional or not _is_option(a):
            if a == "--" and not only_positional:
                only_positional = True
            elif not only_positional and (m := _KV.fullmatch(a)):
                _add(out, multi, prefix + m["key"].lstrip("+"), typed(m["val"]))
            elif not only_positional and (m := _DEL.fullmatch(a)):
                _add(out, multi, prefix + m["key"], None)
            else:
                pos += 1
                out[f"{prefix}argv[{pos}]"] = typed(a)
            continue
        name, eq, val = a.lstrip("-").partition("=")
        key = prefix + (name or a)
        if eq:
            _add(out, multi, key, typed(val))
            continue
        vals: list[str] = []
        j = i
        while j < n and not _is_option(args[j]) and args[j] != "--" and \
                not _KV.fullmatch(args[j]) and _is_number(args[j]):
            vals.append(args[j])
            j += 1
        if len(vals) >= 2:
            _add(out, multi, key, [typed(v) for v in vals])
            i = j
        elif i < n and not _is_option(args[i]) and args[i] != "--" and not _KV.fullmatch(args[i]):
            _add(out, multi, key, typed(args[i]))
            i += 1
        else:
            _add(out, multi, key, True)


def argv_params(argv: list[str] | tuple[str, ...]) -> dict[str, object]:
    """Params from a command line; see the module docstring for the rules."""
    out: dict[str, object] = {}
    try:
        inv = parse_invocation(list(argv))
        if inv.launcher:
            _parse_args(inv.launcher_args, f"{inv.launcher}:", out)
        _parse_args(inv.args, "", out)
    except RecursionError:  # pragma: no cover - argv cannot nest, but never crash a run
        log.warning("argv params: command line too deep to parse")
    return redact_mapping(out)


class _Budget(Exception):
    """Raised when a config file holds more values than MAX_VALUES."""


def _leaf(value: object) -> object:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset)):
        return sorted(str(v) for v in value)
    return str(value)


def _holds_mapping(items: list | tuple) -> bool:
    return any(isinstance(x, dict) or (isinstance(x, (list, tuple)) and _holds_mapping(x))
               for x in items)


def _scalars(items: list | tuple, budget: list[int]) -> list:
    out = []
    for x in items:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Budget
        out.append(_scalars(x, budget) if isinstance(x, (list, tuple)) else _leaf(x))
    return out


def _flatten(obj: object, key: str, out: dict[str, object], budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _Budget
    if isinstance(obj, dict):
        if not obj and key:
            out[key] = {}
        for k, v in obj.items():
            _flatten(v, f"{key}.{k}" if key else str(k), out, budget)
    elif isinstance(obj, (list, tuple)):
        if key and not _holds_mapping(obj):
            out[key] = _scalars(obj, budget)
        else:
            for idx, v in enumerate(obj):
                _flatten(v, f"{key}.{idx}" if key else str(idx), out, budget)
    elif key:
        out[key] = _leaf(obj)


def _load_yaml(text: str) -> object:
    docs = list(yaml.safe_load_all(text))
    return docs[0] if len(docs) == 1 else docs


def _load_ini(text: str) -> dict[str, object]:
    parser = configparser.ConfigParser(interpolation=None, strict=False, allow_no_value=True,
                                       default_section="\x00none")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    try:
        parser.read_string(text)
        root = False
    except configparser.MissingSectionHeaderError:
        parser.read_string("[\x00root]\n" + text)
        root = True
    data: dict[str, object] = {}
    for section in parser.sections():
        items = {k: (None if v is None else typed(v)) for k, v in parser.items(section)}
        if root and section == "\x00root":
            data.update(items)
        else:
            data[section] = items
    return data


def _load_toml(text: str) -> object:
    return tomllib.loads(text)


def _load_json(text: str) -> object:
    return json.loads(text)


_LOADERS = {".yaml": _load_yaml, ".yml": _load_yaml, ".json": _load_json,
            ".toml": _load_toml, ".ini": _load_ini, ".cfg": _load_ini, ".conf": _load_ini}


def _sniff(text: str) -> object:
    stripped = text.lstrip()
    tries = []
    if stripped[:1] in ("{", "["):
        tries.append(_load_json)
    tries += [_load_toml, _load_yaml]
    if re.search(r"^\s*\[[^\]\n]+\]\s*$", text, re.M):  # INI only with a [section]
        tries.append(_load_ini)
    for load in tries:
        try:
            obj = load(text)
        except Exception:  # noqa: BLE001 - any parser failure means "try the next format"
            continue
        if isinstance(obj, dict) and obj:
            return obj
    raise ValueError("not YAML, JSON, TOML or INI")


def config_params(path: str, data: bytes, rel: str) -> dict[str, object]:
    """Flat params ``rel:a.b`` from a config file's bytes; {} when it cannot be parsed."""
    ext = os.path.splitext(path)[1].lower()
    try:
        text = data.decode("utf-8-sig")
        load = _LOADERS.get(ext)
        obj = load(text) if load else _sniff(text)
    except Exception as err:  # noqa: BLE001 - a user's file must never crash the agent
        log.info("config %s not parsed: %s", rel, str(err).splitlines()[0] if str(err) else err)
        return {}
    flat: dict[str, object] = {}
    budget = [MAX_VALUES]
    try:
        if isinstance(obj, (dict, list)):
            _flatten(obj, "", flat, budget)
    except _Budget:
        log.warning("config %s holds more than %d values; kept the first", rel, MAX_VALUES)
    except RecursionError:
        log.warning("config %s nests too deep to flatten", rel)
        return {}
    return redact_mapping({f"{rel}:{k}": v for k, v in flat.items()})


def env_params(environ: Mapping[str, str], names: list[str]) -> dict[str, object]:
    """``env:NAME`` params for the listed names (``*`` globs allowed) the run has."""
    out: dict[str, object] = {}
    for pattern in names:
        if any(c in pattern for c in "*?["):
            for name in sorted(fnmatch.filter(environ, pattern)):
                out[f"env:{name}"] = typed(environ[name])
        elif pattern in environ:
            out[f"env:{pattern}"] = typed(environ[pattern])
    return redact_mapping(out)
