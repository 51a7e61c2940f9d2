"""Name the kind of an asset (dataset, model, code, config...) from its path and first bytes.

`kind_of` applies, first match wins:

1. The project's ``kinds.rules``: gitignore-style globs relative to the project ->
   kind. Among the rules the *last* matching one wins, as in ``.gitignore``, so a
   general rule can be followed by exceptions.
2. Files that hold secrets are ``other`` and so never copied into the store:
   ``.env``, ``.env.*``, ``*.pem``, ``*.key``, ``.netrc``, ``.pgpass``, ``id_rsa*``...
   Training state a checkpoint keeps beside the weights is ``state``, whatever its
   bytes (``torch.save`` writes it as it writes a model): ``optimizer.pt``,
   ``scheduler.pt``, ``scaler.pt``, ``rng_state*.pth``, ``training_args.bin`` (Hugging
   Face), ``optimizer.bin``, ``scheduler.bin``, ``sampler.bin``, ``random_states_*.pkl``
   (Accelerate), ``*optim_states.pt`` (DeepSpeed). It resumes a run but cannot be loaded
   as a model, so it is no ``model``; it is kept like one (copied up to the size limit).
3. Content, from the first 4096 bytes when given:
   zip whose first entry is ``*/data.pkl`` or ``data.pkl`` (``torch.save``) -> model;
   zip of ``.npy`` entries (``.npz``) -> dataset; safetensors (8-byte little-endian
   header length, then ``{"``) -> model; GGUF/GGML -> model; HDF5 (also at the
   512/1024/2048 user-block offsets) -> model when the name hints a model, else
   dataset; Parquet ``PAR1``, Arrow ``ARROW1``, Feather ``FEA1``, ORC, Avro,
   NumPy ``\\x93NUMPY`` -> dataset (model when the name hints a model); pickle
   (protocol 2-5) -> as a ``.pkl`` (below); a JSON object with ``"cells"`` and
   ``"nbformat"`` -> notebook.
4. Names: notebook ``.ipynb .Rmd .qmd``; metrics ``metrics*``/``scores*``/
   ``results*``/``summary*``/``*_results``... ``.json|.yaml|.csv|.tsv`` and ``eval*.json``
   (not when a word says config: ``eval_config.yaml``), ``trainer_state.json``,
   ``events.out.tfevents.*``, ``.csv/.tsv/.json`` or extension-less files under a
   ``metrics/`` folder; config ``params*.json``, ``config*.json``, ``.json`` under
   ``configs/``/``conf/``/``config/``..., ``hparams*``, ``*.yaml .yml .toml .ini .cfg
   .conf``, ``requirements*.txt``; code: source extensions, ``Makefile``, ``Snakefile``,
   ``Dockerfile``...; model: ``.pt .pth .ckpt .safetensors .onnx .tflite .keras .gguf .ggml
   .mar .cbm .xgb .lgb`` anywhere, ``.pb .bin .model .h5`` under
   ``models/``/``checkpoints/`` or named ``*model*``/``*weights*``/``*checkpoint*``; ``.pkl
   .pickle .joblib`` -> dataset under a data folder (``data/``, ``raw/``, ``dataset(s)/``,
   ``features/``) or when read as input with a data-like name (``train_df.pkl``,
   ``X_train.pkl``), else model (an output pickle is a model); dataset: ``.csv .tsv .parquet
   .feather .arrow .jsonl .ndjson .npy .npz .tfrecord .avro .orc .h5 .hdf5`` and anything
   else under a data folder; log: ``.log .out .err`` and anything under ``logs/``/``log/``.
5. ``other``.
"""

from __future__ import annotations

import functools
import logging
import re
import struct
from typing import NamedTuple

import pathspec

log = logging.getLogger(__name__)

KINDS = ("dataset", "model", "code", "config", "notebook", "metrics", "log", "state", "other")
STORE_ALWAYS = {"code", "config", "notebook", "metrics", "log"}

CODE_EXT = frozenset(
    ".py .pyx .pxd .r .jl .sh .bash .zsh .m .scala .java .kt .cpp .cc .cxx .c .h .hpp .cu"
    " .cuh .go .rs .lua .pl .rb .ts .tsx .js .jsx .mjs .sql .swift .f90 .awk .nf .smk .wdl"
    .split()
)
CODE_NAMES = frozenset({"makefile", "gnumakefile", "snakefile", "dockerfile", "justfile",
                        "containerfile", "vagrantfile", "procfile"})
NOTEBOOK_EXT = frozenset({".ipynb", ".rmd", ".qmd"})
CONFIG_EXT = frozenset({".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf"})
MODEL_EXT = frozenset(".pt .pth .ckpt .safetensors .onnx .tflite .keras .gguf .ggml .mar .cbm"
                      " .xgb .lgb".split())
