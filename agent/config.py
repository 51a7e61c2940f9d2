"""Project configuration: `.onlooker/config.toml`, merged over the defaults here."""

from __future__ import annotations

import copy
import errno
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from onlooker.agent.errors import AgentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STORE_DIR = ".onlooker"
CONFIG_NAME = "config.toml"

DEFAULTS: dict[str, Any] = {
    "capture": {
        # "auto" picks the best tier the agent is allowed; the others force one.
        "process": "auto",  # auto | netlink | poll
        "files": "auto",  # auto | fanotify | inotify
        "poll_hz": 20,  # the unprivileged tier: 20 Hz sees every 100 ms process
        "grace_seconds": 0.5,  # events wait this long before attribution is final
        "quiet_seconds": 0.2,  # a written file must be still this long before hashing
        "hash_threads": 2,
        "telemetry_seconds": 1.0,  # how often each live run's process tree is sampled
    },
    "store": {
        "object_max_bytes": 256 * 1024 * 1024,  # datasets/models larger are only hashed
    },
    "runs": {
        # Programs (basename of argv[0] or exe, version suffixes stripped) that start runs.
        "programs": [
            "python", "python3", "pypy", "pypy3", "ipython", "Rscript", "R", "julia",
            "make", "gmake", "dvc", "torchrun", "accelerate", "deepspeed", "mpirun",
            "mpiexec", "snakemake", "nextflow", "java", "node", "ruby", "perl", "octave",
            "matlab", "papermill", "jupyter-nbconvert", "lua", "go",
        ],
        # Shells start a run only when they run a script file (not -c, not a prompt).
        "shells": ["bash", "sh", "dash", "zsh", "ksh", "fish"],
        # Never runs, even inside the project.
        "ignore": [
            "git", "git-remote-http", "less", "more", "most", "vi", "vim", "nvim", "nano",
            "emacs", "code", "code-server", "pyright", "pyright-langserver", "pylsp",
            "jedi-language-server", "ruff", "ruff-lsp", "mypy", "black", "tmux", "screen",
            "ssh", "sshd", "onlooker", "sudo", "watch", "top", "htop", "man",
        ],
        # Python modules (`python -m X`) that are tools, not experiments.
        "ignore_modules": [
            "onlooker", "onlooker.cli", "onlooker.agent", "pip", "pylsp", "jedi_language_server",
            "mypy", "black", "ruff", "pyright", "venv", "ensurepip",
        ],
        # Globs over the program, its script or module, or the whole command line that
        # are runs even where the rules above call them tools or probes (`python -m
        # pytest*` to track test runs).
        "include": [],
    },
    "watch": {
        # Besides .onlooker/, .git/, virtualenvs, node_modules, __pycache__ and
        # .onlookerignore: folders never watched.
        "exclude": [".onlooker", ".git", ".hg", ".svn", "node_modules", "__pycache__",
                    ".venv", "venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
                    ".ruff_cache", ".ipynb_checkpoints", ".idea", ".vscode"],
        # Outside the project, reads under these prefixes are the system, not inputs.
        "outside_ignore": ["/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin",
                           "/etc", "/proc", "/sys", "/dev", "/run", "/var", "/boot",
                           "/snap", "/opt/conda/pkgs", "/tmp", "~/.cache/pip",
                           "~/.local/lib", "~/.pyenv", "~/.conda", "~/.config", "~/.ipython",
                           "~/.jupyter", "~/.matplotlib", "~/.cache/matplotlib",
                           "~/.cache/fontconfig", "~/.keras/keras.json", "~/.gitconfig",
                           "~/.netrc", "~/.bash_history"],
        # Outside the project, files under these folders are inputs when a run reads
        # them, even under a prefix above ($TMPDIR staging on a cluster, say).
        "data_roots": [],
    },
    "params": {
        # Environment variables recorded as params `env:NAME` when a run has them.
        "env": ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED", "TF_CPP_MIN_LOG_LEVEL",
                "TOKENIZERS_PARALLELISM", "CUBLAS_WORKSPACE_CONFIG", "WORLD_SIZE", "RANK",
                "LOCAL_RANK", "MASTER_PORT", "SEED", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE",
                "TRANSFORMERS_OFFLINE", "PYTORCH_CUDA_ALLOC_CONF", "XLA_FLAGS"],
        "config_max_bytes": 1024 * 1024,  # config files larger are not parsed
    },
    "metrics": {
        "max_bytes": 16 * 1024 * 1024,  # metrics and log files larger are not parsed
        "sniff_max_bytes": 1024 * 1024,  # other outputs are looked into up to this size
        "sniff": True,  # look for numbers in JSON/CSV outputs not named as metrics
    },
    "kinds": {
        # Glob (gitignore syntax, relative to the project) -> kind; checked first.
        "rules": {},
    },
    "roles": {
        # Globs (gitignore syntax, relative to the project) of files that are a tool's
        # business (meta), over the built-in rules in agent/rules/roles.py, and of files that are
        # the experiment's assets whatever those rules say (asset wins).
        "meta": [],
        "asset": [],
    },
}


class ConfigError(AgentError):
    """The project config cannot be used; the message is one sentence for a person."""


