"""Decide which processes start runs, and what script a run executes.

A run is a process whose cwd is inside the project, or whose argv names a path
inside it, and whose program runs experiments. `is_run` applies, in order:

0. ``runs.include`` (globs over the program name, the script or module name, and
   the command line, ``python -m pytest*``) makes a matching process a run whatever
   the rules below say, as long as it lies in the project and is not onlooker: the
   rules guess what an experiment is, and only the person knows when a test suite
   or a tool is one.
1. Never: no argv (kernel thread, zombie); a program (basename of argv[0] or
   exe, ``python3.11`` -> ``python3`` -> ``python``, ``-bash`` -> ``bash``) in
   ``runs.ignore``; onlooker itself; nothing in the project; ``--version``/``--help``;
   a script or program asked only for ``--help``/``--version``; language servers
   (``--stdio``, ``--node-ipc``, ``*langserver*``); modules in ``runs.ignore_modules``
   or `TOOL_MODULES` (pip, pytest, unittest...), console scripts in `TOOL_NAMES`;
   packaging scripts (``python setup.py ...``).
2. Interpreters in ``runs.programs``: a script is a run (``python -u train.py``,
   ``Rscript fit.R``, ``julia x.jl``), so is ``python -m X``, and so are Jupyter
   kernels (``-m ipykernel_launcher``, ``ipython kernel``, IRkernel). No script
   (``python``, ``python -i``, ``ipython``, ``R``, ``python -`` from stdin) is a
   prompt. Editor helpers (``~/.vscode-server/...``, PyCharm ``pydev``) are runs
   only when their argv names a project file (a debugger launching train.py).
3. One-liners (``python -c``, ``bash -c``, ``Rscript -e``) are what editors and
   tools fire all day (``sh -c 'uname -s'``), so they are runs only when the text
   or its argv names an existing file or folder of the project (``bash -c "python
   train.py > log"``) and the shell is not interactive (``-i``). ``matlab
   -batch``/``-r`` are runs.
4. Shells in ``runs.shells`` are runs only with a script file (``bash train.sh``,
   ``sh -e run.sh``); ``bash``, ``bash -i``, ``bash -l``, ``sh -s`` are prompts.
5. ``dvc repro|run|exp run``, ``go run|test``, ``accelerate launch`` are runs,
   their other subcommands are not; other programs in ``runs.programs`` (make,
   snakemake, torchrun, mpirun...) are runs.
6. Any other executable in the project (``./bin/train``), outside the
   ``watch.exclude`` folders (a ``.venv``), is a run.

Inside a run, `project_code` says whether a step runs project code (and so may give
params) or is a system tool a library started (``git rev-parse HEAD``, ``uname -a``,
``ldconfig -p``), and `unshim` sees through version managers' shims.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from onlooker.agent.config import DEFAULTS, Config
from onlooker.agent.events import ProcInfo

log = logging.getLogger(__name__)

PYTHONS = frozenset({"python", "pypy", "ipython"})
KERNEL_MODULES = frozenset({"ipykernel_launcher", "ipykernel", "ipykernel.kernelapp"})
LAUNCHER_MODULES = {"torch.distributed.run": "torchrun", "torch.distributed.launch": "torchrun",
                    "accelerate.commands.launch": "accelerate", "deepspeed": "deepspeed"}
# Not experiments even inside the project; kept here until config grows a place for them.
TOOL_NAMES = frozenset({
    "pip", "pip3", "uv", "pipx", "poetry", "pdm", "hatch", "conda", "mamba", "jupyter",
    "jupyter-lab", "jupyter-notebook", "jupyter-server", "tensorboard", "pre-commit",
    "flake8", "pylint", "isort", "pyflakes", "pycodestyle", "tox", "nox", "twine",
    "pylsp", "pyright", "ruff", "black", "mypy", "onlooker", "pytest", "py.test", "nose2",
    "coverage", "build", "pyproject-build", "pip-compile", "pip-sync", "virtualenv", "sphinx-build",
})
TOOL_MODULES = frozenset({
    "pip", "jupyter", "jupyterlab", "notebook", "jupyter_server", "nbclassic", "voila",
    "tensorboard", "http.server", "pydoc", "idlelib", "pyls", "pylsp", "isort", "flake8",
    "pylint", "debugpy.adapter", "pre_commit", "tox", "nox", "venv", "ensurepip", "uv",
    # Test runners and packaging: they execute project code, but to check it, not to
    # produce an experiment's outputs (`[runs] include` says otherwise for a project).
    "pytest", "_pytest", "unittest", "doctest", "nose2", "setuptools", "twine", "pip_audit",
    "virtualenv", "sphinx",
})
# Tools whose names a project's own package may start with (`build.features`): only
# the module itself is the tool.
_EXACT_TOOL_MODULES = frozenset({"build", "site", "sysconfig", "platform", "this"})
# Scripts that package, test or deploy the project (`python setup.py --version`), whatever
# project code they import.
PACKAGING_SCRIPTS = frozenset({"setup.py", "conftest.py", "noxfile.py", "fabfile.py"})
_EDITOR_DIRS = ("/.vscode-server/", "/.vscode/extensions/", "/.vscode-oss/", "/.cursor-server/",
                "/.windsurf-server/", "/pydev/", "/.pycharm_helpers/", "/JetBrains/",
                "/.vscode-server-insiders/", "/.vscode-insiders/", "/.positron-server/",
                "/.zed_server/", "/.theia/")
# Version managers' shims and helpers (`python3` as a pyenv shim is `bash .../libexec/pyenv
# exec python3 train.py`, which first runs `pyenv-which`): runs only when they name a
# project file, like editor helpers.
_MANAGER_DIRS = ("/.pyenv/", "/.rbenv/", "/.nodenv/", "/.goenv/", "/.jenv/", "/.asdf/",
                 "/.sdkman/", "/libexec/")
_LSP = re.compile(r"lang(?:uage)?[-_]?server|languageserver|(?:^|[-_.])lsp(?:$|[-_.])", re.I)
_SYSTEM = ("/usr/", "/proc/", "/sys/", "/dev/", "/etc/", "/lib", "/bin/", "/sbin/")
_INFO = frozenset({"--version", "-V", "-version", "--help", "-h", "-help", "-?"})
_SPLIT = re.compile(r"[^\s'\"`;|&<>()=,]+")

# Options taking a value, per interpreter, when not attached (`-Wignore`).
_ARG_OPTS = {
    "python": {"-W", "-X", "--check-hash-based-pycs"},
    "julia": {"-p", "-t", "-L", "-J", "-C", "-M", "--procs", "--threads", "--load",
              "--sysimage", "--machine-file", "--cpu-target", "--heap-size-hint", "--project"},
    "node": {"-r", "--require", "--import", "--loader", "--experimental-loader", "-C",
             "--conditions", "--title", "--env-file"},
    "ruby": {"-r", "-I", "-C", "-E"}, "perl": {"-I", "-M", "-m"}, "lua": {"-l"},
    "octave": {"-p", "--path", "--exec-path", "--image-path", "--info-file"},
    "matlab": {"-sd", "-logfile", "-c"}, "Rscript": set(), "R": {"-f", "-e", "-g", "-d"},
    "java": {"-cp", "-classpath", "--class-path", "-p", "--module-path", "--add-modules",
             "-m", "--module", "-d", "-splash"},
    "bash": {"-o", "+o", "-O", "+O", "--rcfile", "--init-file"},
}
_CMD_OPTS = {"python": {"-c"}, "julia": {"-e", "-E", "--eval", "--print"},
             "node": {"-e", "-p", "--eval", "--print"}, "ruby": {"-e"}, "perl": {"-e", "-E"},
             "lua": {"-e"}, "octave": {"--eval"}, "matlab": {"-batch", "-r"},
             "Rscript": {"-e"}, "R": {"-e"}, "bash": {"-c"}}
_LAUNCHER_FLAGS = frozenset({
    "--standalone", "--no-python", "--no_python", "--run-path", "--run_path", "--multi_gpu",
    "--cpu", "--use_deepspeed", "--use_fsdp", "--use_megatron_lm", "--tpu", "--debug",
    "--quiet", "-q", "--same_network", "--no_local_rank", "--force_multi",
    "--bind_cores_to_rank", "--save_pid", "--use_env", "--use-env", "--monitor_interval",
})


@dataclass(frozen=True)
class Invocation:
    """What a command line runs, as the interpreter would parse it."""

    program: str  # name with version stripped: python, bash, Rscript, torchrun, make...
    mode: str  # script | module | command | class | program | stdin | none | info
    target: str | None = None  # script path, module, one-liner text or main class
    args: tuple[str, ...] = ()  # what the script/module/program receives
    launcher: str | None = None  # torchrun, deepspeed, accelerate, mpirun...
    launcher_args: tuple[str, ...] = ()
    interactive: bool = False


def _strip_version(name: str) -> list[str]:
    """``python3.11`` -> [python3.11, python3, python]; ``-bash`` -> [bash]."""
    name = name.lstrip("-")
    out = [name]
    short = re.sub(r"(?<=[A-Za-z])\.\d+$", "", name)
    full = re.sub(r"(?<=[A-Za-z])[-.]?\d+(?:\.\d+)*[a-z]?$", "", name)
    for n in (short, full):
        if n and n not in out:
            out.append(n)
    return out


def program_name(argv: list[str] | tuple[str, ...], exe: str | None) -> str:
    """The program's name with version suffixes stripped: ``python3.11`` -> ``python``."""
    base = os.path.basename(argv[0]) if argv and argv[0] else os.path.basename(exe or "")
    base = base.split()[0] if base.strip() else base  # setproctitle-style "name args"
    return _strip_version(base)[-1]


