"""End to end: credentials planted where real projects put them (environment variables,
argv options and URLs, keys of a config file the run reads, lines of its logs and
output) never reach the catalog, agent.log or an export archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .test_pipeline import TIERS, cli, need_root, runs_json, show_json
from .test_robustness import settle

pytestmark = pytest.mark.e2e

# Each looks like the credential it stands for, so a rule by value would catch it too;
# the test holds the rules by name, by URL and by option as well.
TOKENS = {
    "env": "hf_PLANTEDenvTOKENq8Zr3LmN0pQ7sT2vW5xY9aB",
    "option": "PLANTEDoptA9fK2mQ7zR4tY8wE1uI6oP3sD5gH",
    "option_split": "PLANTEDsplitB3nM6vC9xZ2lK5jH8gF1dS4aQ",
    "url": "PLANTEDurlC7bN1mV4cX8zL2kJ5hG9fD3sA6qW",
    "config": "PLANTEDcfgD2vB5nM8cX1zL4kJ7hG0fD3sA6qE",
    "log": "PLANTEDlogE6cV9bN2mX5zL8kJ1hG4fD7sA0qR",
}

TRAIN = '''
import os, sys, time
time.sleep(0.15)  # the poll tier is promised to see processes of 100 ms and more
cfg = open("config.yaml").read()
token = cfg.split("api_key:")[1].split()[0]
os.makedirs("out", exist_ok=True)
with open("out/train.log", "w") as f:
    f.write("step 1 loss 0.5\\n")
    f.write(f"connecting with token={token}\\n")
    f.write(f"Authorization: Bearer {os.environ['HF_TOKEN']}\\n")
    f.write("step 2 loss 0.25\\n")
with open("out/metrics.json", "w") as f:
    f.write('{"loss": 0.25}')
with open("out/model.bin", "wb") as f:
    f.write(b"weights")
print("using", token, os.environ["HF_TOKEN"])  # what a careless script prints
'''


def leaks(data: bytes) -> list[str]:
    return [name for name, tok in TOKENS.items() if tok.encode() in data]


@pytest.mark.parametrize("tier", ["privileged", "unprivileged"])
def test_planted_credentials_reach_no_catalog_log_or_archive(tmp_path, tier):
    need_root(tier)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(TRAIN.lstrip())
    (project / "config.yaml").write_text(
        f"lr: 0.1\napi_key: {TOKENS['config']}\nbatch: 32\n")
    cli(project, "init")
    if TIERS[tier]:
        (project / ".onlooker" / "config.toml").write_text(TIERS[tier])
    cli(project, "start")
    env = {**os.environ, "HF_TOKEN": TOKENS["env"], "WANDB_API_KEY": TOKENS["env"]}
    argv = [sys.executable, "train.py", f"--api-key={TOKENS['option']}",
            "--password", TOKENS["option_split"],
            "--db", f"https://bob:{TOKENS['url']}@db.example.com/x", "--lr", "0.1"]
    try:
        # once bare, once through the launcher (which keeps the output as a log)
        subprocess.run(argv, cwd=project, env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "onlooker.cli.main", "-C", str(project), "run",
                        "--", *argv], cwd=project, env=env, check=True,
                       capture_output=True)
        settle(project)
        runs = runs_json(project)
        assert len(runs) == 2
        shown = [show_json(project, r["id"]) for r in runs]
        for run in shown:
            assert run["params"]["config.yaml:lr"] == 0.1
            assert run["params"]["config.yaml:api_key"] == "***"
            assert "--password" in run["command"] and "***" in run["command"]
        text = json.dumps(shown)
        assert leaks(text.encode()) == [], text
        export = cli(project, "export", "--all", "-o", str(tmp_path / "all.tar"), "--json")
        report = json.loads(export.stdout)
    finally:
        cli(project, "stop")
    store = project / ".onlooker"
    for name in ("catalog.db", "catalog.db-wal", "agent.log", "agent.json"):
        path = store / name
        if path.exists():
            assert leaks(path.read_bytes()) == [], name
    # the archive holds no credential: the files that carry one are left out, and said
    with tarfile.open(tmp_path / "all.tar") as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()
                assert leaks(data) == [], member.name
    withheld = {w["path"] for w in report["withheld"]}
    assert {"config.yaml", "out/train.log"} <= withheld, report
    assert any(p.startswith(".onlooker/logs/") for p in withheld), report
    # where they came from, the verbatim copies stay: restore is byte for byte
    stored = subprocess.run(["grep", "-rl", TOKENS["config"], str(store / "objects")],
                            capture_output=True, text=True)
    assert stored.stdout.strip(), "the config's own copy is kept in the project's store"
    # and imported elsewhere, they are only referenced: a restore says so
    other = tmp_path / "other"
    other.mkdir()
    cli(other, "init")
    cli(other, "import", str(tmp_path / "all.tar"))
    got = Path(other / ".onlooker")
    for path in got.rglob("*"):
        if path.is_file():
            assert leaks(path.read_bytes()) == [], path
