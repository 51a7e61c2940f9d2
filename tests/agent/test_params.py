"""Params from argv, config files and the environment."""

from __future__ import annotations

import json
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlooker.agent.params import argv_params, config_params, env_params, typed


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
     {"model.lr": 0.1, "trainer.gpus": 2, "seed": 3, "db": None}),
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
