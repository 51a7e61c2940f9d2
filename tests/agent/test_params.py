"""Params from argv, config files and the environment."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlooker.agent.rules.classify import project_code
from onlooker.agent.rules.params import (
    argv_params,
    config_params,
    env_params,
    framework_params,
    framework_run_dir,
    merge_step_params,
    step_params,
    typed,
)


@pytest.mark.parametrize("text,value", [
    ("1", 1), ("-1", -1), ("+3", 3), ("0", 0), ("007", "007"), ("0.1", 0.1), ("1e-3", 0.001),
    (".5", 0.5), ("1.", 1.0), ("-2.5E2", -250.0), ("true", True), ("False", False),
    ("TRUE", True), ("null", None), ("None", None), ("none", "none"), ("nan", "nan"),
    ("inf", "inf"), ("0x10", "0x10"), ("1_000", "1_000"), ("adam", "adam"), ("", ""),
    ("9" * 5000, "9" * 5000),
])
def test_typed(text: str, value: object) -> None:
    assert typed(text) == value and type(typed(text)) is type(value)


@pytest.mark.parametrize("cmd,params", [
    ("python -u src/train.py a b --lr 0.1", {"argv[1]": "a", "argv[2]": "b", "lr": 0.1}),
    ("python train.py --lr=0.1 -n 5 --verbose", {"lr": 0.1, "n": 5, "verbose": True}),
    ("python train.py --shift -1 --scale -0.5", {"shift": -1, "scale": -0.5}),
    ("python train.py --fast --lr 1", {"fast": True, "lr": 1}),
    ("python train.py model.lr=0.1 +trainer.gpus=2 ++seed=3 ~db",
     {"model.lr": 0.1, "trainer.gpus": 2, "seed": 3}),
    # Hydra: its own settings, deletions and the multirun switch are not params; a sweep
    # list is the parent's literal text
    ("python app.py db.user=x +new=1 ~old hydra.run.dir=out/x hydra/launcher=joblib "
     "-m lr=0.1,0.01", {"db.user": "x", "new": 1, "lr": "0.1,0.01"}),
    ("python app.py --multirun seed=1,2,3", {"seed": "1,2,3"}),
    ("python app.py 'name=\"a b\"' opt='adam'", {"name": "a b", "opt": "adam"}),
    ("python train.py -m resnet", {"m": "resnet"}),  # no overrides: an ordinary option
    ("python train.py -m", {"m": True}),
    ("python train.py model=resnet db/backend=pg", {"model": "resnet", "db/backend": "pg"}),
    ("python train.py --layers 64 128 256 out/", {"layers": [64, 128, 256], "argv[1]": "out/"}),
    ("python train.py --tag a --tag b --tag c", {"tag": ["a", "b", "c"]}),
    ("python train.py --flag x=1", {"flag": True, "x": 1}),
    ("python train.py -- --not-an-option x=1", {"argv[1]": "--not-an-option", "argv[2]": "x=1"}),
    ("python train.py --name=", {"name": ""}),
    ("python train.py --data=a=b", {"data": "a=b"}),
    ("python train.py --debug null --opt None", {"debug": None, "opt": None}),
    ("make target VAR=1 -j 4", {"argv[1]": "target", "VAR": 1, "j": 4}),
    ("python -m pkg.train --epochs 3", {"epochs": 3}),
    ("python -c 'import x' --epochs 3", {"epochs": 3}),
    ("torchrun --nproc_per_node=2 train.py --epochs 3",
     {"torchrun:nproc_per_node": 2, "epochs": 3}),
    ("accelerate launch --num_processes 2 train.py --bs 8",
     {"accelerate:num_processes": 2, "bs": 8}),
    ("mpirun -np 4 python train.py --x 1", {"mpirun:np": 4, "x": 1}),
    ("python -m torch.distributed.run --nproc_per_node 2 train.py a",
     {"torchrun:nproc_per_node": 2, "argv[1]": "a"}),
    ("Rscript fit.R 10 data.csv", {"argv[1]": 10, "argv[2]": "data.csv"}),
    ("bash run.sh --lr 0.3", {"lr": 0.3}),
    ("python train.py --api-key sk-abcdefghijklmnop1234 --password=x TOKEN=y --max_tokens 5",
     {"api-key": "***", "password": "***", "TOKEN": "***", "max_tokens": 5}),
    ("python train.py hf_AbCdEfGhIjKlMnOpQrStUvWx", {"argv[1]": "***"}),
    # papermill, as itself and as the console script Python runs
    ("papermill in.ipynb out.ipynb -p alpha 0.5 -p l1_ratio 0.1",
     {"argv[1]": "in.ipynb", "argv[2]": "out.ipynb", "alpha": 0.5, "l1_ratio": 0.1}),
    ("/usr/bin/python3 /usr/local/bin/papermill nb.ipynb out.ipynb --parameters n 3 "
     "-r tag 007 -k python3 --log-output -y 'opt: {name: adam}'",
     {"argv[1]": "nb.ipynb", "argv[2]": "out.ipynb", "n": 3, "tag": "007",
      "papermill:kernel": "python3", "papermill:log-output": True, "opt.name": "adam"}),
    ("papermill nb.ipynb - -y 'a: 1' -p a 2", {"argv[1]": "nb.ipynb", "argv[2]": "-", "a": 2}),
    ("papermill nb.ipynb o.ipynb -y '[not, a, mapping' -b !!!",
     {"argv[1]": "nb.ipynb", "argv[2]": "o.ipynb"}),
    ("dvc exp run -S lr=0.1 --set-param=conf/c.yaml:model.depth=3 train",
     {"params.yaml:lr": 0.1, "conf/c.yaml:model.depth": 3, "argv[1]": "exp", "argv[2]": "run",
      "argv[3]": "train"}),
    # a version manager's shim gives the program it hands over to, once
    ("bash /root/.pyenv/libexec/pyenv exec python3 train.py --lr 0.1 out/", {"lr": 0.1,
                                                                          "argv[1]": "out/"}),
    ("bash /root/.pyenv/shims/python3 train.py --lr 0.1", {"lr": 0.1}),
    ("/root/.asdf/bin/asdf exec python train.py --lr 0.1", {"lr": 0.1}),
    ("python", {}), ("", {}),
])
def test_argv_params(cmd: str, params: dict) -> None:
    assert argv_params(shlex.split(cmd)) == params


def test_positionals_keep_their_number_when_options_move() -> None:
    a = argv_params(["python", "t.py", "in.csv", "--lr", "1", "out.csv"])
    b = argv_params(["python", "t.py", "--lr", "1", "in.csv", "out.csv"])
    assert a == b == {"argv[1]": "in.csv", "lr": 1, "argv[2]": "out.csv"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=15))
def test_argv_params_never_raise(argv: list[str]) -> None:
    out = argv_params(argv)
    json.dumps(out)  # storable as is


YAML = b"""
train:
  seed: 1
  lr: 0.001
  layers: [64, 128]
  optim: [{name: adam, lr: 0.1}, {name: sgd}]
  empty: {}
