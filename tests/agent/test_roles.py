"""Roles: which files a run touched are the experiment's assets and which are tools' meta."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onlooker.agent import config
from onlooker.agent.rules import roles
from onlooker.agent.rules.roles import BUILTIN, RoleRules, explain, role_of

R, W = False, True  # written?

# (path as the run saw it, written, expected role): the file names seen on real projects
CASES = [
    # VCS and DVC
    (".gitignore", R, "meta"), ("data/.gitignore", W, "meta"), (".git/HEAD", R, "meta"),
    (".git/objects/ab/cdef", W, "meta"), (".gitattributes", R, "meta"),
    ("data/raw.csv.dvc", W, "meta"), ("models.dvc", R, "meta"), ("dvc.yaml", R, "meta"),
    ("dvc.lock", W, "meta"), (".dvc/config", R, "meta"), (".dvc/tmp/rwlock", W, "meta"),
    (".dvc/cache/files/md5/ab/cdef0123", W, "meta"), (".dvcignore", R, "meta"),
    (".hg/store/data", R, "meta"), (".onlookerignore", R, "meta"),
    # CI
    (".github/workflows/ci.yml", R, "meta"), (".gitlab-ci.yml", R, "meta"),
    (".circleci/config.yml", R, "meta"), (".pre-commit-config.yaml", R, "meta"),
    # packaging, requirements, environments
    ("pyproject.toml", R, "meta"), ("setup.cfg", R, "meta"), ("requirements.txt", R, "meta"),
    ("requirements-dev.txt", R, "meta"), ("requirements/base.txt", R, "meta"),
    ("environment.yml", R, "meta"), ("poetry.lock", R, "meta"), ("uv.lock", R, "meta"),
    ("Pipfile", R, "meta"), ("Pipfile.lock", R, "meta"), ("src/pkg.egg-info/PKG-INFO", W, "meta"),
    ("tox.ini", R, "meta"), ("Project.toml", R, "meta"), ("Manifest.toml", R, "meta"),
    # README / LICENSE: read by tools; written by a run, a model card is an output
    ("README.md", R, "meta"), ("readme.rst", R, "meta"), ("LICENSE", R, "meta"),
    ("LICENSE.txt", R, "meta"), ("CHANGELOG.md", R, "meta"),
    ("out/checkpoint-500/README.md", W, "asset"), ("README.md", W, "asset"),
    # lock, tmp and system files
    ("data/x.lock", W, "meta"), ("model.pt.tmp", W, "meta"), ("out/.~lock.sheet.ods#", W, "meta"),
    (".~model.pt", W, "meta"), ("notes.txt~", W, "meta"), (".train.py.swp", W, "meta"),
    (".DS_Store", R, "meta"), ("download.part", W, "meta"),
    # caches
    ("src/__pycache__/train.cpython-311.pyc", R, "meta"), ("src/train.pyc", W, "meta"),
    (".cache/huggingface/datasets/x.arrow", R, "meta"), ("sub/.cache/x", W, "meta"),
    (".pytest_cache/v/cache/lastfailed", W, "meta"), (".mypy_cache/3.11/x.json", W, "meta"),
    ("notebooks/.ipynb_checkpoints/eda-checkpoint.ipynb", W, "meta"),
    # MLflow: the file store is bookkeeping, but metrics and logged artifacts are the run's
    ("mlruns/0/meta.yaml", W, "meta"), ("mlruns/0/4f2a/meta.yaml", W, "meta"),
    ("mlruns/0/4f2a/tags/mlflow.user", W, "meta"), ("mlruns/0/4f2a/params/lr", W, "meta"),
    ("mlruns/0/4f2a/params/n_estimators", W, "meta"), ("src/mlruns/0/4f2a/params/lr", W, "meta"),
    ("mlruns/.trash/x", W, "meta"), ("mlruns/models/clf/meta.yaml", W, "meta"),
    ("mlruns/0/4f2a/metrics/loss", W, "meta"), ("mlruns/0/4f2a/metrics/val_acc", W, "meta"),
    ("mlruns/0/4f2a/artifacts/model/model.pkl", W, "asset"),
    ("mlruns/0/4f2a/artifacts/model/MLmodel", W, "asset"),
    ("mlruns/0/4f2a/artifacts/model/requirements.txt", W, "asset"),
    ("mlflow.db", W, "meta"), ("mlflow.db-journal", W, "meta"), ("mlflow.db-wal", W, "meta"),
    ("mlartifacts/1/abc/artifacts/model.pkl", W, "asset"),
    # W&B offline run folders
    ("wandb/offline-run-20240101_120000-abc/run-abc.wandb", W, "meta"),
    ("wandb/offline-run-20240101_120000-abc/files/config.yaml", W, "meta"),
    ("wandb/offline-run-20240101_120000-abc/files/wandb-metadata.json", W, "meta"),
    ("wandb/offline-run-20240101_120000-abc/files/requirements.txt", W, "meta"),
    ("wandb/offline-run-20240101_120000-abc/logs/debug.log", W, "meta"),
    ("wandb/debug.log", W, "meta"),
    ("wandb/offline-run-20240101_120000-abc/files/wandb-summary.json", W, "asset"),
    # DVCLive: its metrics and plots are the run's, its dvc.yaml and copies are not
    ("dvclive/metrics.json", W, "asset"), ("dvclive/plots/metrics/train/loss.tsv", W, "asset"),
    ("dvclive/plots/images/confusion.png", W, "asset"), ("dvclive/dvc.yaml", W, "meta"),
    ("dvclive/params.yaml", W, "meta"), ("dvclive/report.html", W, "meta"),
    ("dvclive/model.pt.dvc", W, "meta"),
    # Hydra: its .hydra/ record is meta (the composed config becomes params, not a file)
    ("outputs/2024-01-01/12-00-00/.hydra/hydra.yaml", W, "meta"),
    ("outputs/2024-01-01/12-00-00/.hydra/config.yaml", W, "meta"),
    ("outputs/2024-01-01/12-00-00/.hydra/overrides.yaml", W, "meta"),
    ("multirun/2024-01-01/12-00-00/multirun.yaml", W, "meta"),
    # Lightning, TensorBoard, Hugging Face: assets
    ("lightning_logs/version_3/hparams.yaml", W, "asset"),
    ("lightning_logs/version_3/metrics.csv", W, "asset"),
    ("lightning_logs/version_3/checkpoints/epoch=1-step=10.ckpt", W, "asset"),
    ("runs/Jan01_12-00-00_host/events.out.tfevents.1704106800.host.1.0", W, "asset"),
    ("out/checkpoint-500/optimizer.pt", W, "asset"),
    ("out/checkpoint-500/rng_state.pth", W, "asset"),
    ("out/checkpoint-500/trainer_state.json", W, "asset"),
    # the experiment itself
    ("data/train.csv", R, "asset"), ("params.yaml", R, "asset"), ("src/train.py", R, "asset"),
    ("model.pkl", W, "asset"), ("metrics.json", W, "asset"), ("Makefile", R, "asset"),
    ("conf/config.yaml", R, "asset"), ("configs/model.toml", R, "asset"),
    ("./train.py", R, "asset"),
    # outside the project: caches there hold what the run reads (a pretrained model)
    ("/home/u/.cache/huggingface/hub/models--bert/snapshots/1/model.safetensors", R, "asset"),
    ("/home/u/.cache/huggingface/hub/.locks/models--bert/abc.lock", W, "meta"),
    ("/srv/shared/vocab.txt", R, "asset"),
]


@pytest.mark.parametrize("rel,written,expected", CASES)
def test_builtin_rules(rel: str, written: bool, expected: str) -> None:
    assert role_of(rel, written=written) == expected
    role, reason = explain(rel, written=written)
    assert role == expected and reason


def test_built_in_rules_ignore_case_and_each_has_a_reason() -> None:
    assert role_of("ReadMe.MD", written=False) == "meta"
    assert role_of("MLRUNS/0/x/meta.yaml", written=True) == "meta"
    for rule in BUILTIN:
        assert rule.glob == rule.glob.lower(), rule
        assert rule.role in ("meta", "asset") and rule.on in ("any", "read", "write")
        assert len(rule.reason) > 5, rule


def test_explain_names_the_deciding_rule() -> None:
    assert "MLflow" in explain("mlruns/0/x/tags/t", written=True)[1]
    assert "metric" in explain("mlruns/0/x/metrics/loss", written=True)[1]
    assert explain("data/train.csv", written=False) == ("asset", "no rule names it")


def test_project_globs_asset_wins_meta_adds() -> None:
    rules = RoleRules(meta=["scratch/**", "mlruns/**"], asset=["dvclive/report.html",
                                                              "requirements.txt"])
    assert role_of("scratch/a.csv", written=True, rules=rules) == "meta"
    assert role_of("mlruns/0/x/metrics/loss", written=True, rules=rules) == "meta"  # user's
    assert role_of("dvclive/report.html", written=True, rules=rules) == "asset"
    assert role_of("requirements.txt", written=False, rules=rules) == "asset"
    assert role_of("dvc.yaml", written=False, rules=rules) == "meta"  # built-ins still hold
    both = RoleRules(meta=["data/**"], asset=["data/keep.csv"])
    assert role_of("data/keep.csv", written=False, rules=both) == "asset"
    assert role_of("data/other.csv", written=False, rules=both) == "meta"
    assert explain("scratch/a.csv", written=True, rules=rules)[1].startswith("the project's")
    # the project's globs are case-sensitive, as .gitignore is on Linux
    assert role_of("Scratch/a.csv", written=True, rules=rules) == "asset"


def test_rules_from_config(tmp_path: Path) -> None:
    (tmp_path / ".onlooker").mkdir()
    (tmp_path / ".onlooker" / "config.toml").write_text(
        '[roles]\nmeta = ["tmp_out/**"]\nasset = [".hydra/hydra.yaml", "**/.hydra/hydra.yaml"]\n')
    cfg = config.load(tmp_path)
    assert cfg["roles"] == {"meta": ["tmp_out/**"],
                            "asset": [".hydra/hydra.yaml", "**/.hydra/hydra.yaml"]}
    rules = cfg.role_rules
    assert rules is cfg.role_rules  # compiled once per Config
    assert role_of("tmp_out/x.bin", written=True, rules=rules) == "meta"
    assert role_of("outputs/a/.hydra/hydra.yaml", written=True, rules=rules) == "asset"
    assert RoleRules.from_config(cfg).meta_globs == ("tmp_out/**",)
    (tmp_path / "other").mkdir()
    default = config.load(tmp_path / "other")
    assert default["roles"] == {"meta": [], "asset": []}


@pytest.mark.parametrize("text,words", [
    ("[roles]\nmeta = \"x/**\"\n", "'roles.meta' in config.toml must be a list"),
    ("[roles]\nasset = [1, 2]\n", "'roles.asset' in config.toml must be a list of globs"),
    ("[roles]\nmeta = [\"\"]\n", "'roles.meta' in config.toml must be a list of globs"),
    ("[roles]\nmeta = [\"!keep\"]\n", "takes no '!' globs"),
    ("[roles]\nbogus = []\n", "unknown setting 'roles.bogus'"),
    ("roles = 3\n", "'roles' in config.toml must be a table"),
])
def test_bad_roles_config_is_one_sentence(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / ".onlooker").mkdir()
    (tmp_path / ".onlooker" / "config.toml").write_text(text)
    with pytest.raises(config.ConfigError, match=words) as err:
        config.load(tmp_path)
    assert "\n" not in str(err.value)


def test_template_config_mentions_roles_and_loads(tmp_path: Path) -> None:
    (tmp_path / ".onlooker").mkdir()
    (tmp_path / ".onlooker" / "config.toml").write_text(config.TEMPLATE)
    assert "[roles]" in config.TEMPLATE
    assert config.load(tmp_path)["roles"] == {"meta": [], "asset": []}


def test_odd_paths_do_not_raise() -> None:
    for rel in ("", "/", ".", "..", "a//b", "./", "\\\\x\\y", "caf\udce9.csv", "x" * 5000):
        assert role_of(rel, written=False) in ("meta", "asset")


def test_fast_enough_to_run_per_file() -> None:
    rules = RoleRules(meta=["scratch/**"], asset=["keep/**"])
    paths = [f"data/shard_{i:05d}/part-{i}.parquet" for i in range(2000)]
    paths += [f"mlruns/0/run{i}/params/p{i}" for i in range(2000)]
    start = time.perf_counter()
    for p in paths:  # first sight: compiled rules, no cache
        rules.role(p, True)
    first = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    for _ in range(5):
        for p in paths:
            rules.role(p, True)
    again = (time.perf_counter() - start) / (5 * len(paths))
    assert first < 200e-6, first  # about 10 us here
    assert again < 20e-6, again
    assert roles.DEFAULT is roles.DEFAULT  # one compiled default table


@pytest.mark.parametrize("rel,expected", [
    ("README", "meta"), ("docs/README.rst", "meta"), ("LICENSE-MIT", "meta"),
    ("COPYING.txt", "meta"), ("AUTHORS.md", "meta"),
    ("data/authors.csv", "asset"), ("data/licenses.json", "asset"), ("notice_board.parquet",
                                                                     "asset"),
])
def test_documents_by_their_text_names_only(rel: str, expected: str) -> None:
    assert role_of(rel, written=False) == expected