MODEL_IF_NAMED = frozenset({".pb", ".bin", ".model", ".h5", ".hdf5", ".npy", ".npz"})
PICKLE_EXT = frozenset({".pkl", ".pickle", ".joblib"})
DATASET_EXT = frozenset(".csv .tsv .parquet .feather .arrow .jsonl .ndjson .npy .npz .tfrecord"
                        " .tfrecords .avro .orc .h5 .hdf5".split())
LOG_EXT = frozenset({".log", ".out", ".err"})
DATA_DIRS = frozenset({"data", "dataset", "datasets", "raw", "features"})
MODEL_DIRS = frozenset({"models", "model", "checkpoints", "checkpoint", "ckpt", "weights"})
LOG_DIRS = frozenset({"logs", "log"})
_METRIC_WORDS = frozenset({"metric", "metrics", "score", "scores", "result", "results",
                           "summary"})
_CONFIG_WORDS = frozenset({"config", "conf", "cfg", "params", "hparams", "args", "settings"})
CONFIG_DIRS = frozenset({"config", "configs", "conf", "cfg", "params", "hparams", "settings"})
_MODEL_HINT = re.compile(r"model|weight|checkpoint|ckpt|encoder|decoder|classifier", re.I)
_DATA_HINT = re.compile(r"(?:^|[_\-.])(?:data|dataset|df|features?|train|test|val|valid|"
                        r"split|[xy])(?:[_\-.]|$)", re.I)
_SECRET_FILE = re.compile(r"^(?:\.env(?:\..*)?|.*\.env|.*\.pem|.*\.key|\.netrc|\.pgpass|"
                          r"id_(?:rsa|dsa|ecdsa|ed25519)(?:\..*)?|.*credentials?.*|.*secrets?\..*)$",
                          re.I)
_WORDS = re.compile(r"[_\-. ]+")
# Optimizer, scheduler, AMP scaler, sampler and RNG state, and pickled training arguments:
# what a checkpoint holds to resume training, beside (not as) the model.
_STATE_FILE = re.compile(
    r"^(?:(?:optimizer|optim|scheduler|lr_scheduler|scaler|sampler|rng_state|random_states?)"
    r"(?:[_\-.][a-z0-9]+)*|training_args|.*optim_states)"
    r"\.(?:pt|pth|bin|pkl|pickle|safetensors)$")


@functools.lru_cache(maxsize=32)
def _compiled(rules: tuple[tuple[str, str], ...]) -> list[tuple[pathspec.PathSpec, str]]:
    out = []
    for glob, kind in rules:
        if kind not in KINDS:
            log.warning("kinds.rules: '%s' maps to unknown kind '%s'; rule ignored", glob, kind)
            continue
        out.append((_spec(glob), kind))
    return out


def _spec(glob: str) -> pathspec.PathSpec:
    try:  # pathspec >= 1.0 names the syntax "gitignore"; 0.12 only "gitwildmatch"
        return pathspec.PathSpec.from_lines("gitignore", [glob])
    except LookupError:  # pragma: no cover - older pathspec
        return pathspec.PathSpec.from_lines("gitwildmatch", [glob])


def _by_rules(rel: str, rules: dict[str, str]) -> str | None:
    found = None
    for spec, kind in _compiled(tuple(rules.items())):
        if spec.match_file(rel):
            found = kind
    return found


def _zip_first_name(head: bytes) -> str | None:
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        return None
    n = struct.unpack_from("<H", head, 26)[0]
    return head[30:30 + n].decode("utf-8", "replace")


_HDF5 = b"\x89HDF\r\n\x1a\n"


def _sniff(head: bytes, size: int | None) -> str | None:
    """A kind, or 'pickle'/'hdf5'/'array' for the cases the name then decides."""
    first = _zip_first_name(head)
    if first is not None:
        if first == "data.pkl" or first.endswith("/data.pkl"):
            return "model"
        return "array" if first.endswith(".npy") else None
    if len(head) >= 10 and head[8:10] == b'{"':
        (n,) = struct.unpack_from("<Q", head, 0)
        if 2 <= n < 100 * 1024 * 1024 and (size is None or n + 8 <= size):
            return "model"
    if head[:4] in (b"GGUF", b"lmgg", b"tjgg", b"fmgg"):
        return "model"
    if _HDF5 in (head[:8], head[512:520], head[1024:1032], head[2048:2056]):
        return "hdf5"
    if head[:4] in (b"PAR1", b"FEA1", b"Obj\x01") or head[:6] == b"ARROW1" or head[:3] == b"ORC":
        return "dataset"
    if head[:6] == b"\x93NUMPY":
        return "array"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:1] == b"{" and b'"cells"' in head and b'"nbformat' in head:
        return "notebook"
    return None