def _family(name: str) -> str:
    if name in PYTHONS:
        return "python"
    if name in ("sh", "dash", "zsh", "ksh", "fish", "bash"):
        return "bash"
    return name


def _parse_python(name: str, argv: list[str]) -> Invocation:
    """CPython's own option grammar: clusters (``-uO``), attached values (``-Wignore``)."""
    interactive = False
    i, n = 1, len(argv)
    while i < n:
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a == "-":
            return Invocation(name, "stdin", "-", tuple(argv[i + 1:]), interactive=interactive)
        if a in ("--help", "--version", "--help-env", "--help-xoptions", "--help-all"):
            return Invocation(name, "info")
        if a == "--check-hash-based-pycs":
            i += 2
            continue
        if not a.startswith("-"):
            break
        if a.startswith("--"):
            i += 1
            continue
        for j, c in enumerate(a[1:], start=1):
            rest = a[j + 1:]
            if c in "cm":
                k = i + 1 if rest else i + 2
                val = rest or (argv[i + 1] if i + 1 < n else "")
                mode = "command" if c == "c" else "module"
                return Invocation(name, mode, val, tuple(argv[k:]), interactive=interactive)
            if c in "WX":
                i += 0 if rest else 1
                break
            if c in "hV?":
                return Invocation(name, "info")
            interactive = interactive or c == "i"
        i += 1
    if i < n:
        return Invocation(name, "script", argv[i], tuple(argv[i + 1:]), interactive=interactive)
    return Invocation(name, "none", interactive=True)


