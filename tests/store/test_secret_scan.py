"""secret_in: the texts that hold a credential (config keys, URLs, bearer tokens, known
formats, options) and the ones that do not (tokenizer settings, hashes, binaries)."""

from __future__ import annotations

import pytest

from onlooker.store.secret_scan import secret_in

TOKEN = "PLANTEDcfgD2vB5nM8cX1zL4kJ7hG0fD3sA6qE"


@pytest.mark.parametrize("text", [
    f"lr: 0.1\napi_key: {TOKEN}\n",
    '{"lr": 0.1, "password": "hunter2"}',
    '{\n  "lr": 0.1,\n  "password": "hunter2"\n}\n',
    f"WANDB_API_KEY={TOKEN}\n",
    "db: postgres://bob:hunter2@db.example.com/x\n",
    "Authorization: Bearer abcdefgh12345678\n",
    "train.py --password hunter2 --lr 0.1\n",
    "python train.py --api-key=hunter2xyz --lr 0.1\n",
    "loaded hf_abcdefghijklmnopqrstuvwxyz0123 from the hub\n",
    "aws:\n  secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
])
def test_texts_with_a_credential_are_found(text):
    assert secret_in(text.encode()) is not None


@pytest.mark.parametrize("text", [
    "lr: 0.1\nbatch: 32\nmodel: resnet50\n",
    "max_tokens: 512\npad_token: '[PAD]'\neos_token: </s>\ntokenizer: bert-base-uncased\n",
    "api_key: ${WANDB_API_KEY}\npassword: null\ntoken: ''\n",
    "commit: 3f9a2c7d1e8b4a6f0c5d2e9b7a1f3c8d6e4b2a90\nblake3:" + "ab" * 32 + "\n",
    "step 1 loss 0.5\nstep 2 loss 0.25\n",
    "key: value\nkeys: [a, b]\n",
])
def test_texts_without_one_are_not(text):
    assert secret_in(text.encode()) is None


@pytest.mark.parametrize("data", [
    bytes(range(48, 58)) * 500,  # one long word
    b"ab" * 50_000,
    ("f" * 4000 + ": x\n").encode() * 10,
])
def test_long_runs_cost_linear_time(data):
    import time

    start = time.process_time()
    for _ in range(20):
        secret_in(data)
    # quadratic patterns took seconds here; linear ones take milliseconds
    assert time.process_time() - start < 1.0


def test_binary_data_is_not_looked_into():
    assert secret_in(b"\x80\x04\x95\0\0password: hunter2") is None


def test_the_reason_names_the_key():
    assert secret_in(b"api_key: abc123xyz\n") == "a credential under api_key"
