"""compare_runs: the verdict of a reproduction from outputs by hash, metrics within a
relative tolerance, endings; what is not compared; the reasons a diff finds."""

from __future__ import annotations

import math

import pytest

from onlooker.agent.reproduce import command_for, environment_for
from onlooker.store.catalog import Catalog
from onlooker.store.objects import hash_bytes
from onlooker.store.reproduce import ReproduceError, compare_runs, rel_diff

T0 = 1_795_000_000.0


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


def make_run(cat: Catalog, *, outputs=(), metrics=(), exit_code=0, at=0.0,
             packages=None) -> int:
    run = cat.begin_run(command=["python", "train.py"], cwd=str(cat.project), exe=None,
                        pid=1, pid_start=1, user="ana", hostname="box", started_at=T0 + at,
                        tier="netlink")
    if packages is not None:
        env_id = cat.put_env({"python": {"version": "3.11.7"}, "packages": packages})
        cat.update_run(run, env_id=env_id)
    code = b"print(1)\n"
    vid = cat.add_version("train.py", hash=hash_bytes(code), size=len(code), mtime_ns=1,
                          kind="code", stored=False, created_at=T0 + at)
    cat.link(run, vid, "code")
    for path, data, kind in outputs:
        vid = cat.add_version(path, hash=hash_bytes(data), size=len(data), mtime_ns=1,
                              kind=kind, stored=False, created_at=T0 + at)
        cat.link(run, vid, "output")
    if metrics:
        cat.set_metrics(run, "metrics.json", [(k, s, v, None, None) for k, s, v in metrics])
    cat.update_run(run, status="completed", ended_at=T0 + at + 1, exit_code=exit_code)
    return run


MODEL = ("model.pkl", b"weights", "model")


def test_same_outputs_and_metrics_reproduce_exactly(cat):
    a = make_run(cat, outputs=[MODEL], metrics=[("loss", 0, 1.0), ("loss", 1, 0.5)])
    b = make_run(cat, outputs=[MODEL], metrics=[("loss", 0, 1.0), ("loss", 1, 0.5)], at=10)
    report = compare_runs(cat, a, b)
    assert report["verdict"] == "exactly"
    assert [o["change"] for o in report["outputs"]] == ["same"]
    assert report["metrics"] == [{"key": "loss", "points": 2, "original": 0.5,
                                  "reproduction": 0.5, "max_rel_diff": 0.0, "change": "same"}]
    assert report["reasons"] == [] and report["ending"]["same"]


def test_metrics_close_enough_are_within_tolerance_and_past_it_differ(cat):
    a = make_run(cat, outputs=[MODEL], metrics=[("acc", None, 0.9)])
    b = make_run(cat, outputs=[MODEL], metrics=[("acc", None, 0.9 * (1 + 1e-8))], at=10)
    report = compare_runs(cat, a, b, rtol=1e-6)
    assert report["verdict"] == "within tolerance"
    (m,) = report["metrics"]
    assert m["change"] == "within tolerance" and 0 < m["max_rel_diff"] < 1e-7
    assert compare_runs(cat, a, b, rtol=0)["verdict"] == "differs"


def test_an_output_with_another_hash_or_missing_differs_and_says_nondeterminism(cat):
    a = make_run(cat, outputs=[MODEL, ("out/pred.csv", b"1,2", "dataset")])
    b = make_run(cat, outputs=[("model.pkl", b"other weights", "model")], at=10)
    report = compare_runs(cat, a, b)
    assert report["verdict"] == "differs"
    changes = {o["path"]: o["change"] for o in report["outputs"]}
    assert changes == {"model.pkl": "differs", "out/pred.csv": "missing"}
    assert any(r.startswith("nondeterminism") for r in report["reasons"])


def test_a_changed_package_is_the_reason_given(cat):
    a = make_run(cat, outputs=[MODEL], packages={"numpy": "1.26.4"})
    b = make_run(cat, outputs=[("model.pkl", b"w2", "model")], packages={"numpy": "2.0.0"},
                 at=10)
    report = compare_runs(cat, a, b)
    assert report["verdict"] == "differs"
    assert any("numpy" in r for r in report["reasons"]), report["reasons"]
    assert not any(r.startswith("nondeterminism") for r in report["reasons"])


def test_another_ending_differs_even_with_the_same_files(cat):
    a = make_run(cat, outputs=[MODEL])
    b = make_run(cat, outputs=[MODEL], exit_code=1, at=10)
    report = compare_runs(cat, a, b)
    assert report["verdict"] == "differs"
    assert report["reasons"][0] == ("the original ended with exit code 0, the reproduction"
                                    " with exit code 1")


