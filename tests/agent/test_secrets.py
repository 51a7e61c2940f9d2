"""Redaction of credentials in names, values, argv, environments and params."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlooker.agent.rules.secrets import (
    MASK,
    is_secret_name,
    looks_secret_value,
    redact_argv,
    redact_env,
    redact_mapping,
    redact_text,
)

SECRET_NAMES = [
    "api_key", "apikey", "apiKey", "API-KEY", "token", "secret", "password", "passwd", "pwd",
    "db_pwd", "credential", "credentials", "auth", "Authorization", "private_key", "access_key",
    "session_key", "HF_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
    "GITHUB_TOKEN", "PGPASSWORD", "client_secret", "accessToken", "refresh_token", "x-api-key",
    "OPENAI_API_KEY", "ssh_key", "bearer_token", "adapter-access-token", "db.password",
    "MLFLOW_TRACKING_PASSWORD", "cookie", "passphrase",
]
NOT_SECRET_NAMES = [
    "tokenizer", "tokenizer_name", "max_tokens", "num_tokens", "max_new_tokens",
    "tokens_per_batch", "pad_token", "eos_token", "bos_token_id", "cls_token_id", "token_ids",
    "PWD", "OLDPWD", "author", "key", "sort_key", "keyboard", "lr", "batch_size", "monkey",
    "CUDA_VISIBLE_DEVICES", "seed", "model_name",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", NOT_SECRET_NAMES)
def test_names_that_are_params(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize("value", [
    "sk-proj-abcdefghijklmnopqrstuv", "sk-ant-api03-abcdefghijklmnop",
    "ghp_" + "a1B2" * 9, "gho_" + "x" * 36, "github_pat_11ABCDEFG0123456789_abcdefghij",
    "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz", "AKIAIOSFODNN7EXAMPLE", "xoxb-1234-5678-abcdefgh",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE", "Xk9pQ2mZ7vB4nL8wR3tY6uI1oP5aS0dF",
    "glpat-abcdefghij0123456789",
])
def test_secret_values(value: str) -> None:
    assert looks_secret_value(value)


@pytest.mark.parametrize("value", [
    "0123456789abcdef" * 4,  # blake3 / sha256
    "e83c5163316f89bfbde7d9ab23ca2e25604af290",  # git sha1
    "e3b0c442-98fc-1c14-9afb-f4c8996fb924",  # uuid
    "MyExperimentRunName2024WithLongSuffix", "ResNet50ImageNetPretrainedWeightsV2Final",
    "distilbert-base-uncased-finetuned-sst-2-english", "/home/user/ExperimentNumber12345/data.csv",
    "data/raw/Train_Images_v2_Subset_2024_abc", "0.001", "short", "a" * 64, 12345, None,
])
def test_values_that_are_not_secret(value: object) -> None:
    assert not looks_secret_value(value)


@pytest.mark.parametrize("argv,expected", [
    (["t.py", "--api-key", "X"], ["t.py", "--api-key", MASK]),
    (["t.py", "--password=x"], ["t.py", f"--password={MASK}"]),
    (["t.py", "TOKEN=x"], ["t.py", f"TOKEN={MASK}"]),
    (["t.py", "+db.password=x"], ["t.py", f"+db.password={MASK}"]),
    (["t.py", "--db", "postgres://bob:hunter2@h/db"], ["t.py", "--db", f"postgres://bob:{MASK}@h/db"]),
    (["t.py", "--url=https://u:p@x.org"], ["t.py", f"--url=https://u:{MASK}@x.org"]),
    (["t.py", "hf_AbCdEfGhIjKlMnOpQrStUvWx"], ["t.py", MASK]),
    (["t.py", "--token", "--lr", "0.1"], ["t.py", "--token", "--lr", "0.1"]),
    (["t.py", "--lr", "0.1", "--max_tokens", "5"], ["t.py", "--lr", "0.1", "--max_tokens", "5"]),
    (["t.py", "--secret", "-abc"], ["t.py", "--secret", MASK]),
])
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


def test_redact_argv_inside_one_liners() -> None:
    out = redact_argv(["bash", "-c", "export HF_TOKEN=abc123; curl -H 'Authorization: Bearer "
                       "tok12345678' --password pw https://u:pw@x/"])
    assert "abc123" not in out[2] and "tok12345678" not in out[2] and ":pw@" not in out[2]
    assert "export HF_TOKEN=***" in out[2]
    assert redact_text("python train.py --lr 0.1") == "python train.py --lr 0.1"


def test_redact_env() -> None:
    env = {"HF_TOKEN": "abc", "PATH": "/usr/bin", "PWD": "/home/u/p", "DATABASE_URL":
           "postgres://u:pw@db/x", "X": "ghp_" + "a" * 36}
    assert redact_env(env) == {"HF_TOKEN": MASK, "PATH": "/usr/bin", "PWD": "/home/u/p",
                               "DATABASE_URL": f"postgres://u:{MASK}@db/x", "X": MASK}


def test_redact_mapping_last_component_decides() -> None:
    params = {"params.yaml:db.password": "x", "params.yaml:password.min_length": 8,
              "env:HF_TOKEN": "t", "--api-key": "k", "lr": 0.1, "flags.auth": True,
              "argv[1]": "sk-abcdefghijklmnopqrstu", "tags": ["a", "AKIAIOSFODNN7EXAMPLE"]}
    out = redact_mapping(params)
    assert out["params.yaml:db.password"] == MASK
    assert out["params.yaml:password.min_length"] == 8
    assert out["env:HF_TOKEN"] == MASK and out["--api-key"] == MASK
    assert out["lr"] == 0.1 and out["flags.auth"] is True
    assert out["argv[1]"] == MASK and out["tags"] == ["a", MASK]


_value = st.text(alphabet=string.ascii_letters + string.digits + "!@#$%^&_+/.= ", min_size=1,
                 max_size=30)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(SECRET_NAMES), value=_value,
       form=st.sampled_from(["space", "equals", "hydra", "bare"]))
def test_secret_named_values_never_leak(name: str, value: str, form: str) -> None:
    argv = {"space": ["--" + name, value], "equals": [f"--{name}={value}"],
            "hydra": [f"cfg.{name}={value}"], "bare": [f"{name}={value}"]}[form]
    if form == "space" and value.startswith("--"):
        return
    out = redact_argv(["python", "train.py", "--lr", "0.1", *argv])
    assert len(out) == 4 + len(argv)
    assert (out[-1] if form == "space" else out[-1].split("=", 1)[1]) == MASK
    assert redact_mapping({f"p.yaml:x.{name}": value})[f"p.yaml:x.{name}"] == MASK
    if name.upper() not in ("PWD", "OLDPWD"):
        assert redact_env({name.upper(): value})[name.upper()] == MASK


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=12))
def test_redact_argv_never_raises(argv: list[str]) -> None:
    out = redact_argv(argv)
    assert len(out) == len(argv)