db:
  password: hunter2
when: 2024-01-02
matrix: [[1, 2], [3, 4]]
"""


def test_yaml() -> None:
    assert config_params("params.yaml", YAML, "params.yaml") == {
        "params.yaml:train.seed": 1, "params.yaml:train.lr": 0.001,
        "params.yaml:train.layers": [64, 128], "params.yaml:train.optim.0.name": "adam",
        "params.yaml:train.optim.0.lr": 0.1, "params.yaml:train.optim.1.name": "sgd",
        "params.yaml:train.empty": {}, "params.yaml:db.password": "***",
        "params.yaml:when": "2024-01-02", "params.yaml:matrix": [[1, 2], [3, 4]],
    }


@pytest.mark.parametrize("path,data,expected", [
    ("c.json", b'{"a": {"b": [1, 2]}, "c": null, "d": NaN}', {"a.b": [1, 2], "c": None,
                                                              "d": "nan"}),
    ("c.toml", b'[model]\ndepth = 3\n[model.opt]\nlr = 1e-3\n', {"model.depth": 3,
                                                                  "model.opt.lr": 0.001}),
    ("setup.cfg", b"[train]\nlr = 0.1\nname = x\nflag\n", {"train.lr": 0.1, "train.name": "x",
                                                           "train.flag": None}),
    ("c.ini", b"lr = 0.1\n[s]\nk=v\n", {"lr": 0.1, "s.k": "v"}),
    ("c.conf", b"[s]\nK=True\n", {"s.K": True}),
    ("c.yml", b"- a: 1\n- a: 2\n", {"0.a": 1, "1.a": 2}),
    ("multi.yaml", b"a: 1\n---\nb: 2\n", {"0.a": 1, "1.b": 2}),
    ("noext", b'{"x": 1}', {"x": 1}),
    ("noext", b'x = 1\n[t]\ny = "z"\n', {"x": 1, "t.y": "z"}),
    ("noext", b"a:\n  b: 1\n", {"a.b": 1}),
    ("c.yaml", b"!!python/object/apply:os.system ['touch /tmp/pwned']", {}),
    ("c.yaml", b"a: !!python/name:os.system\n", {}),
    ("c.yaml", b"a: [1, 2\n", {}),
    ("c.json", b"{not json", {}),
    ("c.json", b"\xff\xfe\x00", {}),
    ("c.yaml", b"just a string", {}),
    ("noext", b"plain words, no config here", {}),
    ("c.yaml", b"", {}),
    ("c.yaml", b"a: !!binary aGVsbG8=\nb: !!set {x, y}\n", {"a": "<5 bytes>", "b": ["x", "y"]}),
])
def test_config_formats(path: str, data: bytes, expected: dict) -> None:
    got = config_params(path, data, path)
    assert got == {f"{path}:{k}": v for k, v in expected.items()}


def test_yaml_alias_bomb_is_bounded() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    out = config_params("b.yaml", "\n".join(lines).encode(), "b.yaml")
    assert sum(len(json.dumps(v)) for v in out.values()) < 10_000_000


def test_deep_nesting_does_not_raise() -> None:
    data = ("[" * 5000 + "]" * 5000).encode()
    assert config_params("deep.json", data, "deep.json") == {}


def test_env_params() -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "4", "NCCL_DEBUG": "INFO",
               "NCCL_P2P_DISABLE": "1", "HF_TOKEN": "hf_x", "PATH": "/bin"}
    names = ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "NCCL_*", "HF_TOKEN", "SEED"]
    assert env_params(environ, names) == {
        "env:CUDA_VISIBLE_DEVICES": "0,1", "env:OMP_NUM_THREADS": 4, "env:NCCL_DEBUG": "INFO",
        "env:NCCL_P2P_DISABLE": 1, "env:HF_TOKEN": "***"}


def test_papermill_parameters_base64_and_file(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("alpha: 0.1\nnested: {k: v}\nbeta: 1\n")
    b64 = base64.b64encode(b"beta: 2\n").decode()
    cmd = ["papermill", "nb.ipynb", "o.ipynb", "-f", "p.yaml", "-b", b64, "-p", "alpha", "0.5"]
    assert argv_params(cmd, cwd=str(tmp_path)) == {
        "argv[1]": "nb.ipynb", "argv[2]": "o.ipynb", "papermill:parameters_file": "p.yaml",
        "alpha": 0.5, "nested.k": "v", "beta": 2}
    # without a cwd a relative file cannot be found: its name is kept, nothing is guessed
    assert argv_params(cmd[:5]) == {"argv[1]": "nb.ipynb", "argv[2]": "o.ipynb",
                                    "papermill:parameters_file": "p.yaml"}


# -- steps: only project code gives params -------------------------------------------

@pytest.fixture()
def proj(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for rel in ("train.py", "sweep.sh", "src/mypkg/__init__.py", "src/mypkg/cli.py",
                "pkg/__init__.py", "pkg/train.py", "nb.ipynb", "bin/train", "lib/x.jar"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "my-train").write_text(
        "#!/p/.venv/bin/python\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
        "from mypkg.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n")
    (venv_bin / "dvc").write_text("#!/p/.venv/bin/python\nimport sys\nfrom dvc.cli import main\n")
    return root


SYSTEM_TOOLS = [
    "git version", "git rev-parse HEAD", "/usr/bin/git -C . status --porcelain", "fc-list",
    "uname -a", "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader",
    "ldconfig -p", "/sbin/ldconfig -p", "lsb_release -a", "sh -c 'uname -p'",
    "/bin/sh -c 'ldconfig -p 2>/dev/null'", "which python3", "make train LR=0.1",
    "dvc repro", "snakemake -j 2", "python -c 'import sys; print(sys.version)'",
    "python -m pip list --format=json", "/usr/bin/python3 -m torch.utils.collect_env",
    "bash /root/.pyenv/libexec/pyenv-which python3",
    "python /usr/lib/python3/dist-packages/lsb_release.py -a",
    "/p/.venv/bin/python /p/.venv/lib/python3.11/site-packages/torch/_inductor/"
    "compile_worker/__main__.py --workers=32 --parent=99",
    "/p/.venv/bin/python /p/.venv/bin/dvc repro", "/p/.venv/bin/ninja -v -j 8",
    "java -cp /opt/spark/jars/x.jar org.apache.spark.deploy.SparkSubmit --master local",
    "Rscript -e 'print(1)'", "env CUDA_VISIBLE_DEVICES=0 python train.py",
]


@pytest.mark.parametrize("cmd", SYSTEM_TOOLS)
def test_system_tools_give_no_params(proj: Path, cmd: str) -> None:
    argv = shlex.split(cmd.replace("/p/", f"{proj}/"))
    assert step_params(argv, None, cwd=str(proj), project=proj) == {}
    assert project_code(argv, None, cwd=str(proj), project=proj) is None


@pytest.mark.parametrize("cmd,label,params", [
    ("python -u train.py --lr 0.1 a", "train.py", {"lr": 0.1, "argv[1]": "a"}),
    ("python ../train.py --lr 0.1", "train.py", {"lr": 0.1}),  # from the project's src/
    ("python -m pkg.train --epochs 3", "pkg/train.py", {"epochs": 3}),
    ("python -m mypkg.cli --epochs 3", "src/mypkg/cli.py", {"epochs": 3}),  # src layout
    ("bash sweep.sh 0.1 0.2", "sweep.sh", {"argv[1]": 0.1, "argv[2]": 0.2}),
    ("bash sweep.sh", "sweep.sh", {}),
    ("./bin/train --epochs 2", "bin/train", {"epochs": 2}),
    ("torchrun --nproc_per_node 2 train.py --bs 8", "train.py",
     {"torchrun:nproc_per_node": 2, "bs": 8}),
    ("bash /root/.pyenv/libexec/pyenv exec python3 train.py --lr 0.1", "train.py", {"lr": 0.1}),
    ("/p/.venv/bin/python /p/.venv/bin/my-train --lr 3", "my-train", {"lr": 3}),
    ("papermill nb.ipynb out.ipynb -p alpha 0.5", "nb.ipynb",
     {"argv[1]": "nb.ipynb", "argv[2]": "out.ipynb", "alpha": 0.5}),
    ("java -cp lib/x.jar org.me.Train --lr 1", "org.me.Train", {"lr": 1}),
])
def test_project_steps_give_params(proj: Path, cmd: str, label: str, params: dict) -> None:
    argv = shlex.split(cmd.replace("/p/", f"{proj}/"))
    cwd = str(proj / "src") if cmd.startswith("python ../") else str(proj)
    assert project_code(argv, None, cwd=cwd, project=proj) == label
    assert step_params(argv, None, cwd=cwd, project=proj) == params


def test_step_without_cwd_resolves_against_the_project(proj: Path) -> None:
    argv = ["python", "train.py", "--lr", "1"]
    assert step_params(argv, None, cwd=None, project=str(proj)) == {"lr": 1}
    assert step_params(argv, None, cwd="/elsewhere", project=str(proj)) == {}


def test_merge_step_params() -> None:
    # one project step (make -> python train.py): its keys as they are; a key the run's
    # own program already has with another value does not overwrite it
    assert merge_step_params({"argv[1]": "train", "LR": 0.1},
                             [("train.py", {"lr": 0.1, "argv[1]": "data.csv"})]) == {
        "argv[1]": "train", "LR": 0.1, "lr": 0.1, "train.py:argv[1]": "data.csv"}
    # torchrun's workers repeat the run's own params; so does a shim's program
    root = {"torchrun:nproc_per_node": 2, "bs": 8}
    assert merge_step_params(root, [("train.py", {"bs": 8}), ("train.py", {"bs": 8})]) == root
    # a sweep wrapper: every job keyed, numbered where a label repeats
    jobs = [("train.py", {"lr": 0.1}), ("train.py", {"lr": 0.01}), ("eval.py", {"k": 5}),
            ("train.py", {"lr": 0.1})]
    assert merge_step_params({}, jobs) == {"train.py#1:lr": 0.1, "train.py#2:lr": 0.01,
                                           "eval.py:k": 5}
    # a pipeline: one key per stage
    assert merge_step_params({}, [("prep.py", {"argv[1]": "raw"}), ("fit.py", {"e": 3}),
                                  ("fit.py", {})]) == {"prep.py:argv[1]": "raw", "fit.py:e": 3}
    assert merge_step_params({"a": 1}, []) == {"a": 1}


# -- frameworks' files -----------------------------------------------------------------

HYDRA_APP = """
import hydra
from omegaconf import DictConfig