def _parse_shell(name: str, argv: list[str]) -> Invocation:
    """sh-family: ``-c`` takes the first operand as the command; ``-s`` reads stdin."""
    interactive = command = stdin = False
    i, n = 1, len(argv)
    while i < n:
        a = argv[i]
        if a in ("--", "-"):
            i += 1
            break
        if a in ("--rcfile", "--init-file", "-o", "+o", "-O", "+O", "--init-command"):
            i += 2
            continue
        if a.startswith("--"):
            interactive = interactive or a == "--interactive"
            command = command or a == "--command" or a.startswith("--command=")
            if a.startswith("--command="):
                return Invocation(name, "command", a[10:], tuple(argv[i + 1:]))
            i += 1
            continue
        if a[:1] not in "-+" or len(a) == 1:
            break
        flags = a[1:]
        interactive = interactive or "i" in flags
        command = command or "c" in flags
        stdin = stdin or "s" in flags
        if a[0] == "-" and ("o" in flags or "O" in flags):
            i += 1  # -eo pipefail: the cluster's o takes the next word
        i += 1
    if command:
        text = argv[i] if i < n else ""
        return Invocation(name, "command", text, tuple(argv[i + 1:]), interactive=interactive)
    if i < n and not stdin:
        return Invocation(name, "script", argv[i], tuple(argv[i + 1:]), interactive=interactive)
    return Invocation(name, "stdin" if stdin else "none", None, tuple(argv[i:]),
                      interactive=True)


def _parse_interp(fam: str, name: str, argv: list[str]) -> Invocation:
    """Other interpreters: options, then a script (or -e code), then its arguments."""
    arg_opts, cmd_opts = _ARG_OPTS.get(fam, set()), _CMD_OPTS.get(fam, set())
    i, n = 1, len(argv)
    while i < n:
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a in cmd_opts:
            return Invocation(name, "command", argv[i + 1] if i + 1 < n else "",
                              tuple(argv[i + 2:]))
        if fam == "java" and a == "-jar" and i + 1 < n:
            return Invocation(name, "script", argv[i + 1], tuple(argv[i + 2:]))
        if fam == "R":
            if a == "CMD":
                sub = argv[i + 1:]
                files = [s for s in sub[1:] if not s.startswith("-")]
                if sub[:1] == ["BATCH"] and files:
                    return Invocation(name, "script", files[0], ())
                return Invocation(name, "info", " ".join(sub[:1]))
            if a == "-f" and i + 1 < n:
                return Invocation(name, "script", argv[i + 1], ())
            if a.startswith("--file="):
                return Invocation(name, "script", a[7:], ())
            if a == "--args":
                break
        if a in arg_opts:
            i += 2
            continue
        if a.startswith("-") and len(a) > 1:
            i += 1
            continue
        if fam == "R":
            break  # R has no script operand
        if fam == "java":
            return Invocation(name, "class", a, tuple(argv[i + 1:]))
        return Invocation(name, "script", a, tuple(argv[i + 1:]))
    return Invocation(name, "none", None, tuple(argv[i:]), interactive=True)