def _metrics_name(stem: str, ext: str, in_metrics_dir: bool) -> bool:
    if stem.startswith("events.out.tfevents") or (stem == "trainer_state" and ext == ".json"):
        return True
    named = ext in (".json", ".yaml", ".yml", ".csv", ".tsv")
    if not named and not in_metrics_dir:
        return False  # (what follows can only say yes for these)
    words = [w for w in _WORDS.split(stem) if w]
    if not words or _CONFIG_WORDS.intersection(words):
        return False
    if named:
        if words[0] in _METRIC_WORDS or words[-1] in _METRIC_WORDS:
            return True
        if ext == ".json" and words[0].startswith("eval"):
            return True
    return in_metrics_dir and ext in ("", ".csv", ".tsv", ".json", ".yaml", ".yml", ".txt")


def _pickle_kind(name: str, in_data: bool, role: str | None) -> str:
    if _MODEL_HINT.search(name):
        return "model"
    if in_data or (role == "input" and _DATA_HINT.search(name.rsplit(".", 1)[0])):
        return "dataset"
    return "model"


def holds_secrets(rel_path: str) -> bool:
    """A file whose content is credentials (.env, keys): hashed, never copied."""
    return bool(_SECRET_FILE.match(rel_path.rsplit("/", 1)[-1]))


def kind_of(rel_path: str, head: bytes | None, *, size: int | None, role: str | None,
            rules: dict[str, str]) -> str:
    """The kind of the file at rel_path (project-relative, ``/``-separated).

    `role` is how the run used it (``input``, ``output``, ``code``, ``meta`` or None);
    only pickles depend on it (an input with a data-like name is a dataset)."""
    rel = rel_path.replace("\\", "/") if "\\" in rel_path else rel_path
    while rel.startswith("./"):
        rel = rel[2:]
    if rules:
        ruled = _by_rules(rel, rules)
        if ruled:
            return ruled
    folder, _, name = rel.rpartition("/")
    if not name:  # "a/b/": the last named part is the name
        parts = [p for p in rel.split("/") if p]
        name = parts[-1] if parts else ""
        folder = "/".join(parts[:-1])
    low = name.lower()
    if _SECRET_FILE.match(low):
        return "other"
    if _STATE_FILE.match(low):
        return "state"
    where = _folder(folder)
    in_data = where.data
    stem, dot, ext = low.rpartition(".")
    if not dot or not stem:  # "Makefile", ".bashrc"
        stem, ext = low, ""
    else:
        ext = "." + ext
    sniffed = _sniff(head, size) if head else None
    if sniffed == "pickle":
        return _pickle_kind(low, in_data, role)
    if sniffed in ("hdf5", "array"):
        return "model" if _model_hint(name, ext, where) and not in_data else "dataset"
    if sniffed:
        return sniffed
    if ext in NOTEBOOK_EXT:
        return "notebook"
    if _metrics_name(stem, ext, where.metrics):
        return "metrics"
    if ext in CONFIG_EXT or (ext == ".json" and (where.config
                                                  or set(_WORDS.split(stem)) & _CONFIG_WORDS)) \
            or stem.startswith("hparams") or (stem.startswith("requirements") and ext == ".txt"):
        return "config"
    if ext in CODE_EXT or low in CODE_NAMES:
        return "code"
    if ext in MODEL_EXT:
        return "model"
    if ext in PICKLE_EXT:
        return _pickle_kind(low, in_data, role)
    if ext in MODEL_IF_NAMED and not in_data and _model_hint(name, ext, where):
        return "model"
    if ext in DATASET_EXT or in_data:
        return "dataset"
    if ext in LOG_EXT or where.logs:
        return "log"
    return "other"


class _Where(NamedTuple):
    """What a file's folders say about its kind (the same for every file in it)."""

    data: bool
    models: bool
    metrics: bool
    config: bool
    logs: bool


@functools.lru_cache(maxsize=4096)
def _folder(folder: str) -> _Where:
    """Per folder, once: a run writing 20,000 files into 20 folders asks 20 times."""
    parents = [p.lower() for p in folder.split("/") if p]
    return _Where(data=any(p in DATA_DIRS for p in parents),
                  models=any(p in MODEL_DIRS for p in parents),
                  metrics=any(p in ("metrics", "scores") for p in parents),
                  config=any(p in CONFIG_DIRS for p in parents),
                  logs=any(p in LOG_DIRS for p in parents))


def _model_hint(name: str, ext: str, where: _Where) -> bool:
    return bool(_MODEL_HINT.search(name)) or where.models or ext == ".keras"


def is_code(rel_path: str) -> bool:
    """True for code and notebooks: what the catalog keeps as a run's code."""
    return kind_of(rel_path, None, size=None, role=None, rules={}) in ("code", "notebook")
