"""Whether a file a run read or wrote is an asset of the experiment or a tool's `meta`.

Libraries and tools open the project's own metadata and their bookkeeping around every
run: git and DVC files, CI and packaging files, caches, lock and tmp files, the files a
tracking store keeps per run. Those are kept (role ``meta``) but are never params,
never lineage edges, and are shown apart from the run's inputs and outputs.

`role_of(rel, written=..., rules=...)` answers ``"meta"`` or ``"asset"``:

1. the project's ``[roles] asset`` globs (config.toml): ``asset``;
2. the project's ``[roles] meta`` globs: ``meta``;
3. the built-in table `BUILTIN` below, in order, the *last* matching rule winning (as in
   ``.gitignore``), so a tool's folder can be ``meta`` and some files in it (the
   metrics it keeps, the artifacts the user logged) assets again;
4. ``asset``.

Globs are gitignore syntax, relative to the project (a glob with a ``/`` in it is
anchored at the project root, one without matches at any depth). Built-in rules ignore
case; the project's do not. A path outside the project (absolute) is matched without its
leading ``/``, and the built-in rules marked ``inside`` (caches: ``~/.cache/huggingface``
holds the pretrained model a run reads) do not apply to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple

import pathspec

Role = Literal["meta", "asset"]
META: Role = "meta"
ASSET: Role = "asset"
_CACHE_MAX = 100_000  # answers remembered per rule set and side; cleared when full


class Rule(NamedTuple):
    glob: str  # gitignore syntax, lower case (built-in rules are matched ignoring case)
    role: Role
    reason: str
    on: Literal["any", "read", "write"] = "any"  # the accesses the rule applies to
    inside: bool = False  # only inside the project


def _m(glob: str, reason: str, **kw: Any) -> Rule:
    return Rule(glob, META, reason, **kw)


def _a(glob: str, reason: str, **kw: Any) -> Rule:
    return Rule(glob, ASSET, reason, **kw)


_DOC_EXT = ("", ".md", ".rst", ".txt", ".adoc", ".org", ".markdown")

# The built-in rules, in order; the last matching one wins.
BUILTIN: tuple[Rule, ...] = (
    # -- version control ------------------------------------------------------------------
    _m(".git/", "git's own repository: read and written by git and GitPython, not the run"),
    _m(".hg/", "Mercurial's repository"),
    _m(".svn/", "Subversion's working copy metadata"),
    _m(".*ignore", "ignore lists (.gitignore, .dvcignore, .dockerignore...): tools read them"),
    _m(".gitattributes", "git settings"),
    _m(".gitmodules", "git settings"),
    _m(".gitkeep", "an empty placeholder that keeps a folder in git"),
    _m(".keep", "an empty placeholder that keeps a folder in git"),
    # -- DVC ------------------------------------------------------------------------------
    _m(".dvc/", "DVC's config, cache and tmp (the workspace copy is the asset)"),
    _m("*.dvc", "DVC's pointer to a tracked file, not the data itself"),
    _m("dvc.yaml", "DVC's pipeline definition, read by every dvc command"),
    _m("dvc.lock", "DVC's record of the last reproduction, rewritten by dvc repro"),
    # -- CI -------------------------------------------------------------------------------
    _m(".github/", "CI workflows and repository settings"),
    _m(".gitlab/", "GitLab templates and settings"),
    _m(".gitlab-ci.yml", "CI definition"),
    _m(".circleci/", "CI definition"),
    _m(".travis.yml", "CI definition"),
    _m(".buildkite/", "CI definition"),
    _m("azure-pipelines.yml", "CI definition"),
    _m("bitbucket-pipelines.yml", "CI definition"),
    _m("jenkinsfile", "CI definition"),
    _m(".pre-commit-config.yaml", "pre-commit hooks"),
    _m(".readthedocs.y*ml", "documentation hosting settings"),
    _m("codecov.yml", "coverage service settings"),
    _m(".codecov.yml", "coverage service settings"),
    # -- packaging, environments and linters -------------------------------------------------
    _m("pyproject.toml", "packaging and tool settings, read by pip, setuptools, linters"),
    _m("setup.cfg", "packaging and tool settings"),
    _m("manifest.in", "packaging file list"),
    _m("tox.ini", "test runner settings"),
    _m("pytest.ini", "test runner settings"),
    _m("mypy.ini", "type checker settings"),
    _m(".flake8", "linter settings"),
    _m(".pylintrc", "linter settings"),
    _m("ruff.toml", "linter settings"),
    _m(".ruff.toml", "linter settings"),
    _m(".coveragerc", "coverage settings"),
    _m(".coverage", "coverage data"),
    _m(".editorconfig", "editor settings"),
    _m("requirements*.txt", "the dependencies pip installs, not the experiment's data"),
    _m("requirements/*.txt", "the dependencies pip installs"),
    _m("constraints*.txt", "pip version constraints"),
    _m("environment.yml", "the conda environment definition"),
    _m("environment.yaml", "the conda environment definition"),
    _m("conda-lock.yml", "a locked conda environment"),
    _m("pipfile", "pipenv's dependency list"),
    _m("*.egg-info/", "setuptools' metadata of an installed project"),
    _m(".python-version", "pyenv's interpreter choice"),
    _m(".tool-versions", "asdf's tool versions"),
    _m("project.toml", "Julia's project file, read by every julia start"),
    _m("manifest.toml", "Julia's locked dependencies"),
    _m("package.json", "npm's package definition"),
    _m("package-lock.json", "npm's locked dependencies"),
    # -- documents about the project ----------------------------------------------------------
    # Read by packaging tools; a run that writes one (a model card beside the weights,
    # as Hugging Face's Trainer does) made an output. Only text names: authors.csv is data.
    *(_m(f"{name}{ext}", f"the project's {what}", on="read")
      for name, what in (("readme", "documentation"), ("license", "licence"),
                         ("licence", "licence"), ("copying", "licence"),
                         ("notice", "licence notices"), ("changelog", "history"),
                         ("contributing", "documentation"), ("authors", "documentation"),
                         ("code_of_conduct", "documentation"))
      for ext in _DOC_EXT),
    _m("license-*", "the project's licence (LICENSE-MIT, LICENSE-APACHE)", on="read"),
    # -- lock, tmp and system files ----------------------------------------------------------
    _m("*.lock", "a lock or locked-dependency file (poetry.lock, uv.lock, filelock's)"),
    _m("*.tmp", "a temporary file, renamed or deleted once written"),
    _m("*.temp", "a temporary file"),
    _m("*.part", "a partial download"),
    _m("*.swp", "an editor's swap file"),
    _m("*.swo", "an editor's swap file"),
    _m("*~", "an editor's backup"),
    _m(".~*", "an office suite's lock file (.~lock.sheet.ods#)"),
    _m(".#*", "an editor's lock file"),
    _m("*.pid", "a process id file"),
    _m(".ds_store", "macOS folder metadata"),
    _m("thumbs.db", "Windows thumbnail cache"),
    _m("desktop.ini", "Windows folder settings"),
    # -- caches -------------------------------------------------------------------------------
    _m("__pycache__/", "Python's bytecode cache"),
    _m("*.py[co]", "Python bytecode"),
    _m(".cache/", "a tool's cache inside the project", inside=True),
    _m(".pytest_cache/", "pytest's cache"),
    _m(".mypy_cache/", "mypy's cache"),
    _m(".ruff_cache/", "ruff's cache"),
    _m(".hypothesis/", "hypothesis' example database"),
    _m(".ipynb_checkpoints/", "Jupyter's autosaved copies of notebooks"),
    _m(".virtual_documents/", "JupyterLab's language-server copies of notebooks"),
    _m(".tox/", "tox's environments"),
    _m(".nox/", "nox's environments"),
    _m(".eggs/", "setuptools' downloaded build dependencies"),
    _m(".idea/", "an IDE's project settings"),
    _m(".vscode/", "an IDE's project settings"),
    _m(".onlooker/", "onlooker's own store"),
    # -- tracking stores' bookkeeping ------------------------------------------------------------
    _m("**/mlruns/**", "MLflow's file store: meta.yaml, tags, params and metric files per"
       " run (what it holds was the run's argv, configs and logs first)"),
    _a("**/mlruns/**/artifacts/**", "what the run logged to MLflow: models, plots, files"),
    _m("mlflow.db*", "MLflow's SQLite tracking store and its journal"),
    _m("**/wandb/**", "W&B's run folders: run records, debug logs, copies of settings"),
    _a("**/wandb/**/files/wandb-summary.json", "the final metrics W&B keeps: the run's"),
    _m("**/dvclive/**", "DVCLive's bookkeeping (its dvc.yaml, params copy, reports)"),
    _a("**/dvclive/metrics.json", "DVCLive's metrics: the run's"),
    _a("**/dvclive/plots/**", "DVCLive's metric histories and images: the run's"),
    _m("**/.neptune/**", "Neptune's offline run store"),
    _m("**/.aim/**", "Aim's run repository"),
    _m("**/.hydra/**", "Hydra's record of the job: its settings, and the composed config"
       " and overrides, which become the run's params (not files to compare)"),
    _m("**/multirun.yaml", "Hydra's record of a sweep's settings"),
)


def _spec(lines: list[str]) -> pathspec.PathSpec:
    """Plain last-match-wins gitignore matching (not GitIgnoreSpec, whose file-over-folder
    priority would break the ordered table)."""
    try:  # pathspec >= 1.0 names the syntax "gitignore"; 0.12 only "gitwildmatch"
        return pathspec.PathSpec.from_lines("gitignore", lines)
    except LookupError:  # pragma: no cover - older pathspec
        return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def _prefilter(spec: pathspec.PathSpec) -> re.Pattern[str] | None:
    """One regex matching whenever any including pattern matches: most paths match no
    rule, and one regex tells that faster than the patterns in turn."""
    parts = []
    for pat in spec.patterns:
        if pat.include is not True:
            continue
        regex = getattr(pat, "regex", None)
        if regex is None:  # pragma: no cover - a pathspec without regex patterns
            return None
        parts.append("(?:" + re.sub(r"\(\?P<\w+>", "(?:", regex.pattern) + ")")
    if not parts:
        return re.compile(r"(?!)")
    try:
        return re.compile("|".join(parts))
    except re.error:  # pragma: no cover
        return None


class _Matcher:
    """A rule list compiled for one situation (read or write, inside or outside)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.spec = _spec([r.glob if r.role == META else "!" + r.glob for r in self.rules])
        self.pre = _prefilter(self.spec)

    def match(self, rel: str) -> bool:
        if self.pre is not None and self.pre.match(rel) is None:
            return False
        return bool(self.spec.match_file(rel))

    def which(self, rel: str) -> Rule | None:
        """The rule that decides `rel` (the last one matching), None if none does."""
        for rule, pat in zip(reversed(self.rules), reversed(self.spec.patterns), strict=True):
            if pat.include is not None and pat.match_file(rel) is not None:
                return rule
        return None


