"""Which processes start runs, program names and the scripts runs execute."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from onlooker.agent.config import load
from onlooker.agent.events import ProcInfo
from onlooker.agent.rules.classify import (
    is_run,
    parse_invocation,
    program_name,
    project_code,
    script_of,
    unshim,
)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    for rel in ("train.py", "run.sh", "fit.R", "x.jl", "src/train.py", "pkg/__init__.py",
                "pkg/train.py", "tool/__main__.py", "data/in.csv"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("x\n")
    (proj / "bin").mkdir()
    (proj / "bin" / "train").write_text("#!/bin/sh\n")
    (proj / "bin" / "train").chmod(0o755)
    (tmp_path / "elsewhere").mkdir()
    return proj


def info(cmd: str, cwd: str | None, exe: str | None = None) -> ProcInfo:
    return ProcInfo(pid=10, ppid=1, argv=tuple(shlex.split(cmd)), cwd=cwd, exe=exe, uid=0,
                    start_ticks=1, started=0.0)


RUNS = [
    "python train.py", "python3.11 -u src/train.py --lr 0.1", "python -m pkg.train",
    "/usr/bin/python3 -W ignore -X dev train.py", "python -i train.py", "ipython train.py",
    "pypy3 train.py", "bash run.sh", "sh -e run.sh", "bash -x run.sh a b", "Rscript fit.R",
    "julia -t 4 x.jl", "make", "make train LR=0.1", "dvc repro", "dvc exp run",
    "torchrun --nproc_per_node=2 train.py", "accelerate launch train.py",
    "mpirun -np 2 python train.py", "python -m ipykernel_launcher -f /run/k.json",
    "ipython kernel -f /run/k.json", "./bin/train --epochs 3",
    "bash -c 'python train.py > log'", "python -c 'exec(open(\"train.py\").read())'",
    "sh -c 'cd src && python train.py'", "R -f fit.R", "R CMD BATCH fit.R",
    "R --slave -e 'IRkernel::main()' --args /run/k.json", "java -jar x.jar", "node train.js",
    "snakemake -j 2", "papermill nb.ipynb out.ipynb", "go run .", "matlab -batch train",
    "python -m torch.distributed.run --nproc_per_node 2 train.py",
    "python /root/.vscode-server/extensions/ms-python.debugpy/launcher --port 1 -- train.py",
    "/proj/.venv/bin/python /proj/.venv/bin/my-train --epochs 1",
    "bash /root/.pyenv/libexec/pyenv exec python3 train.py",  # python3 as a pyenv shim
    "bash /root/.pyenv/shims/python3 train.py --lr 1", "python -m build_features",
    "python train.py --lr 0.1 --help-url x", "papermill nb.ipynb out.ipynb -p alpha 0.5",
]
NOT_RUNS = [
    "python", "python -i", "python3 -q", "ipython", "bash", "bash -i", "bash -l", "-bash",
    "sh -s", "bash -c 'uname -s'", "bash -ic 'python train.py'",
    "python -c 'import sys; print(sys.path)'", "python --version", "python -V", "node --version",
    "python -", "R", "julia", "node", "git status", "vim train.py", "less log",
    "python -m pip install x", "python -m venv .venv", "python -m onlooker.agent",
    "/tmp/venv/bin/python /tmp/venv/bin/onlooker start", "onlooker status",
    "python -m pylsp", "node /x/pyright-langserver.js --stdio", "python -m jupyterlab",
    "dvc status", "go list ./...", "accelerate config", "ls -la", "cat train.py",
    "python /root/.vscode-server/extensions/ms-python/python_files/printEnvVariables.py",
    "/proj/.venv/bin/python /proj/.venv/bin/pip install x", "python -m jedi_language_server",
    "Rscript -e 'print(1)'", "sudo python train.py", "tensorboard --logdir runs",
    "bash /root/.pyenv/libexec/pyenv-which python3", "bash /home/u/.rbenv/libexec/rbenv-exec",
    # test runners, packaging and probes run project code to check or describe it, not
    # to produce an experiment (`[runs] include` says otherwise, see below)
    "python -m pytest tests", "/proj/.venv/bin/python /proj/.venv/bin/pytest -x tests",
    "python3 -m unittest discover", "/usr/bin/python3 /usr/local/bin/tox -e py311",
    "/usr/bin/python3 /usr/local/bin/pre-commit run --all-files", "python setup.py --version",
    "python setup.py bdist_wheel", "python -m build", "python -m platform",
    "python -c 'import sys; print(sys.version)'", "which python3", "git rev-parse HEAD",
    "python train.py --help", "./bin/train --version", "Rscript fit.R -h",
    "bash /root/.pyenv/libexec/pyenv exec python3 -m pytest tests",
    "node /root/.vscode-server-insiders/bin/x/out/server-main.js --host=127.0.0.1",
]


@pytest.mark.parametrize("cmd", RUNS)
def test_runs(project: Path, cmd: str) -> None:
    cmd = cmd.replace("/proj/", f"{project}/")
    ok, why = is_run(info(cmd, str(project)), project, load(project))
    assert ok, why


@pytest.mark.parametrize("cmd", NOT_RUNS)
def test_not_runs(project: Path, cmd: str) -> None:
    cmd = cmd.replace("/proj/", f"{project}/")
    ok, why = is_run(info(cmd, str(project)), project, load(project))
    assert not ok, why
    assert why


def test_location(project: Path) -> None:
    cfg = load(project)
    outside = str(project.parent / "elsewhere")
    assert not is_run(info("python train.py", outside), project, cfg)[0]
    assert is_run(info(f"python {project}/train.py", outside), project, cfg)[0]
    assert is_run(info("python ../proj/train.py", outside), project, cfg)[0]
    assert is_run(info(f"python t.py --data={project}/data/in.csv", outside), project, cfg)[0]
    assert is_run(info("python train.py", str(project / "src")), project, cfg)[0]
    assert not is_run(info("python train.py", None), project, cfg)[0]
    # a sibling folder sharing the prefix is not inside
    assert not is_run(info(f"python {project}x/t.py", outside), project, cfg)[0]
    assert not is_run(info("", str(project)), project, cfg)[0]


def test_config_overrides(project: Path) -> None:
    (project / ".onlooker").mkdir()
    (project / ".onlooker" / "config.toml").write_text(
        '[runs]\nprograms = ["python", "myexp"]\nignore = ["git"]\nignore_modules = ["pkg"]\n')
    cfg = load(project)
    assert is_run(info("myexp --x 1", str(project)), project, cfg)[0]
    assert not is_run(info("make", str(project)), project, cfg)[0]
    assert not is_run(info("python -m pkg.train", str(project)), project, cfg)[0]


def test_shell_one_liner_naming_outside_file_is_not_a_run(project: Path) -> None:
    ok, why = is_run(info("bash -c 'cat /etc/hostname'", str(project)), project, load(project))
    assert not ok and "no project file" in why


def test_exe_decides_when_argv0_is_rewritten(project: Path) -> None:
    cfg = load(project)
    assert is_run(info("train.py --x", str(project), exe="/usr/bin/python3.11"), project, cfg)[0]
    venv_tool = info(f"{project}/.venv/bin/uv sync", str(project), exe=f"{project}/.venv/bin/uv")
    assert not is_run(venv_tool, project, cfg)[0]


@pytest.mark.parametrize("argv0,exe,name", [
    ("python3.11", None, "python"), ("/usr/bin/python3", None, "python"), ("pypy3", None, "pypy"),
    ("-bash", None, "bash"), ("Rscript", None, "Rscript"), ("", "/usr/bin/julia", "julia"),
    ("go1.21", None, "go"), ("torchrun", None, "torchrun"),
])
def test_program_name(argv0: str, exe: str | None, name: str) -> None:
    assert program_name([argv0], exe) == name


@pytest.mark.parametrize("cmd,script", [
    ("python -u src/train.py a", "src/train.py"), ("python -OO -W ignore train.py", "train.py"),
    ("python -Wignore -X dev train.py", "train.py"), ("python -- train.py", "train.py"),
    ("python -m pkg.train", "pkg/train.py"), ("python -m tool", "tool/__main__.py"),
    ("python -m not_here", None), ("python -c 'print(1)' train.py", None), ("python", None),
    ("Rscript --vanilla fit.R", "fit.R"), ("bash -e run.sh", "run.sh"), ("julia x.jl", "x.jl"),
    ("sh -c 'x' run.sh", None), ("torchrun --nnodes 1 src/train.py --a", "src/train.py"),
    ("mpirun -np 4 python train.py", "train.py"), ("java -jar x.jar", "x.jar"),
    ("accelerate launch --multi_gpu train.py", "train.py"), ("make all", None),
])
def test_script_of(project: Path, cmd: str, script: str | None) -> None:
    got = script_of(info(cmd, str(project)))
    assert got == (os.path.join(str(project), script) if script else None)


def test_script_of_absolute_and_parent(project: Path) -> None:
    assert script_of(info("python /abs/t.py", str(project))) == "/abs/t.py"
    assert script_of(info("python ../t.py", str(project / "src"))) == f"{project}/t.py"


@pytest.mark.parametrize("cmd,mode,target,args", [
    ("python -uc 'x' a", "command", "x", ("a",)), ("python -mpkg a", "module", "pkg", ("a",)),
    ("bash -eo pipefail run.sh a", "script", "run.sh", ("a",)),
    ("bash -c -e 'x' zero one", "command", "x", ("zero", "one")),
    ("Rscript -e 'x'", "command", "x", ()), ("java -cp a.jar Main x", "class", "Main", ("x",)),
    ("deepspeed --num_gpus=2 t.py --deepspeed c.json", "script", "t.py",
     ("--deepspeed", "c.json")),
])
def test_parse_invocation(cmd: str, mode: str, target: str, args: tuple[str, ...]) -> None:
    inv = parse_invocation(shlex.split(cmd))
    assert (inv.mode, inv.target, inv.args) == (mode, target, args)


def test_launcher_args_are_kept() -> None:
    inv = parse_invocation(shlex.split("torchrun --standalone --nproc-per-node 2 t.py --lr 1"))
    assert inv.launcher == "torchrun"
    assert inv.launcher_args == ("--standalone", "--nproc-per-node", "2")
    assert inv.args == ("--lr", "1")


def _cfg_with(project: Path, toml: str):
    (project / ".onlooker").mkdir(exist_ok=True)
    (project / ".onlooker" / "config.toml").write_text(toml)
    return load(project)


@pytest.mark.parametrize("cmd,patterns", [
    ("python -m pytest tests", ["pytest"]),  # the module's name
    ("/proj/.venv/bin/python /proj/.venv/bin/pytest -x tests", ["pytest"]),  # console script
    ("python3.11 -m pytest tests/test_model.py", ["python -m pytest*"]),  # the command line
    ("python setup.py --version", ["setup.py"]),
    ("git rev-parse HEAD", ["git rev-parse*"]),  # above runs.ignore: the person said so
    ("python -c 'import sys; print(sys.version)'", ["python -c *"]),
    ("which python3", ["which"]),
])
def test_include_makes_runs(project: Path, cmd: str, patterns: list[str]) -> None:
    cmd = cmd.replace("/proj/", f"{project}/")
    cfg = load(project)
    assert not is_run(info(cmd, str(project)), project, cfg)[0]
    ok, why = is_run(info(cmd, str(project)), project, cfg, include=patterns)
    assert ok and "runs.include" in why


def test_include_keeps_location_and_onlooker(project: Path) -> None:
    cfg = load(project)
    outside = str(project.parent / "elsewhere")
    assert not is_run(info("python -m pytest", outside), project, cfg, include=["*"])[0]
    assert not is_run(info("onlooker status", str(project)), project, cfg, include=["*"])[0]
    # an include that names something else changes nothing
    assert not is_run(info("python -m pytest", str(project)), project, cfg,
                      include=["tox"])[0]
    assert is_run(info("python train.py", str(project)), project, cfg, include=["tox"])[0]


def test_include_is_read_from_config_when_it_has_the_key(project: Path) -> None:
    cfg = load(project)
    cfg["runs"]["include"] = ["pytest"]  # what config.py's `[runs] include` will hold
    assert is_run(info("python -m pytest", str(project)), project, cfg)[0]


def test_config_ignore_modules_still_applies(project: Path) -> None:
    cfg = _cfg_with(project, '[runs]\nignore_modules = ["pkg"]\n')
    assert not is_run(info("python -m pkg.train", str(project)), project, cfg)[0]
    # `build` is a tool only as itself, not as a prefix of a project's package
    assert is_run(info("python -m build_features", str(project)), project, cfg)[0]


@pytest.mark.parametrize("cmd,inner", [
    ("bash /root/.pyenv/libexec/pyenv exec python3 train.py --lr 1", "python3 train.py --lr 1"),
    ("bash /root/.pyenv/shims/python3 train.py", "python3 train.py"),
    ("/root/.pyenv/libexec/pyenv-exec python3.11 t.py", "python3.11 t.py"),
    ("bash /home/u/.rbenv/libexec/rbenv exec ruby x.rb", "ruby x.rb"),
    ("/root/.asdf/bin/asdf exec python t.py", "python t.py"),
    ("mise exec python@3.11 -- python t.py", "python t.py"),
    ("bash /root/.pyenv/libexec/pyenv-which python3", None),  # a helper, not a shim
    ("bash /home/u/.rbenv/libexec/rbenv-exec", None),  # nothing to hand over to
    ("bash /root/.pyenv/libexec/pyenv version-name", None),
    ("bash run.sh exec python t.py", None), ("python train.py", None), ("", None),
])
def test_unshim(cmd: str, inner: str | None) -> None:
    argv = shlex.split(cmd)
    assert unshim(argv) == (shlex.split(inner) if inner else argv)


def test_project_code_labels(project: Path) -> None:
    p = str(project)
    assert project_code(["python", "src/train.py"], cwd=p, project=project) == "src/train.py"
    assert project_code(["python", "-m", "tool"], cwd=p, project=project) == "tool/__main__.py"
    assert project_code(["bash", "-c", "python train.py"], cwd=p, project=project) is None
    assert project_code(["make", "train"], cwd=p, project=project) is None
    assert project_code(["python", f"{p}/.venv/lib/python3.11/site-packages/x/y.py"], cwd=p,
                        project=project) is None
    assert project_code(["python", "/tmp/train.py"], cwd=p, project=project) is None
    # a `.venv` counts as foreign only where the caller says so
    venv_script = ["python", ".venv/t.py"]
    assert project_code(venv_script, cwd=p, project=project) is None
    assert project_code(venv_script, cwd=p, project=project, foreign=()) == ".venv/t.py"


def test_a_job_script_outside_the_project_that_cds_into_it_is_no_run(tmp_path):
    # Seen by polling after its `cd`: cwd in the project, the script outside it.
    from onlooker.agent import config as config_mod

    project = tmp_path / "proj"
    (project / ".onlooker").mkdir(parents=True)
    (project / "data.csv").write_text("a\n")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    cfg = config_mod.load(project)

    def judged(argv):
        return is_run(ProcInfo(pid=5, ppid=1, argv=tuple(argv), cwd=str(project),
                               exe="/bin/bash", uid=0, start_ticks=1, started=1.0),
                      project, cfg)[0]

    assert not judged(["bash", str(jobs / "job.sh")])
    assert judged(["bash", str(jobs / "job.sh"), "data.csv"])  # it names a project file
    assert judged(["bash", "run.sh"])  # a project script


@pytest.mark.parametrize("argv, helper", [
    (["bash", "/root/.pyenv/shims/python3", "train.py"], True),
    (["/usr/bin/env", "bash", "/root/.pyenv/libexec/pyenv", "exec", "python3"], True),
    (["bash", "/opt/pyenv/libexec/pyenv-which", "python3"], True),  # a system-wide pyenv
    (["/root/.pyenv/versions/3.11.7/bin/python3", "train.py"], False),  # the real program
    (["/usr/libexec/platform-python", "train.py"], False),  # libexec, but no manager's
    (["/usr/libexec/git-core/git-remote-https", "origin"], False),
    (["python", "train.py"], False),
])
def test_a_version_managers_plumbing_is_told_from_programs(argv, helper):
    from onlooker.agent.rules.classify import is_manager_helper

    assert is_manager_helper(argv) is helper


@pytest.mark.parametrize("argv, environ, writes", [
    (["python", "train.py"], (), True),
    (["python", "-B", "train.py"], (), False),
    (["python3", "-uB", "train.py"], (), False),
    (["python", "-W", "ignore", "-B", "train.py"], (), False),
    (["python", "train.py", "-B"], (), True),  # the script's own argument
    (["python", "-X", "pycache_prefix=/tmp/c", "train.py"], (), False),
    (["python", "train.py"], (("PYTHONDONTWRITEBYTECODE", "1"),), False),
    (["python", "train.py"], (("PYTHONDONTWRITEBYTECODE", ""),), True),
    (["python", "train.py"], (("PYTHONPYCACHEPREFIX", "/tmp/c"),), False),
    (["bash", "-B", "run.sh"], (("PYTHONDONTWRITEBYTECODE", "1"),), True),  # not Python
])
def test_writes_bytecode(argv, environ, writes):
    from onlooker.agent.events import ProcInfo
    info = ProcInfo(pid=1, ppid=0, argv=tuple(argv), cwd="/p", exe=None, uid=0,
                    start_ticks=1, started=0.0, environ=environ)
    from onlooker.agent.rules.classify import writes_bytecode
    assert writes_bytecode(info) is writes