@dataclass
class Config:
    project: Path
    data: dict[str, Any]

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    @property
    def store_dir(self) -> Path:
        return self.project / STORE_DIR

    @cached_property
    def role_rules(self) -> Any:
        """The `[roles]` globs over the built-in table, compiled once (agent/rules/roles.py)."""
        from onlooker.agent.rules.roles import RoleRules

        return RoleRules.from_config(self)


def _merge(base: dict[str, Any], over: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base:
            raise ConfigError(f"unknown setting '{where}{key}' in {CONFIG_NAME}")
        if isinstance(base[key], dict) and key != "rules":
            if not isinstance(value, dict):
                raise ConfigError(f"setting '{where}{key}' in {CONFIG_NAME} must be a table")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            expected = type(base[key])
            if expected is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool) != isinstance(
                base[key], bool
            ):
                raise ConfigError(
                    f"setting '{where}{key}' in {CONFIG_NAME} must be a {expected.__name__}"
                )
            out[key] = value
    return out


_CHOICES = {("capture", "process"): ("auto", "netlink", "poll"),
            ("capture", "files"): ("auto", "fanotify", "inotify")}


def load(project: Path) -> Config:
    """Read the project's config; raise ConfigError with one clear sentence."""
    project = Path(project).resolve()
    path = project / STORE_DIR / CONFIG_NAME
    over: dict[str, Any] = {}
    try:
        # Never through a link, never a FIFO or device, never unbounded: root reads it
        # too (the service, `sudo onlooker start`), and the owner can write it.
        from onlooker.store import private

        raw = private.read_small(path, private.Owner.of(project))
    except FileNotFoundError:
        raw = None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EINVAL):
            raise ConfigError(f"{path} is not a plain file (a link, FIFO or device): "
                              "onlooker reads its store's files only as they are") from err
        if err.errno == errno.EFBIG:
            raise ConfigError(f"{path} is larger than {private.SMALL_MAX // 2**20} MiB, "
                              "too large for a config") from err
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    if raw is not None:
        try:
            over = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from err
    data = _merge(DEFAULTS, over, "")
    for key in ("poll_hz", "telemetry_seconds", "grace_seconds", "quiet_seconds", "hash_threads"):
        if data["capture"][key] <= 0:
            raise ConfigError(f"setting 'capture.{key}' in {CONFIG_NAME} must be positive")
    for section, key in (("store", "object_max_bytes"), ("metrics", "max_bytes"),
                         ("metrics", "sniff_max_bytes")):
        if data[section][key] < 0:
            raise ConfigError(f"setting '{section}.{key}' in {CONFIG_NAME} must not be negative")
    for (section, key), allowed in _CHOICES.items():
        if data[section][key] not in allowed:
            raise ConfigError(
                f"setting '{section}.{key}' in {CONFIG_NAME} must be one of {', '.join(allowed)}"
            )
    if not all(isinstance(v, str) for v in data["kinds"]["rules"].values()):
        raise ConfigError(f"'kinds.rules' in {CONFIG_NAME} maps globs to kind names")
    for key in ("meta", "asset"):
        globs = data["roles"][key]
        if not all(isinstance(g, str) and g.strip() for g in globs):
            raise ConfigError(f"setting 'roles.{key}' in {CONFIG_NAME} must be a list of globs")
        if any(g.lstrip().startswith("!") for g in globs):
            raise ConfigError(f"setting 'roles.{key}' in {CONFIG_NAME} takes no '!' globs: "
                              "list the exceptions under 'roles.asset' or 'roles.meta'")
    return Config(project=project, data=data)


TEMPLATE = """\
# onlooker project settings. Every setting is optional; the defaults are in
# onlooker/agent/config.py and docs/user-guide.md.

[capture]
# process = "auto"   # auto | netlink | poll   (force the unprivileged tier with "poll")
# files = "auto"     # auto | fanotify | inotify
# poll_hz = 20

[store]
# object_max_bytes = 268435456   # datasets and models larger than this are hashed, not copied

# [kinds.rules]
# "data/raw/**" = "dataset"

# [roles]   # tools' files (meta) are kept apart from the run's inputs and outputs
# meta = ["scratch/**"]            # also the tools' business
# asset = ["dvclive/report.html"]  # the experiment's, whatever the built-in rules say
"""


GITIGNORE = "# onlooker's store is local to this machine: never commit it.\n*\n"


def instrument(project: Path) -> bool:
    """Create `.onlooker/` with catalog, config template and .gitignore; False if it existed.

    All of it is the project owner's and private (store/private.py), also after `sudo
    onlooker init`: config.toml is theirs to edit (0600). A store an older version left
    (0755/0644, root's) is given to them as the agent's start would."""
    from onlooker.store import private
    from onlooker.store.catalog import Catalog

    store_dir = project / STORE_DIR
    existed = store_dir.is_dir()
    owner = private.Owner.of(project)
    if existed:
        private.secure_store(store_dir, owner)
    Catalog.init(project).close()
    _create_private(store_dir / CONFIG_NAME, TEMPLATE, owner)
    _create_private(store_dir / ".gitignore", GITIGNORE, owner)
    return not existed


def _create_private(path: Path, text: str, owner: Any) -> None:
    """Write `path` only if it is not there: an edited config is never replaced."""
    from onlooker.store import private

    try:
        fd = private.open_private(path, os.O_WRONLY | os.O_EXCL, owner)
    except FileExistsError:
        return
    try:
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        os.close(fd)
        os.unlink(path)  # a half template would never be written again
        raise
    os.close(fd)
