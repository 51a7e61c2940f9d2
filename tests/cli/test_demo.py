"""The demo: its generated project runs clean with plain python; the command's flow."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from onlooker.cli import demo_project
from onlooker.cli.commands import demo as demo_cmd

from .conftest import make_run


def test_generated_project_runs_clean(tmp_path: Path) -> None:
    project = demo_project.generate(tmp_path / "p")
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert set(params) == {"prepare", "featurize", "train"}
    assert {"split", "seed"} <= set(params["prepare"])
    for _, argv in demo_project.STAGES:
        done = subprocess.run([sys.executable, *argv], cwd=project, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    for rel in ("data/prepared/train.csv", "data/prepared/test.csv", "data/features/train.pkl",
                "data/features/test.pkl", "model.pkl", "metrics.json"):
        assert (project / rel).stat().st_size > 0, rel
    metrics = json.loads((project / "metrics.json").read_text())
    assert 0.6 < metrics["accuracy"] <= 1.0  # a real learner, better than chance
    model = pickle.loads((project / "model.pkl").read_bytes())
    assert len(model["models"]) == 50  # --n-est on the command line wins over params.yaml


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = demo_project.generate(tmp_path / "a")
    b = demo_project.generate(tmp_path / "b")
    assert (a / "data/data.csv").read_bytes() == (b / "data/data.csv").read_bytes()


def test_git_commit(tmp_path: Path) -> None:
    project = demo_project.generate(tmp_path / "p")
    if not demo_project.git_commit(project):
        return  # no git on this machine: the demo goes on without it
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True,
                            text=True, check=True)
    assert status.stdout == ""


def test_demo_command_flow(tmp_path: Path, fake_catalog, invoke, monkeypatch) -> None:
    """With the agent stubbed: generate, init, start, run the stages, stop, render."""
    calls: list[str] = []
    monkeypatch.setattr(demo_cmd.lifecycle, "start", lambda p: calls.append("start") or 4242)
    monkeypatch.setattr(demo_cmd.lifecycle, "status",
                        lambda p: {"tiers": {"process": {"name": "netlink"}}})

    def stop(project: Path, **kw) -> bool:
        calls.append("stop")
        assert (project / "model.pkl").exists()  # the stages ran before the stop
        fake_catalog.stored += [make_run(1, command=["python", "src/prepare.py"]),
                                make_run(2, command=[sys.executable, "src/train.py"])]
        return True

    monkeypatch.setattr(demo_cmd, "stop_agent", stop)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = invoke("demo")
    assert result.exit_code == 0, result.stderr
    assert calls == ["start", "stop"]
    for step in range(1, 7):
        assert f"[{step}/6]" in result.stderr
    assert "$ python src/train.py data/features model.pkl --n-est 50" in result.stderr
    assert "test accuracy" in result.stderr
    assert result.stdout.splitlines()[0].split()[:2] == ["ID", "STATUS"]
    assert "\nrun 2\n" in result.stdout
    assert list(tmp_path.iterdir()) == []  # removed without --keep

    result = invoke("demo", "--keep")
    assert result.exit_code == 0, result.stderr
    kept = list(tmp_path.glob("onlooker-demo-*/demo-project"))
    assert len(kept) == 1 and str(kept[0]) in result.stderr
    assert (kept[0] / ".onlooker").is_dir()