def test_an_exit_code_the_capture_did_not_see_is_no_difference(cat):
    a = make_run(cat, outputs=[MODEL], exit_code=None)
    b = make_run(cat, outputs=[MODEL], at=10)
    report = compare_runs(cat, a, b)
    assert report["verdict"] == "exactly"
    assert report["ending"] == {"original": "no exit code seen",
                                "reproduction": "exit code 0", "same": None}


def test_logs_metrics_files_timing_metrics_and_ignored_globs_are_not_compared(cat):
    a = make_run(cat, outputs=[MODEL, ("train.log", b"12:00 start", "log"),
                               ("metrics.json", b'{"t": 1}', "metrics"),
                               ("out/debug.png", b"png1", "other")],
                 metrics=[("train_runtime", None, 12.5), ("acc", None, 0.9)])
    b = make_run(cat, outputs=[MODEL, ("train.log", b"12:05 start", "log"),
                               ("metrics.json", b'{"t": 2}', "metrics"),
                               ("out/debug.png", b"png2", "other")],
                 metrics=[("train_runtime", None, 14.1), ("acc", None, 0.9)], at=10)
    assert compare_runs(cat, a, b)["verdict"] == "differs"  # the png
    report = compare_runs(cat, a, b, ignore=["out/*"])
    assert report["verdict"] == "exactly"
    skipped = {o["path"]: o["why"] for o in report["not_compared"]["outputs"]}
    assert set(skipped) == {"train.log", "metrics.json", "out/debug.png"}
    assert [m["key"] for m in report["not_compared"]["metrics"]] == ["train_runtime"]
    assert [m["key"] for m in report["metrics"]] == ["acc"]


def test_series_of_other_length_differ(cat):
    a = make_run(cat, metrics=[("loss", 0, 1.0), ("loss", 1, 0.5)])
    b = make_run(cat, metrics=[("loss", 0, 1.0)], at=10)
    (m,) = compare_runs(cat, a, b)["metrics"]
    assert m["change"] == "differs" and "2 points" in m["detail"]


def test_bad_tolerance_is_one_sentence(cat):
    a = make_run(cat)
    with pytest.raises(ReproduceError, match="tolerance"):
        compare_runs(cat, a, a, rtol=-1)


def test_rel_diff():
    assert rel_diff(1.0, 1.0) == 0
    assert rel_diff(0.0, 0.0) == 0
    assert rel_diff(2.0, 1.0) == 0.5
    assert rel_diff(float("nan"), float("nan")) == 0
    assert math.isinf(rel_diff(float("nan"), 1.0))


# ---- the command and environment of a reproduction ---------------------------------------

RUN = {"command": ["/p/.venv/bin/python", "src/train.py", "--data", "/p/data/in.csv",
                   "--out=/p/models", "--cache=/elsewhere/x", "/p/.venv/lib/x"],
       "cwd": "/p", "params": {"env:SEED": 7, "env:OMP_NUM_THREADS": "2"}}


def test_paths_into_the_project_move_to_the_scratch_folder_but_not_the_venv(tmp_path):
    argv = command_for(RUN, "/p", tmp_path, {"src/train.py", "data/in.csv"},
                       {".venv", ".git"})
    assert argv == ["/p/.venv/bin/python", "src/train.py", "--data", f"{tmp_path}/data/in.csv",
                    f"--out={tmp_path}/models", "--cache=/elsewhere/x", "/p/.venv/lib/x"]


def test_a_relative_program_that_was_not_restored_runs_from_where_it_is(tmp_path):
    run = {"command": ["./bin/tool", "x"], "cwd": "/p/sub", "params": {}}
    assert command_for(run, "/p", tmp_path, set(), set())[0] == "/p/sub/bin/tool"
    assert command_for(run, "/p", tmp_path, {"sub/bin/tool"}, set())[0] == "./bin/tool"


def test_recorded_env_params_are_set_again_and_unrecorded_listed_ones_unset():
    env = environment_for(RUN, ["SEED", "OMP_NUM_THREADS", "RANK", "CUDA_*"],
                          base={"PATH": "/bin", "SEED": "99", "RANK": "3",
                                "CUDA_VISIBLE_DEVICES": "1", "OTHER": "x"})
    assert env == {"PATH": "/bin", "SEED": "7", "OMP_NUM_THREADS": "2", "OTHER": "x"}