def _parse_launcher(name: str, argv: list[str]) -> Invocation:
    """torchrun/deepspeed/accelerate launch/mpirun: the inner script or program."""
    i, n = 1, len(argv)
    if name == "accelerate":
        if n < 2 or argv[1] != "launch":
            return Invocation(name, "info", argv[1] if n > 1 else None)
        i = 2
    module = False
    while i < n:
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-"):
            break
        if a in ("-m", "--module") and name != "mpirun":
            module = True
        elif "=" in a or a in _LAUNCHER_FLAGS or (name != "mpirun" and a in ("-m", "--module")):
            pass
        elif i + 1 < n and argv[i + 1].endswith(".py") and not argv[i + 1].startswith("-"):
            pass  # an unknown flag right before the script
        elif a in ("-mca", "--mca", "-gmca", "--gmca"):
            i += 2
        else:
            i += 1
        i += 1
    opts = tuple(argv[1 if name != "accelerate" else 2:i])
    rest = argv[i:]
    if not rest:
        return Invocation(name, "none", launcher=name, launcher_args=opts)
    no_python = any(o.replace("_", "-") == "--no-python" for o in opts)
    if name in ("mpirun", "mpiexec") or no_python:
        inner = parse_invocation(rest, None)
        return Invocation(inner.program, inner.mode, inner.target, inner.args,
                          launcher=name, launcher_args=opts, interactive=inner.interactive)
    mode = "module" if module else "script"
    return Invocation(name, mode, rest[0], tuple(rest[1:]), launcher=name, launcher_args=opts)


def parse_invocation(argv: list[str] | tuple[str, ...], exe: str | None = None) -> Invocation:
    """Parse a command line the way its interpreter or launcher would."""
    argv = list(argv)
    if not argv:
        return Invocation("", "none")
    name = program_name(argv, exe)
    fam = _family(name)
    if name in ("torchrun", "deepspeed", "accelerate", "mpirun", "mpiexec"):
        return _parse_launcher(name, argv)
    if fam == "python" and name == "ipython" and len(argv) > 1 and argv[1] == "kernel":
        return Invocation(name, "module", "ipykernel", tuple(argv[2:]))
    if len(argv) == 2 and argv[1] in _INFO:
        return Invocation(name, "info")
    if fam in _ARG_OPTS:
        parse = {"python": _parse_python, "bash": _parse_shell}.get(fam)
        inv = parse(name, argv) if parse else _parse_interp(fam, name, argv)
        if inv.mode == "module" and inv.target in LAUNCHER_MODULES:
            lname = LAUNCHER_MODULES[inv.target]
            return _parse_launcher(lname, ["-", *(["launch"] if lname == "accelerate" else []),
                                           *inv.args])
        return inv
    if name in ("dvc", "go"):
        sub = [a for a in argv[1:] if not a.startswith("-")]
        runs = {"dvc": (["repro"], ["run"], ["exp", "run"]), "go": (["run"], ["test"])}[name]
        if not any(sub[:len(r)] == r for r in runs):
            return Invocation(name, "info", " ".join(sub[:2]))
    return Invocation(name, "program", None, tuple(argv[1:]))


def _inside(path: str, project: str) -> bool:
    return path == project or path.startswith(project.rstrip("/") + "/")


def _paths_inside(args: list[str] | tuple[str, ...], cwd: str | None, project: str,
                  exists: bool = False) -> bool:
    resolved = 0
    for arg in args[:256]:
        cand = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if "/" not in cand and not exists:
            continue
        if not cand or len(cand) > 4096 or (cwd is None and not cand.startswith("/")):
            continue
        p = os.path.normpath(os.path.join(cwd or "/", cand))
        if _inside(p, project) and (not exists or os.path.exists(p)):
            return True
        if not exists and cand.startswith("/") and resolved < 16 and \
                not p.startswith(_SYSTEM):
            resolved += 1  # a symlink into the project; bounded, this runs per new process
            try:
                if _inside(os.path.realpath(p), project):
                    return True
            except (OSError, ValueError):
                continue
    return False


