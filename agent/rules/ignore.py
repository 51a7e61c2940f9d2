"""Which paths the agent watches inside the project, and which outside reads count."""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

import pathspec

from onlooker.agent.errors import AgentError
from onlooker.agent.rules.codemap import is_bytecode

log = logging.getLogger(__name__)

IGNORE_FILE = ".onlookerignore"
# Never watched whatever the config says: our own store, git's, and bytecode caches.
ALWAYS_EXCLUDED = (".onlooker", ".git", "__pycache__")
_PY_LIB = re.compile(r"python\d+(\.\d+)?t?$")
_CACHE_MAX = 200_000  # entries per cache; cleared when full (a bound, not an LRU)


class OutsideProject(AgentError, ValueError):
    """A path given as inside the project is not."""


def _compile_spec(lines: list[str], source: str) -> pathspec.GitIgnoreSpec | None:
    """Compile gitignore lines; a bad line is logged and dropped, not fatal."""
    try:
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
    except Exception:  # pathspec raises its own errors per bad pattern
        good = []
        for n, line in enumerate(lines, 1):
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except Exception as err:
                log.warning("ignoring line %d of %s: %s", n, source, err)
            else:
                good.append(line)
        spec = pathspec.GitIgnoreSpec.from_lines(good)
    return spec if any(p.include is not None for p in spec.patterns) else None


def _prefilter(spec: pathspec.GitIgnoreSpec) -> re.Pattern[str] | None:
    """One regex that matches whenever any pattern matches.

    Most paths match no pattern; one combined regex answers that in well under a
    microsecond, where pathspec tries each pattern in turn. Only paths that match
    something go to pathspec for the exact (last match wins) answer.
    """
    parts = []
    for pat in spec.patterns:
        if pat.include is None:
            continue
        regex = getattr(pat, "regex", None)
        if regex is None:
            return None
        parts.append("(?:" + re.sub(r"\(\?P<\w+>", "(?:", regex.pattern) + ")")
    try:
        return re.compile("|".join(parts))
    except re.error:
        return None


