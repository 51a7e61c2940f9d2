"""Turn a run's argv, config files and environment into flat, typed, redacted params.

Decisions:

* Whose argv: the run's own program (`argv_params`), and inside a run only steps
  that run project code (`step_params`, decided by `classify.project_code`): a
  library's ``git rev-parse HEAD`` or ``uname -a`` says nothing about the experiment,
  and its positionals must not overwrite the run's. A version manager's shim
  (``bash ~/.pyenv/libexec/pyenv exec python3 train.py``) gives the params of the
  program it hands over to. Several project steps with different params (a sweep
  wrapper) are told apart by `merge_step_params`.
* argv: the interpreter and its options are dropped (``python -u train.py``); what
  the script (or ``-m`` module, or a program such as ``make``) receives is parsed.
  ``--k v``, ``--k=v``, ``-k v`` give ``k``; ``k=v``, ``a.b=c``, ``+a.b=c``,
  ``++a.b=c`` give ``k``/``a.b`` (Hydra's ``+`` only says the key is new); an
  option followed by no value is ``True``; an option followed by two or more
  numbers is a list (``--layers 64 128``); repeated options collect a list.
  Positionals are ``argv[1]``, ``argv[2]``... numbered among positionals only,
  1-based, so that moving an option does not renumber them (``make train X=1`` ->
  ``argv[1]: train``, ``X: 1``). A word after ``--`` is always positional. Where the
  script's own argparse or click declaration is known (`cli_spec`), positionals take
  its names (``src``, ``dst``) and its flags take no value.
* Hydra: ``~a`` (delete a key) and ``hydra.*``/``hydra/*`` overrides (where Hydra
  writes, how it logs) are not the experiment's params; ``-m``/``--multirun`` beside
  overrides is Hydra's sweep switch, not a param, and a sweep list
  (``lr=0.1,0.01``) stays its literal text: the jobs' own values come from the
  ``.hydra/overrides.yaml`` and ``config.yaml`` each job writes (`framework_params`).
  A value quoted whole (``name='a b'``, Hydra's quoting) loses its quotes.
* Known tool conventions (`_CONVENTIONS`):

  ========================  ==================================================
  papermill IN OUT          ``-p NAME VALUE``, ``--parameters NAME VALUE`` (typed),
                            ``-r``/``--parameters_raw NAME RAW`` (string),
                            ``-y YAML``, ``-b BASE64-YAML``, ``-f FILE.yaml``
                            give ``NAME``; papermill's own options
                            ``papermill:<option>``; the notebooks ``argv[1]``,
                            ``argv[2]``.
  dvc exp run -S            ``-S [file:]a.b=v`` gives ``file:a.b`` (file defaults
                            to ``params.yaml``): the key of the same value read
                            from that config file.
  ========================  ==================================================
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
* Frameworks' effective config, in files the run wrote (`framework_params`): Hydra's
  ``.hydra/config.yaml`` (flattened, ``${a.b}`` interpolations resolved) and
  ``.hydra/overrides.yaml`` (parsed as argv overrides); Lightning's ``hparams.yaml``
  and LightningCLI's ``version_N/config.yaml``. Keys carry no file or folder
  prefix: every run writes to a new folder (``outputs/<date>/<time>``,
  ``version_7``), and the keys must compare across runs and match the argv's
  (``lr=0.1`` and ``lr: 0.1`` are one param). Hydra's ``hydra.yaml`` and
  ``multirun.yaml`` are its own settings: known, and never params.
* Everything returned goes through `secrets.redact_mapping`.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import datetime
import fnmatch
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence

import yaml

from onlooker.agent.rules.classify import (
    DEFAULT_FOREIGN,
    PAPERMILL_FLAGS,
    Invocation,
    notebook_tool,
    parse_invocation,
    project_code,
    unshim,
)
from onlooker.agent.rules.cli_spec import CliSpec
from onlooker.agent.rules.secrets import redact_mapping
from onlooker.store.private import may_read

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

MAX_VALUES = 10_000
FILE_MAX_BYTES = 1024 * 1024  # a parameters file named on the command line (papermill -f)

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


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _framework_key(key: str) -> bool:
    """Keys that configure the framework, not the experiment (Hydra's own config)."""
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


_MULTIRUN = frozenset({"-m", "--multirun"})


def _parse_args(args: Iterable[str], prefix: str, out: dict[str, object],
                spec: CliSpec | None = None) -> None:
    args = list(args)
    multi: set[str] = set()
    flags = spec.flags if spec is not None else frozenset()
    given: list[str] = []  # positionals, named once all are known (`_positionals`)
    i, n = 0, len(args)
    only_positional = False
    overrides = any(_KV.fullmatch(a) for a in args)
    while i < n:
        a = args[i]
        i += 1
        if only_positional or not _is_option(a):
            if a == "--" and not only_positional:
                only_positional = True
            elif not only_positional and (m := _KV.fullmatch(a)):
                key = m["key"].lstrip("+")
                if not _framework_key(key):
                    _add(out, multi, prefix + key, typed(_unquote(m["val"])))
            elif not only_positional and _DEL.fullmatch(a):
                pass  # Hydra's delete: what is left shows in the job's config.yaml
            else:
                given.append(a)
            continue
        name, eq, val = a.lstrip("-").partition("=")
        key = prefix + (name or a)
        if eq:
            _add(out, multi, key, typed(val))
            continue
        if a in flags:  # the script says it takes no value: what follows is not its
            _add(out, multi, key, True)
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
        elif not (overrides and a in _MULTIRUN):
            _add(out, multi, key, True)
    _positionals(given, prefix, out, spec)


def _positionals(given: list[str], prefix: str, out: dict[str, object],
                 spec: CliSpec | None) -> None:
    """Positionals by the names the script declares where it says them, else
    ``argv[N]``."""
    names = spec.names(len(given)) if spec is not None else None
    if names is None:
        for pos, a in enumerate(given, start=1):
            out[f"{prefix}argv[{pos}]"] = typed(a)
        return
    for name, a in zip(names, given, strict=True):
        key = prefix + name
        if spec is not None and spec.many(name):
            prev = out.get(key)
            out[key] = [*(prev if isinstance(prev, list) else []), typed(a)]
        else:
            out[key] = typed(a)


# -- known tools' conventions -------------------------------------------------------

_PAPERMILL_PAIRS = {"-p": False, "--parameters": False, "-r": True, "--parameters_raw": True}
_PAPERMILL_SHORT = {"-k": "kernel", "-l": "language"}  # keyed by the long name either way


def _yaml_mapping(text: str) -> dict[str, object]:
    try:
        obj = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - a bad value on the command line is no params
        return {}
    flat: dict[str, object] = {}
    if isinstance(obj, dict):
        try:
            _flatten(obj, "", flat, [MAX_VALUES])
        except (_Budget, RecursionError):
            return {}
    return flat


def _read_small(path: str, cwd: str | None) -> str | None:
    if not os.path.isabs(path) and not cwd:
        return None
    full = os.path.join(cwd or "/", os.path.expanduser(path))
    try:
        with open(full, "rb") as fh:
            # after the open, on what was opened: an agent running as root parses no
            # file the project's owner could not read (store/private.py)
            if not may_read(full, os.fstat(fh.fileno())):
                return None
            data = fh.read(FILE_MAX_BYTES + 1)
    except (OSError, ValueError):
        return None
    return None if len(data) > FILE_MAX_BYTES else data.decode("utf-8", "replace")


def _papermill(args: Sequence[str], out: dict[str, object], cwd: str | None) -> None:
    """papermill's CLI: the notebook's parameters are the params; they merge in the
    order papermill applies them (files, then YAML, then base64, then -p, then -r)."""
    layers: dict[str, list[dict[str, object]]] = {"file": [], "yaml": [], "b64": [], "p": []}
    pos = 0
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        opt, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
        nxt = val if eq else (args[i + 1] if i + 1 < n else None)
        step = 1 if eq else 2
        if opt in _PAPERMILL_PAIRS and i + 2 < n:
            value = args[i + 2]
            layers["p"].append({args[i + 1]: value if _PAPERMILL_PAIRS[opt] else typed(value)})
            i += 3
        elif opt in ("-f", "--parameters_file") and nxt is not None:
            out["papermill:parameters_file"] = nxt
            text = _read_small(nxt, cwd)
            layers["file"].append(_yaml_mapping(text) if text else {})
            i += step
        elif opt in ("-y", "--parameters_yaml") and nxt is not None:
            layers["yaml"].append(_yaml_mapping(nxt))
            i += step
        elif opt in ("-b", "--parameters_base64") and nxt is not None:
            try:
                text = base64.b64decode(nxt, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                text = ""
            layers["b64"].append(_yaml_mapping(text))
            i += step
        elif opt in PAPERMILL_FLAGS:
            out[f"papermill:{opt.lstrip('-')}"] = True
            i += 1
        elif opt.startswith("-") and opt != "-" and nxt is not None:
            out[f"papermill:{_PAPERMILL_SHORT.get(opt, opt.lstrip('-'))}"] = typed(nxt)
            i += step
        elif opt.startswith("-") and opt != "-":
            out[f"papermill:{opt.lstrip('-')}"] = True
            i += 1
        else:
            pos += 1
            out[f"argv[{pos}]"] = a
            i += 1
    for name in ("file", "yaml", "b64", "p"):
        for layer in layers[name]:
            out.update(layer)


_DVC_SET = re.compile(r"(?:(?P<file>[^=:]+):)?(?P<key>[^=]+)=(?P<val>.*)", re.S)


def _dvc_exp_run(args: Sequence[str], out: dict[str, object]) -> None:
    """``dvc exp run -S train.lr=0.1`` changes ``params.yaml``'s ``train.lr`` for this
    run: keyed as config_params keys the same value, so both meet."""
    rest: list[str] = []
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        val = None
        if a in ("-S", "--set-param") and i + 1 < n:
            val, i = args[i + 1], i + 2
        elif a.startswith("--set-param="):
            val, i = a.partition("=")[2], i + 1
        else:
            rest.append(a)
            i += 1
            continue
        if val is not None and (m := _DVC_SET.fullmatch(val)):
            out[f"{m['file'] or 'params.yaml'}:{m['key']}"] = typed(m["val"])
    _parse_args(rest, "", out)


def _is_dvc_exp_run(inv: Invocation) -> bool:
    words = [a for a in inv.args if not a.startswith("-")][:2]
    return inv.program == "dvc" and words == ["exp", "run"]


def argv_params(argv: list[str] | tuple[str, ...], *, cwd: str | None = None,
                spec: CliSpec | None = None) -> dict[str, object]:
    """Params from the run's own command line; see the module docstring for the rules.

    `cwd` resolves files named as parameters files (``papermill -f p.yaml``); without
    it only absolute ones are read. `spec`: what the script's own parser declares
    (`cli_spec.cli_spec`), which names its positionals and its flags.
    """
    out: dict[str, object] = {}
    try:
        inv = parse_invocation(unshim(argv))
        if inv.launcher:
            _parse_args(inv.launcher_args, f"{inv.launcher}:", out)
        if notebook_tool(inv) == "papermill":
            _papermill(inv.args, out, cwd)
        elif _is_dvc_exp_run(inv):
            _dvc_exp_run(inv.args, out)
        else:
            _parse_args(inv.args, "", out, spec)
    except RecursionError:  # pragma: no cover - argv cannot nest, but never crash a run
        log.warning("argv params: command line too deep to parse")
    return redact_mapping(out)


def step_params(argv: list[str] | tuple[str, ...], exe: str | None = None, *,
                cwd: str | None, project: str | os.PathLike[str],
                foreign: Iterable[str] = DEFAULT_FOREIGN,
                spec: CliSpec | None = None) -> dict[str, object]:
    """Params of one step of a run: its argv's when it runs project code (see
    `classify.project_code`, which also gives the step's label), {} for a system tool,
    an orchestrator (``make``, ``dvc repro``) or a one-liner (``sh -c 'uname -p'``)."""
    if project_code(argv, exe, cwd=cwd, project=project, foreign=foreign) is None:
        return {}
    return argv_params(argv, cwd=cwd, spec=spec)


def merge_step_params(root: Mapping[str, object],
                      steps: Sequence[tuple[str, Mapping[str, object]]]) -> dict[str, object]:
    """A run's params: its own program's (`root`), then its project steps', in the order
    they started, each as ``(classify.project_code label, step_params)``.

    Steps that repeat the run's params (torchrun's workers, a shim's program, a
    script's ``exec python ...``) or another step's add nothing. One step left: its
    keys as they are (``make train`` -> ``python train.py --lr 0.1`` gives ``lr``),
    except a key the run's program already has with another value, which becomes
    ``<label>:<key>`` rather than overwrite it. Several (a sweep wrapper, a pipeline):
    every key becomes ``<label>:<key>``, and ``<label>#<n>:<key>`` (n from 1, in
    start order) where one label runs more than once with other params, so a sweep's
    ``train.py#2:lr`` is the second job's in every run of the same wrapper.
    """
    out = dict(root)
    kept: list[tuple[str, dict[str, object]]] = []
    for label, found in steps:
        found = dict(found)
        if not found or all(k in root and root[k] == v for k, v in found.items()):
            continue
        if (label, found) not in kept:
            kept.append((label, found))
    if len(kept) == 1:
        label, found = kept[0]
        for k, v in found.items():
            out[k if k not in root or root[k] == v else f"{label}:{k}"] = v
        return out
    repeats = {label for label, _ in kept if sum(1 for x, _ in kept if x == label) > 1}
    seen: dict[str, int] = {}
    for label, found in kept:
        seen[label] = seen.get(label, 0) + 1
        tag = f"{label}#{seen[label]}" if label in repeats else label
        out.update({f"{tag}:{k}": v for k, v in found.items()})
    return out


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


# -- frameworks' effective config, in files a run wrote -----------------------------

class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that reads unknown tags (``!!python/object:argparse.Namespace``, which
    Lightning writes for hparams it cannot type) as the plain node beneath: nothing is
    ever constructed but dicts, lists and strings."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return value if value != "" else suffix.rsplit(":", 1)[-1]


_TolerantLoader.add_multi_constructor("", _untagged)

_VERSION_DIR = re.compile(r"version_\d+")
_INTERP = re.compile(r"\$\{([A-Za-z_][\w\-]*(?:\.[\w\-]+)*)\}")


def _framework_file(rel: str) -> str | None:
    """Which framework file ``rel`` is: hydra-config | hydra-overrides | hydra-own |
    hydra-multirun | hparams | lightning-cli, or None."""
    parts = rel.replace("\\", "/").split("/")
    name, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if parent == ".hydra":
        return {"config.yaml": "hydra-config", "overrides.yaml": "hydra-overrides",
                "hydra.yaml": "hydra-own"}.get(name)
    if name == "multirun.yaml":
        return "hydra-multirun"
    if name in ("hparams.yaml", "hparams.yml"):
        return "hparams"
    if name == "config.yaml" and _VERSION_DIR.fullmatch(parent):
        return "lightning-cli"
    return None


def is_framework_file(rel: str) -> bool:
    """Whether `framework_params` has anything to say of this path (its name decides):
    a caller need not read any other file a run wrote."""
    return _framework_file(rel) is not None


def framework_run_dir(rel: str) -> str | None:
    """The per-run folder a framework file lies in (``outputs/2024-01-02/10-11-12``,
    ``multirun/.../3`` for Hydra's job 3, ``lightning_logs/version_7``), or None.
    Files of one run in two such folders are two jobs (a Hydra ``-m`` sweep run in
    one process): the caller tells them apart like steps."""
    what = _framework_file(rel)
    if what is None:
        return None
    parts = rel.replace("\\", "/").split("/")
    drop = 2 if what.startswith("hydra-") and what != "hydra-multirun" else 1
    return "/".join(parts[:-drop]) or "."


def _resolve(flat: dict[str, object]) -> dict[str, object]:
    """OmegaConf's ``${a.b}`` references to the same config, as the job saw them; other
    resolvers (``${now:...}``, ``${oc.env:X}``) stay text."""
    def sub(value: object, depth: int) -> object:
        if not isinstance(value, str) or "${" not in value or depth > 8:
            return value
        whole = _INTERP.fullmatch(value)
        if whole and whole[1] in flat:
            return sub(flat[whole[1]], depth + 1)

        def one(m: re.Match[str]) -> str:
            got = sub(flat.get(m[1], m[0]), depth + 1) if m[1] in flat else m[0]
            return m[0] if isinstance(got, (dict, list)) else str(got)
        return _INTERP.sub(one, value)
    return {k: sub(v, 0) for k, v in flat.items()}


def framework_params(rel: str, data: bytes) -> dict[str, object] | None:
    """The params a file that a run WROTE declares, when a framework wrote it to say
    what the run was configured with; None for any other file. ``{}`` is a
    framework's file that holds no params (Hydra's ``hydra.yaml``): keep it away from
    the metrics and config parsers too. Keys have no prefix (see the module
    docstring); Hydra's job values win over the argv's sweep text when the caller
    merges them after argv params."""
    what = _framework_file(rel)
    if what is None or what == "hydra-own":
        return None if what is None else {}
    try:
        obj = yaml.load(data.decode("utf-8-sig"), Loader=_TolerantLoader)  # noqa: S506
    except Exception as err:  # noqa: BLE001 - a half-written or odd file is no params
        log.info("%s not parsed: %s", rel, str(err).splitlines()[0] if str(err) else err)
        return {} if what != "hparams" else None
    if what == "hydra-multirun":
        # The sweep's base config and Hydra's settings, not any job's values.
        return {} if isinstance(obj, dict) and isinstance(obj.get("hydra"), dict) else None
    out: dict[str, object] = {}
    if what == "hydra-overrides":
        if isinstance(obj, list):
            _parse_args([str(x) for x in obj if isinstance(x, (str, int, float))], "", out)
            out = {k: v for k, v in out.items() if not k.startswith("argv[")}
        return redact_mapping(out)
    if not isinstance(obj, dict):
        return {} if what != "hparams" else None
    try:
        _flatten({k: v for k, v in obj.items() if str(k) != "hydra"}, "", out, [MAX_VALUES])
    except _Budget:
        log.warning("%s holds more than %d values; kept the first", rel, MAX_VALUES)
    except RecursionError:
        log.warning("%s nests too deep to flatten", rel)
        return {}
    return redact_mapping(_resolve(out))