@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    print(cfg.lr)

if __name__ == "__main__":
    main()
"""
HYDRA_CONFIG = """
defaults:
  - db: mysql
  - _self_
lr: 0.01
name: ${db.user}-run
when: ${now:%Y}
train:
  epochs: 3
  layers: [64, 128]
  opt: [{name: adam}]
old: 5
"""


def _hydra(tmp: Path, *args: str) -> None:
    subprocess.run([sys.executable, "app.py", *args], cwd=tmp, check=True, timeout=120,
                   capture_output=True)


def _written(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_hydra_files_from_a_real_app(tmp_path: Path) -> None:
    pytest.importorskip("hydra")
    (tmp_path / "conf" / "db").mkdir(parents=True)
    (tmp_path / "app.py").write_text(HYDRA_APP)
    (tmp_path / "conf" / "config.yaml").write_text(HYDRA_CONFIG)
    (tmp_path / "conf" / "db" / "mysql.yaml").write_text("user: root\npassword: hunter2\n")
    # Hydra's own default run dir: outputs/<date>/<time>, new for every run
    _hydra(tmp_path, "db.user=x", "+new=1", "~old", "train.epochs=5")
    _hydra(tmp_path, "-m", "lr=0.1,0.01", "hydra.sweep.dir=sweep")
    files = _written(tmp_path)
    run = {rel: data for rel, data in files.items() if rel.startswith("outputs/")}
    cfg = next(r for r in run if r.endswith(".hydra/config.yaml"))
    assert framework_params(cfg, run[cfg]) == {
        "db.user": "x", "db.password": "***", "lr": 0.01, "name": "x-run",
        "when": "${now:%Y}", "train.epochs": 5, "train.layers": [64, 128],
        "train.opt.0.name": "adam", "new": 1}
    over = next(r for r in run if r.endswith(".hydra/overrides.yaml"))
    assert framework_params(over, run[over]) == {"db.user": "x", "new": 1, "train.epochs": 5}
    own = next(r for r in run if r.endswith(".hydra/hydra.yaml"))
    assert framework_params(own, run[own]) == {}
    assert framework_run_dir(cfg) == framework_run_dir(own) == cfg.rsplit("/", 2)[0]
    assert framework_run_dir(cfg).startswith("outputs/")
    # the sweep: one process, one folder per job; the base multirun.yaml is Hydra's
    assert framework_params("sweep/multirun.yaml", files["sweep/multirun.yaml"]) == {}
    for job, lr in (("0", 0.1), ("1", 0.01)):
        rel = f"sweep/{job}/.hydra/overrides.yaml"
        assert framework_params(rel, files[rel]) == {"lr": lr}
        rel = f"sweep/{job}/.hydra/config.yaml"
        assert framework_params(rel, files[rel])["lr"] == lr
        assert framework_run_dir(rel) == f"sweep/{job}"
    # the log Hydra writes beside them is no framework file
    log_file = next(r for r in files if r.endswith("app.log"))
    assert framework_params(log_file, files[log_file]) is None


LIGHTNING_HPARAMS = b"""lr: 0.001
batch_size: 32
layers:
- 64
- 128
activation: !!python/name:torch.nn.modules.activation.ReLU ''
args: !!python/object:argparse.Namespace
  seed: 7