def _oneliner_names_project(inv: Invocation, cwd: str | None, project: str) -> bool:
    words = [w for w in _SPLIT.findall(inv.target or "") if "/" in w or "." in w]
    return _paths_inside(words[:200], cwd, project, exists=True) or \
        _paths_inside(inv.args, cwd, project, exists=True)


def _is_onlooker(inv: Invocation, argv: list[str]) -> bool:
    if inv.mode == "module" and (inv.target or "").split(".")[0] == "onlooker":
        return True
    names = [argv[0]] + ([inv.target] if inv.mode == "script" and inv.target else [])
    return any(os.path.basename(a) == "onlooker" for a in names)


def is_onlooker(argv: list[str] | tuple[str, ...], exe: str | None = None) -> bool:
    """Whether this command line runs onlooker itself (its CLI or its agent)."""
    argv = list(argv)
    return bool(argv) and _is_onlooker(parse_invocation(argv, exe), argv)


def _program_index(argv: list[str]) -> int:
    """Where the program is: argv[0], or the script a shell runs (the kernel's view of
    a shebang, `bash ~/.pyenv/shims/python3 ...`)."""
    return 1 if _family(program_name(argv, None)) == "bash" and len(argv) > 1 else 0


def is_manager_helper(argv: list[str] | tuple[str, ...]) -> bool:
    """A version manager's shim or helper (``pyenv exec``, ``pyenv-which``, also through
    ``/usr/bin/env bash ...``): plumbing between what the person typed and the real
    program, never a step of its own."""
    argv = list(argv)
    if argv and os.path.basename(argv[0]) == "env":
        argv = argv[1:]
        while argv and (argv[0].startswith("-") or "=" in argv[0]):
            argv = argv[1:]
    if not argv or not is_shim(argv):
        return False
    path = argv[_program_index(argv)]
    # The real interpreters live under the manager's folder too (~/.pyenv/versions/...,
    # ~/.asdf/installs/...): those are the program, not plumbing. And a libexec folder
    # is a manager's only when the program is one of its (pyenv-which, not
    # /usr/libexec/platform-python).
    if any(d in path for d in ("/versions/", "/installs/")):
        return False
    if not any(d in path for d in _MANAGER_DIRS if d != "/libexec/"):
        return os.path.basename(path).split("-", 1)[0] in _MANAGERS
    return True


def is_shim(argv: list[str] | tuple[str, ...]) -> bool:
    """Whether this command line is a version manager's shim (pyenv's `python3` is
    `bash .../libexec/pyenv exec python3 ...`), which execs the real program in place."""
    return any(d in a for a in list(argv)[:2] for d in _MANAGER_DIRS)


# Version managers whose `exec` replaces itself with the real program (environment
# runners such as `conda run` or `uv run` start it as a child, which is judged alone).
_MANAGERS = frozenset({"pyenv", "rbenv", "nodenv", "goenv", "jenv", "plenv", "asdf", "mise",
                       "rtx"})


def _exec_rest(args: list[str]) -> list[str] | None:
    """What follows ``exec`` (``mise exec python@3.11 --``) in a manager's argv."""
    if not args or args[0] != "exec":
        return None
    rest = args[1:]
    if "--" in rest[:4]:
        rest = rest[rest.index("--") + 1:]
    return rest or None


def unshim(argv: list[str] | tuple[str, ...]) -> list[str]:
    """The command a version manager's shim hands over to, or argv itself.

    ``bash ~/.pyenv/libexec/pyenv exec python3 train.py`` and ``bash ~/.pyenv/shims/python3
    train.py`` both run ``python3 train.py``: the shim execs it in place, so the inner
    command is what the person meant, and its argv holds the params (not ``exec``,
    ``python3`` and ``train.py`` as positionals). Helpers such as ``pyenv-which`` are
    not shims and stay as they are.
    """
    argv = list(argv)
    if not argv:
        return argv
    first = _program_index(argv)
    path = argv[first]
    base = os.path.basename(path)
    rest = argv[first + 1:]
    if "/shims/" in path and any(d in path for d in _MANAGER_DIRS):
        return [base, *rest] if base not in _MANAGERS else (_exec_rest(rest) or argv)
    if base in _MANAGERS and (first == 0 or any(d in path for d in _MANAGER_DIRS)):
        return _exec_rest(rest) or argv
    stem, dash, verb = base.rpartition("-")
    if dash and verb == "exec" and stem in _MANAGERS and rest:
        return rest
    return argv


def _excluded(path: str, project: str, exclude: list[str]) -> bool:
    rel = os.path.relpath(path, project).split("/")
    return any(part in exclude or part == "site-packages" for part in rel[:-1])


