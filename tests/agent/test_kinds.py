"""Asset kinds from rules, real file bytes, names and places."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile

import pytest

from onlooker.agent.rules.kinds import KINDS, STORE_ALWAYS, is_code, kind_of


def kind(rel: str, head: bytes | None = None, role: str | None = None,
         rules: dict[str, str] | None = None, size: int | None = None) -> str:
    return kind_of(rel, head, size=size, role=role, rules=rules or {})


def torch_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # torch.save writes archive/data.pkl first
        z.writestr("archive/data.pkl", pickle.dumps({"w": [1.0]}, protocol=2))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", b"\0" * 16)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()[:4096]


def npz() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", NPY + b"\0" * 8)
    return buf.getvalue()


def safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 8


NPY = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"
HDF5 = b"\x89HDF\r\n\x1a\n" + b"\0" * 100
PICKLE = pickle.dumps({"a": 1}, protocol=4)
NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4}).encode()


@pytest.mark.parametrize("rel,head,expected", [
    ("model.pt", torch_zip(), "model"),
    ("out/anything.bin", torch_zip(), "model"),
    ("weights.tar", torch_zip(), "model"),
    ("arrays.npz", npz(), "dataset"),
    ("x.safetensors", safetensors(), "model"),
    ("blob", safetensors(), "model"),
    ("llm.gguf", b"GGUF\x03\x00\x00\x00", "model"),
    ("file.h5", HDF5, "dataset"),
    ("data/train.h5", HDF5, "dataset"),
    ("model.h5", HDF5, "model"),
    ("models/net.h5", HDF5, "model"),
    ("net.keras.tmp", HDF5, "dataset"),
    ("net.keras", HDF5, "model"),
    ("x.parquet", b"PAR1\x15\x04", "dataset"),
    ("unknown.bin", b"PAR1\x15\x04", "dataset"),
    ("t.arrow", b"ARROW1\0\0", "dataset"),
    ("arr.npy", NPY, "dataset"),
    ("models/embeddings.npy", NPY, "model"),
    ("clf.pkl", PICKLE, "model"),
    ("data/features.pkl", PICKLE, "dataset"),
    ("features/x.pkl", PICKLE, "dataset"),
    ("data/model.pkl", PICKLE, "model"),
    ("untitled", NOTEBOOK, "notebook"),
    ("plain.json", b'{"a": 1}', "other"),
])
def test_content(rel: str, head: bytes, expected: str) -> None:
    assert kind(rel, head) == expected


def test_safetensors_header_length_must_fit() -> None:
    head = struct.pack("<Q", 10_000) + b'{"w": 1}'
    assert kind("blob", head, size=100) == "other"
    assert kind("blob", head, size=20_000) == "model"


@pytest.mark.parametrize("rel,role,expected", [
    ("X_train.pkl", "input", "dataset"),
    ("X_train.pkl", "output", "model"),
    ("clf.pkl", "input", "model"),
    ("clf.pkl", "output", "model"),
    ("data/cache.pkl", "output", "dataset"),
])
def test_role_tips_pickles(rel: str, role: str, expected: str) -> None:
    assert kind(rel, PICKLE, role=role) == expected
    assert kind(rel, None, role=role) == expected


@pytest.mark.parametrize("rel,expected", [
    ("train.py", "code"), ("src/model.py", "code"), ("fit.R", "code"), ("a.jl", "code"),
    ("run.sh", "code"), ("q.sql", "code"), ("k.cu", "code"), ("Makefile", "code"),
    ("Snakefile", "code"), ("Dockerfile", "code"), ("dvc.yaml", "config"),
    ("nb.ipynb", "notebook"), ("report.Rmd", "notebook"), ("doc.qmd", "notebook"),
    ("params.yaml", "config"), ("conf/model/resnet.yaml", "config"), ("pyproject.toml", "config"),
    ("setup.cfg", "config"), ("a.ini", "config"), ("x.conf", "config"),
    ("params.json", "config"), ("config_small.json", "config"), ("hparams.yaml", "config"),
    ("models/bert/config.json", "config"), ("requirements-dev.txt", "config"),
    ("conf/eval.yaml", "config"), ("eval_config.json", "config"),
    ("configs/base.json", "config"), ("conf/model/resnet.json", "config"),
    ("configs/metrics.json", "metrics"), ("data/configs.json", "dataset"),
    ("metrics.json", "metrics"), ("metrics_test.json", "metrics"), ("scores.json", "metrics"),
    ("results.json", "metrics"), ("eval_results.json", "metrics"), ("all_results.json", "metrics"),
    ("evaluation.json", "metrics"), ("summary.json", "metrics"),
    ("wandb/run-1/files/wandb-summary.json", "metrics"), ("metrics.yaml", "metrics"),
    ("metrics/loss.tsv", "metrics"), ("dvclive/plots/metrics/train/loss.tsv", "metrics"),
    ("mlruns/0/abc/metrics/loss", "metrics"), ("lightning_logs/version_0/metrics.csv", "metrics"),
    ("out/trainer_state.json", "metrics"), ("runs/x/events.out.tfevents.1700.host.1.0", "metrics"),
    ("train.log", "log"), ("nohup.out", "log"), ("job.err", "log"), ("logs/run1/stdout.txt", "log"),
    ("log/x", "log"),
    ("train.csv", "dataset"), ("x.tsv", "dataset"), ("x.parquet", "dataset"),
    ("x.feather", "dataset"), ("x.arrow", "dataset"), ("x.jsonl", "dataset"),
    ("x.ndjson", "dataset"), ("x.npy", "dataset"), ("x.npz", "dataset"),
    ("x.tfrecord", "dataset"), ("x.avro", "dataset"), ("x.orc", "dataset"),
    ("data/x.json", "dataset"), ("data/labels.txt", "dataset"), ("raw/a.xml", "dataset"),
    ("datasets/img/1.png", "dataset"), ("features/f.bin", "dataset"), ("data/x.h5", "dataset"),
    ("model.pt", "model"), ("ckpt/last.pth", "model"), ("epoch=3.ckpt", "model"),
    ("m.safetensors", "model"), ("m.onnx", "model"), ("m.tflite", "model"), ("m.keras", "model"),
    ("m.gguf", "model"), ("m.ggml", "model"), ("m.mar", "model"), ("m.cbm", "model"),
    ("m.xgb", "model"), ("m.lgb", "model"), ("clf.joblib", "model"), ("clf.pickle", "model"),
    ("pytorch_model.bin", "model"), ("models/saved_model.pb", "model"),
    ("models/sp.model", "model"), ("weights.h5", "model"), ("checkpoints/x.bin", "model"),
    ("random.bin", "other"), ("plot.png", "other"), ("README.md", "other"), ("a.json", "other"),
    (".env", "other"), (".env.local", "other"), ("prod.env", "other"),
    ("certs/server.pem", "other"),
    ("id_rsa", "other"), ("credentials.json", "other"), ("config/secrets.yaml", "other"),
    ("./train.py", "code"),
])
def test_names_and_places(rel: str, expected: str) -> None:
    assert kind(rel) == expected


def test_rules_come_first_and_last_match_wins() -> None:
    rules = {"data/**": "dataset", "data/*.yaml": "config", "*.py": "other"}
    assert kind("data/raw/a.json", rules=rules) == "dataset"
    assert kind("data/schema.yaml", rules=rules) == "config"
    assert kind("train.py", rules=rules) == "other"
    assert kind("clf.pkl", PICKLE, rules={"*.pkl": "dataset"}) == "dataset"
    assert kind("nb.ipynb", rules=rules) == "notebook"


def test_unknown_kind_in_rules_is_ignored() -> None:
    assert kind("train.py", rules={"*.py": "weights"}) == "code"


def test_every_answer_is_a_kind() -> None:
    assert set(STORE_ALWAYS) < set(KINDS)
    for rel in ("", "/", "a/", ".", "..", "a..b", "x." * 50):
        assert kind(rel, b"") in KINDS


@pytest.mark.parametrize("rel,expected", [
    ("train.py", True), ("nb.ipynb", True), ("run.sh", True), ("Makefile", True),
    ("data.csv", False), ("params.yaml", False), ("model.pt", False),
])
def test_is_code(rel: str, expected: bool) -> None:
    assert is_code(rel) is expected


@pytest.mark.parametrize("rel", [
    "out/checkpoint-500/optimizer.pt", "out/checkpoint-500/scheduler.pt",
    "out/checkpoint-500/rng_state.pth", "out/checkpoint-500/rng_state_3.pth",
    "out/checkpoint-500/training_args.bin", "out/checkpoint-500/scaler.pt",
    "ckpt/optimizer.bin", "ckpt/scheduler.bin", "ckpt/sampler.bin", "ckpt/random_states_0.pkl",
    "global_step10/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "lr_scheduler.pt",
])
def test_training_state_is_not_a_model(rel: str) -> None:
    # torch.save writes optimizer and RNG state as it writes weights: the name decides
    assert kind(rel, torch_zip()) == "state"
    assert kind(rel, PICKLE, role="input") == "state"
    assert kind(rel) == "state"
    assert "state" in KINDS and "state" not in STORE_ALWAYS


@pytest.mark.parametrize("rel,expected", [
    ("out/checkpoint-500/model.safetensors", "model"), ("out/checkpoint-500/pytorch_model.bin",
                                                         "model"),
    ("global_step10/mp_rank_00_model_states.pt", "model"),
    ("out/checkpoint-500/trainer_state.json", "metrics"),
    ("out/checkpoint-500/optimizer_config.json", "config"), ("epoch=3.ckpt", "model"),
])
def test_checkpoint_neighbours_keep_their_kinds(rel: str, expected: str) -> None:
    assert kind(rel, torch_zip() if rel.endswith((".pt", ".bin")) else None) == expected


def test_rules_still_win_over_state_and_meta_role_is_accepted() -> None:
    assert kind("optimizer.pt", torch_zip(), rules={"optimizer.pt": "model"}) == "model"
    assert kind("mlruns/0/x/meta.yaml", None, role="meta") == "config"
    assert kind("X_train.pkl", PICKLE, role="meta") == "model"  # only an input is data-like