class Ignore:
    """The watch rules of one project.

    `skip_dir` and `skip_file` are called for every file event, so decisions
    about folders are cached per folder; `reload()` and `invalidate()` clear them.
    All paths are absolute strings (or PathLike) on the resolved project path.
    """

    def __init__(self, project: Path, *, exclude: Iterable[str] = (),
                 outside_ignore: Iterable[str] = (), data_roots: Iterable[str] = ()) -> None:
        self.project = Path(project).resolve()
        self._root = str(self.project)
        self._root_slash = self._root.rstrip("/") + "/"
        names, rel_dirs = set(ALWAYS_EXCLUDED), set()
        for item in exclude:
            item = item.strip("/")
            if "/" in item:
                rel_dirs.add(item)
            elif item:
                names.add(item)
        self._names = frozenset(names)
        self._rel_dirs = frozenset(rel_dirs)
        prefixes = set()
        for item in outside_ignore:
            expanded = os.path.expanduser(item)
            if expanded.startswith("/"):
                prefixes.add(os.path.normpath(expanded))
        for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
            prefixes.add(os.path.normpath(p))
        # A project under /tmp must still see its own reads: the prefix test is
        # only for outside paths, so no prefix needs removing here.
        self._outside_prefixes = tuple(
            "/" if p == "/" else p + "/" for p in sorted(prefixes)
        )
        # Folders outside the project whose files are a run's data wherever they live
        # (cluster jobs stage data in $TMPDIR, under the ignored /tmp).
        self._data_roots = tuple(
            os.path.normpath(os.path.expanduser(d)).rstrip("/") + "/" for d in data_roots
            if os.path.expanduser(d).startswith("/"))
        self._dir_cache: dict[str, bool] = {}
        self._pyroot_cache: dict[str, bool] = {}
        self._spec: pathspec.GitIgnoreSpec | None = None
        self._pre: re.Pattern[str] | None = None
        self.reload()

    # -- inside the project -------------------------------------------------

    def reload(self) -> None:
        """Re-read `<project>/.onlookerignore` and forget every cached decision."""
        path = self.project / IGNORE_FILE
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as err:
            log.warning("cannot read %s: %s; no ignore patterns apply", path, err.strerror)
            text = ""
        self._spec = _compile_spec(text.splitlines(), str(path)) if text.strip() else None
        self._pre = _prefilter(self._spec) if self._spec is not None else None
        self.invalidate()

    def invalidate(self) -> None:
        """Forget cached folder decisions (a virtualenv appeared, a folder moved)."""
        self._dir_cache = {}
        self._pyroot_cache = {}

    def forget(self, abs_dir: str) -> None:
        """Forget the cached decision for one folder (it was just made)."""
        self._dir_cache.pop(abs_dir, None)

    def inside(self, abs_path: str | os.PathLike[str]) -> bool:
        p = os.fspath(abs_path)
        return p == self._root or p.startswith(self._root_slash)

    def rel(self, abs_path: str | os.PathLike[str]) -> str:
        """The project-relative posix path ('.' for the project itself)."""
        p = os.fspath(abs_path)
        if p == self._root:
            return "."
        if not p.startswith(self._root_slash):
            raise OutsideProject(f"{p} is not inside the project {self._root}")
        return p[len(self._root_slash):]

    def skip_dir(self, abs_path: str | os.PathLike[str]) -> bool:
        """True when the folder is not watched (outside paths are never watched)."""
        p = os.fspath(abs_path)
        hit = self._dir_cache.get(p)
        if hit is not None:
            return hit
        if p == self._root:
            return False
        if not p.startswith(self._root_slash):
            return True
        parent, _, name = p.rpartition("/")
        skip = (
            self.skip_dir(parent)
            or name in self._names
            or self._is_env(p)
            or (bool(self._rel_dirs) and p[len(self._root_slash):] in self._rel_dirs)
            or self._matches(p[len(self._root_slash):] + "/")
        )
        if len(self._dir_cache) >= _CACHE_MAX:
            self._dir_cache = {}
        self._dir_cache[p] = skip
        return skip

    def skip_file(self, abs_path: str | os.PathLike[str]) -> bool:
        """True when a file event on this path is not wanted."""
        p = os.fspath(abs_path)
        parent = p.rpartition("/")[0]
        if self.skip_dir(parent):
            return True
        if self._spec is None:
            return False
        return self._matches(p[len(self._root_slash):])

    def kept_pyc(self, abs_path: str) -> bool:
        """A project module's bytecode: skipped for watching, yet its open means the
        module was imported (the source itself is not opened when the cache is fresh),
        and its write that the module was compiled to be run."""
        head, sep, name = abs_path.rpartition("/__pycache__/")
        return bool(sep) and is_bytecode(name) and "/" not in name and not self.skip_dir(head)

    @property
    def has_patterns(self) -> bool:
        """Whether .onlookerignore holds any pattern (else only folders are skipped)."""
        return self._spec is not None

    def matches_pattern(self, abs_path: str) -> bool:
        """The .onlookerignore verdict alone, for a file whose folder is kept."""
        return self._matches(abs_path[len(self._root_slash):])

    def _matches(self, rel: str) -> bool:
        if self._spec is None:
            return False
        if self._pre is not None and self._pre.match(rel) is None:
            return False
        return bool(self._spec.match_file(rel))

    @staticmethod
    def _is_env(path: str) -> bool:
        """A virtualenv (any name) or a conda env: never watched."""
        return os.path.exists(path + "/pyvenv.cfg") or os.path.isdir(path + "/conda-meta")

    # -- outside the project ------------------------------------------------

    def outside_ok(self, abs_path: str | os.PathLike[str]) -> bool:
        """Whether a read outside the project may be a run's input.

        False under the configured system prefixes, any site-/dist-packages, any
        Python installation or environment, and for anything but a regular file.
        Inside the project the watch rules answer instead.
        """
        p = os.fspath(abs_path)
        if not p.startswith("/"):  # pipe:[..], socket:[..], anon_inode:..
            return False
        if self.inside(p):
            return not self.skip_file(p)
        if not (self._data_roots and p.startswith(self._data_roots)):
            if (p + "/").startswith(self._outside_prefixes):
                return False
            if not self._not_software(p):
                return False
        return _regular(p)

    def named_ok(self, abs_path: str) -> bool:
        """Whether a file outside the project that a run's argv names is its input: where
        `outside_ok` says so, and also in scratch space (/tmp, /var/tmp, /dev/shm,
        /scratch: cluster jobs stage data in $TMPDIR), but never installed software (a
        shim, an interpreter), which a command line names as a tool, not as data."""
        p = os.fspath(abs_path)
        if p.startswith(_SCRATCH):
            return self._not_software(p) and _regular(p)
        if p.startswith(("/proc/", "/sys/", "/dev/")):
            return False  # the kernel's views, whatever the config says
        return self.outside_ok(p)

    def _not_software(self, p: str) -> bool:
        if "/site-packages/" in p or "/dist-packages/" in p:
            return False
        return not self._in_python_root(p.rpartition("/")[0])


    def _in_python_root(self, d: str) -> bool:
        hit = self._pyroot_cache.get(d)
        if hit is not None:
            return hit
        if d in ("", "/"):
            return False  # / often holds lib/python3.X itself: it is no environment
        result = self._is_python_root(d) or self._in_python_root(d.rpartition("/")[0] or "/")
        if len(self._pyroot_cache) >= _CACHE_MAX:
            self._pyroot_cache = {}
        self._pyroot_cache[d] = result
        return result

    @staticmethod
    def _is_python_root(d: str) -> bool:
        """The folder is some Python's prefix: a venv, a conda env, an install."""
        if os.path.exists(d + "/pyvenv.cfg") or os.path.isdir(d + "/conda-meta"):
            return True
        try:
            names = os.listdir(d + "/lib")
        except OSError:
            return False
        return any(n.startswith("python") and _PY_LIB.match(n) for n in names)


def _regular(p: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(p).st_mode)
    except OSError:
        return False


# Scratch space outside the project: ignored for reads a run makes on its own (caches,
# lock files), but a file the run's argv names there is its data.
_SCRATCH = ("/tmp/", "/var/tmp/", "/dev/shm/", "/scratch/", "/var/scratch/")