def _included(patterns: Iterable[str], argv: list[str], inv: Invocation,
              variants: list[str]) -> str | None:
    """The first ``runs.include`` glob that names this process, or None."""
    patterns = list(patterns)
    if not patterns:
        return None
    names = list(variants)
    if inv.target and inv.mode in ("script", "module", "class"):
        names += [inv.target, os.path.basename(inv.target)]
    name = program_name(argv, None)
    lines = [" ".join(argv), " ".join([name, *argv[1:]])]
    for pat in patterns:
        if any(fnmatch.fnmatchcase(n, pat) for n in names + lines):
            return pat
    return None


def is_run(info: ProcInfo, project: Path, cfg: Config, *,
           include: Iterable[str] | None = None) -> tuple[bool, str]:
    """Whether this process starts a run, and why (one short phrase).

    `include` is ``runs.include`` (globs, see rule 0); when None it is read from the
    config, so that the setting works as soon as config.py knows it.
    """
    argv = list(info.argv)
    if not argv or not argv[0]:
        return False, "no command line"
    runs = cfg["runs"]
    if include is None:
        include = runs.get("include", ())
    inner = unshim(argv)
    if inner != argv:
        # A shim only hands over: what it runs decides (a pyenv `python3 -m pytest` is a
        # test run, not a version manager naming a project file).
        info = dataclasses.replace(info, argv=tuple(inner), exe=None)
        argv = inner
    proj = os.path.abspath(str(project))
    variants = _strip_version(os.path.basename(argv[0]))
    if info.exe:
        variants += _strip_version(os.path.basename(info.exe))
    cwd = info.cwd
    inv = parse_invocation(argv, info.exe)
    wanted = _included(include, argv, inv, variants)
    ignored = [v for v in variants if v in runs["ignore"]]
    if ignored and not wanted:
        return False, f"{ignored[0]} is in runs.ignore"
    if not ((cwd and _inside(os.path.normpath(cwd), proj)) or _paths_inside(argv, cwd, proj)):
        return False, "outside the project"
    if _is_onlooker(inv, argv):
        return False, "onlooker itself"
    if wanted:
        return True, f"matches runs.include {wanted!r}"
    if inv.mode == "info":
        return False, f"{inv.program} {inv.target or 'asks for help or version'} (not a run)"
    if inv.args and all(a in _INFO for a in inv.args) and inv.mode != "command":
        return False, f"{os.path.basename(inv.target or inv.program)} asks for help or version"
    if any(a in ("--stdio", "--node-ipc") or a.startswith("--clientProcessId") for a in argv) \
            or _LSP.search(os.path.basename(inv.target or "")) and inv.mode in ("script", "module"):
        return False, "a language server"
    programs = set(runs["programs"])
    named = next((v for v in variants if v in programs), None)
    if inv.launcher and (named or inv.launcher in programs):
        return True, f"{inv.launcher} launch of {inv.target or inv.program}"
    fam = _family(inv.program)
    if named and fam in _ARG_OPTS or (fam == "bash" and set(variants) & set(runs["shells"])):
        return _decide_interpreter(inv, fam, info, proj, runs)
    if named:
        return True, f"{named} runs in the project"
    exe_path = os.path.normpath(os.path.join(cwd or "/", argv[0])) if "/" in argv[0] else info.exe
    if exe_path and _inside(exe_path, proj) and not _excluded(exe_path, proj,
                                                               cfg["watch"]["exclude"]):
        if os.path.basename(exe_path) in TOOL_NAMES:
            return False, f"{os.path.basename(exe_path)} is a tool"
        return True, "an executable in the project"
    return False, f"{inv.program or argv[0]} does not run experiments"