def _user_spec(globs: Iterable[str]) -> pathspec.PathSpec | None:
    lines = [g for g in globs if g and g.strip()]
    return _spec(lines) if lines else None


class RoleRules:
    """The built-in table compiled once, with a project's `[roles]` globs over it."""

    def __init__(self, meta: Iterable[str] = (), asset: Iterable[str] = (),
                 builtin: Iterable[Rule] = BUILTIN) -> None:
        self.meta_globs = tuple(meta)
        self.asset_globs = tuple(asset)
        table = tuple(builtin)
        self._user_asset = _user_spec(self.asset_globs)
        self._user_meta = _user_spec(self.meta_globs)
        self._builtin = {
            (written, inside): _Matcher(
                r for r in table
                if r.on in ("any", "write" if written else "read") and (inside or not r.inside))
            for written in (False, True) for inside in (False, True)
        }
        # keyed by the caller's own string, one dict per side (read, written): no key
        # tuple (56 bytes a path, 5.6 MB in a 100,000-file burst)
        self._cache: tuple[dict[str, Role], dict[str, Role]] = ({}, {})

    @classmethod
    def from_config(cls, cfg: Any) -> RoleRules:
        """From a Config (or anything `cfg["roles"]` gives `meta` / `asset` lists of)."""
        section = cfg["roles"]
        return cls(meta=section.get("meta", ()), asset=section.get("asset", ()))

    def role(self, rel: str, written: bool) -> Role:
        cache = self._cache[written]
        found = cache.get(rel)
        if found is None:
            found = self._decide(rel, written, why=False)[0]
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[rel] = found
        return found

    def explain(self, rel: str, written: bool) -> tuple[Role, str]:
        """The role and, in words, why."""
        return self._decide(rel, written, why=True)

    def _decide(self, rel: str, written: bool, *, why: bool) -> tuple[Role, str]:
        path, inside = _normal(rel)
        if not path:
            return ASSET, "no rule names it"
        if self._user_asset is not None and self._user_asset.match_file(path):
            return ASSET, "the project's [roles] asset globs"
        if self._user_meta is not None and self._user_meta.match_file(path):
            return META, "the project's [roles] meta globs"
        matcher = self._builtin[(written, inside)]
        low = path.lower()
        role = META if matcher.match(low) else ASSET
        if not why:
            return role, ""
        rule = matcher.which(low)
        return role, rule.reason if rule is not None else "no rule names it"


def _normal(rel: str) -> tuple[str, bool]:
    """(the path as the globs see it, whether it is inside the project)."""
    path = rel.replace("\\", "/")
    inside = not path.startswith("/")
    path = path.lstrip("/")
    while path.startswith("./"):
        path = path[2:]
    return path, inside


DEFAULT = RoleRules()


def role_of(rel: str, *, written: bool, rules: RoleRules | None = None) -> Role:
    """``"meta"`` or ``"asset"`` for a path a run read (``written=False``) or wrote.

    `rel` is project-relative (``/``-separated) or absolute for a path outside the
    project; `rules` comes from ``RoleRules.from_config(cfg)`` (or ``cfg.role_rules``),
    the built-in table alone when None."""
    return (rules or DEFAULT).role(rel, written)


def explain(rel: str, *, written: bool, rules: RoleRules | None = None) -> tuple[Role, str]:
    """`role_of` with the reason of the deciding rule, for people and tests."""
    return (rules or DEFAULT).explain(rel, written)