api_token: abc
"""


def test_lightning_hparams() -> None:
    rel = "lightning_logs/version_3/hparams.yaml"
    assert framework_params(rel, LIGHTNING_HPARAMS) == {
        "lr": 0.001, "batch_size": 32, "layers": [64, 128],
        "activation": "torch.nn.modules.activation.ReLU", "args.seed": 7, "api_token": "***"}
    assert framework_run_dir(rel) == "lightning_logs/version_3"
    cli = "logs/lightning_logs/version_0/config.yaml"
    assert framework_params(cli, b"model:\n  lr: 0.1\ntrainer:\n  max_epochs: 2\n") == {
        "model.lr": 0.1, "trainer.max_epochs": 2}


@pytest.mark.parametrize("rel,data,expected", [
    ("conf/config.yaml", b"a: 1\n", None),  # a config file, not a framework's record
    ("multirun.yaml", b"a: 1\n", None),  # a user's file of that name
    ("outputs/x/.hydra/notes.yaml", b"a: 1\n", None),
    ("outputs/x/.hydra/config.yaml", b"a: [1\n", {}),  # torn mid-write
    ("outputs/x/.hydra/overrides.yaml", b"{a: 1}\n", {}),
    ("lightning_logs/version_1/hparams.yaml", b"\xff\xfe", None),
    ("lightning_logs/version_1/hparams.yaml", b"!!python/object/apply:os.system ['id']\n",
     None),
])
def test_framework_params_odd_files(rel: str, data: bytes, expected: object) -> None:
    assert framework_params(rel, data) == expected


def test_framework_yaml_constructs_nothing() -> None:
    data = b"a: !!python/object/apply:os.system ['touch /tmp/onlooker-pwned']\n"
    assert framework_params("lightning_logs/version_1/hparams.yaml", data) == {
        "a": ["touch /tmp/onlooker-pwned"]}
    assert not Path("/tmp/onlooker-pwned").exists()


_WORDS = st.sampled_from(["-p", "-r", "-f", "-y", "-b", "-m", "--multirun", "-S", "exec",
                          "--", "~a", "+a=1", "hydra.x=1", "a=1,2", "x.ipynb", "'q'", "-k"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([["papermill"], ["dvc", "exp", "run"], ["python", "app.py"],
                        ["bash", "/r/.pyenv/libexec/pyenv", "exec", "python"]]),
       st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=12))
def test_conventions_never_raise(head: list[str], tail: list[str]) -> None:
    json.dumps(argv_params(head + tail, cwd="/nonexistent"))
    json.dumps(step_params(head + tail, None, cwd="/nonexistent", project="/nonexistent"))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["o/.hydra/config.yaml", "o/.hydra/overrides.yaml", "multirun.yaml",
                        "lightning_logs/version_0/hparams.yaml", "v/version_2/config.yaml"]),
       st.one_of(st.binary(max_size=200),
                 st.text(alphabet="!-:[]{}&*'\"\n ab1", max_size=80).map(str.encode)))
def test_framework_params_never_raise(rel: str, data: bytes) -> None:
    out = framework_params(rel, data)
    assert out is None or isinstance(out, dict)
    json.dumps(out)