def _decide_interpreter(inv: Invocation, fam: str, info: ProcInfo, proj: str,
                        runs: dict) -> tuple[bool, str]:
    name = inv.program
    if inv.mode == "module":
        mod = inv.target or ""
        parts = mod.split(".")
        prefixes = {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
        if prefixes & (set(runs["ignore_modules"]) | TOOL_MODULES) or mod in _EXACT_TOOL_MODULES:
            return False, f"module {mod} is a tool"
        if mod in KERNEL_MODULES:
            return True, "a Jupyter kernel"
        return True, f"{name} -m {mod}"
    if inv.mode in ("script", "class"):
        target = inv.target or ""
        for dirs, what in ((_EDITOR_DIRS, "an editor helper"),
                           (_MANAGER_DIRS, "a version manager's helper")):
            if any(d in target for d in dirs):
                if _paths_inside(inv.args, info.cwd, proj, exists=True):
                    return True, f"{os.path.basename(target)} ({what}) runs a project file"
                return False, what
        base = os.path.basename(target)
        script = os.path.normpath(os.path.join(info.cwd or "/", os.path.expanduser(target)))
        if fam == "bash" and not _inside(script, proj) and not _paths_inside(
                inv.args, info.cwd, proj, exists=True):
            # A job script kept outside the project that `cd`s into it (Slurm, cron, a
            # driver): judged by what it runs there, which are runs of their own; what it
            # does itself before (an edit of a config) is no run's.
            return False, f"shell script {base} lies outside the project and names no file in it"
        if base in PACKAGING_SCRIPTS:
            return False, f"{base} packages or configures the project"
        if fam == "python" and os.path.basename(os.path.dirname(target)) in ("bin", "Scripts"):
            if base in runs["ignore"] or base in TOOL_NAMES:
                return False, f"{base} is a tool"
            return True, f"console script {base}"
        return True, f"{name} {'script' if inv.mode == 'script' else 'class'} {base}"
    if inv.mode == "command":
        if name == "matlab":
            return True, "matlab batch command"
        if inv.interactive:
            return False, "an interactive shell"
        if name == "R" and "IRkernel" in (inv.target or ""):
            return True, "a Jupyter kernel"
        if _oneliner_names_project(inv, info.cwd, proj):
            return True, f"{name} one-liner naming a project file"
        return False, f"{name} one-liner naming no project file"
    if inv.mode == "stdin":
        return False, f"{name} reads its program from stdin"
    return False, f"interactive {name} with no script"


def _module_file(module: str, cwd: str | None) -> str | None:
    if not cwd or not module:
        return None
    base = os.path.join(cwd, *module.split("."))
    for cand in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(cand):
            return cand
    return None


def writes_bytecode(info: ProcInfo) -> bool:
    """Whether a Python process caches what it compiles in the project's __pycache__
    (the evidence that a source was imported rather than read as text). True for
    programs that are not Python: they have no say."""
    argv = list(info.argv)
    if not argv or _family(program_name(argv, info.exe)) != "python":
        return True
    env = dict(info.environ)
    if env.get("PYTHONDONTWRITEBYTECODE") or env.get("PYTHONPYCACHEPREFIX"):
        return False
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-X", "-W"):  # an option with its value next
            if arg == "-X" and argv[i + 1:i + 2] and argv[i + 1].startswith("pycache_prefix"):
                return False
            i += 2
            continue
        if arg.startswith("-X") and arg[2:].startswith("pycache_prefix"):
            return False
        if arg in ("-c", "-m", "-") or not arg.startswith("-") or arg.startswith("--"):
            break  # the interpreter's own options end here
        if arg[1:].isalpha() and "B" in arg[1:]:
            return False
        i += 1
    return True


def script_of(info: ProcInfo) -> str | None:
    """The absolute path of the script a run executes, or None (``-c``, prompts)."""
    inv = parse_invocation(info.argv, info.exe)
    if inv.mode == "script" and inv.target:
        return os.path.normpath(os.path.join(info.cwd or "/", os.path.expanduser(inv.target)))
    if inv.mode == "module" and inv.target:
        return _module_file(inv.target, info.cwd)
    return None


# Folders inside a project that hold other people's code (virtualenvs, tools' caches):
# a script there is a library's, not the project's. The unwatched folders are those.
DEFAULT_FOREIGN: tuple[str, ...] = tuple(DEFAULTS["watch"]["exclude"])
_FOREIGN_ALWAYS = frozenset({"site-packages", "dist-packages", "node_modules", "__pypackages__"})
_NOTEBOOK_TOOLS = frozenset({"papermill"})
_CLASSPATH = ("-cp", "-classpath", "--class-path")
_IMPORT_LINE = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", re.M)
_CONSOLE_HEAD = 4096


def _project_rel(path: str, base: str, proj: str, foreign: Iterable[str]) -> str | None:
    """``path`` relative to the project when it is project code, else None."""
    if not path or len(path) > 4096 or "\n" in path:
        return None
    p = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
    if not _inside(p, proj) or p == proj:
        return None
    rel = os.path.relpath(p, proj)
    parts = rel.split("/")
    if any(x in _FOREIGN_ALWAYS for x in parts) or any(x in foreign for x in parts[:-1]):
        return None
    return rel


def _project_package(name: str, proj: str, foreign: Iterable[str]) -> bool:
    for root in (proj, os.path.join(proj, "src")):
        cand = os.path.join(root, name)
        if (os.path.isdir(cand) or os.path.isfile(cand + ".py")) and \
                _project_rel(cand, proj, proj, foreign):
            return True
    return False


def _console_script_of_project(path: str, proj: str, foreign: Iterable[str]) -> bool:
    """Whether a console script (``.venv/bin/my-train``) imports the project's package:
    pip and uv write ``from pkg.cli import main`` into it, so the head tells."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_CONSOLE_HEAD).decode("utf-8", "replace")
    except (OSError, ValueError):
        return False
    names = [n for n in _IMPORT_LINE.findall(head) if n not in ("re", "sys", "os")]
    return bool(names) and _project_package(names[0], proj, foreign)


def _module_rel(module: str, cwd: str | None, proj: str, foreign: Iterable[str]) -> str | None:
    for root in dict.fromkeys(r for r in (cwd, proj, os.path.join(proj, "src")) if r):
        found = _module_file(module, root)
        if found and (rel := _project_rel(found, root, proj, foreign)):
            return rel
    return None


# papermill's options that take no value (every other one takes one).
PAPERMILL_FLAGS = frozenset({
    "--inject-input-path", "--inject-output-path", "--inject-paths", "--prepare-only",
    "--prepare-execute", "--progress-bar", "--no-progress-bar", "--log-output",
    "--no-log-output", "--request-save-on-cell-execute", "--no-request-save-on-cell-execute",
    "--report-mode", "--no-report-mode", "--help", "--version",
})


def _notebook_arg(args: tuple[str, ...] | list[str]) -> str | None:
    """papermill's input notebook: its first positional (options all take one value
    or are flags; ``-p`` and ``-r`` take two)."""
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        if a in ("-p", "--parameters", "-r", "--parameters_raw"):
            i += 3
        elif a.startswith("-") and a != "-" and "=" not in a and a not in PAPERMILL_FLAGS:
            i += 2
        elif a.startswith("-") and a != "-":
            i += 1
        else:
            return a
    return None


def notebook_tool(inv: Invocation) -> str | None:
    """``papermill`` when the invocation is a notebook runner (as ``papermill ...`` or as
    its console script run by Python), else None."""
    name = inv.program if inv.mode == "program" else \
        os.path.basename(inv.target or "") if inv.mode == "script" else ""
    name = _strip_version(name)[-1] if name else ""
    return name if name in _NOTEBOOK_TOOLS else None


def project_code(argv: list[str] | tuple[str, ...], exe: str | None = None, *,
                 cwd: str | None, project: str | os.PathLike[str],
                 foreign: Iterable[str] = DEFAULT_FOREIGN) -> str | None:
    """The project file a step runs (relative path, or ``-m`` module name), or None
    when it runs no project code.

    Inside a run, libraries start system tools all the time (``git rev-parse HEAD``,
    ``uname -p``, ``nvidia-smi``, ``ldconfig -p``, ``fc-list``); their argv says nothing
    about the experiment. A step runs project code when an interpreter runs a script
    or ``-m`` module that lies in the project (outside `foreign` folders such as a
    ``.venv``), a launcher runs one, a notebook tool runs a project notebook, a
    console script imports the project's package, or the program itself lies in the
    project. Orchestrators (``make``, ``dvc repro``) and one-liners (``sh -c ...``)
    run no project code themselves: the programs they start are steps of their own.
    `cwd` None (not read in time) resolves relative paths against the project.
    """
    argv = unshim(argv)
    if not argv:
        return None
    proj = os.path.abspath(os.fspath(project))
    base = cwd or proj
    foreign = tuple(foreign)
    inv = parse_invocation(argv, exe)
    if notebook_tool(inv):
        nb = _notebook_arg(inv.args)
        return _project_rel(nb, base, proj, foreign) if nb else None
    if inv.mode == "script" and inv.target:
        rel = _project_rel(inv.target, base, proj, foreign)
        if rel:
            return rel
        target = os.path.normpath(os.path.join(base, os.path.expanduser(inv.target)))
        if _family(inv.program) == "python" and \
                os.path.basename(os.path.dirname(target)) in ("bin", "Scripts") and \
                os.path.basename(target) not in TOOL_NAMES and \
                _console_script_of_project(target, proj, foreign):
            return os.path.basename(target)
        return None
    if inv.mode == "module" and inv.target:
        return _module_rel(inv.target, cwd, proj, foreign)
    if inv.mode == "class" and inv.target:
        cp = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in _CLASSPATH), "")
        inside = any(_project_rel(c, base, proj, foreign) for c in cp.split(":") if c)
        return inv.target if inside else None
    if inv.mode == "program" and not inv.launcher:
        path = argv[0] if "/" in argv[0] else exe
        return _project_rel(path, base, proj, foreign) if path else None
    return None
