"""`onlooker restore` over a real catalog: roles, --to, --dry-run, --json, PATH@HASH,
exit codes, and every bad input as one sentence without a traceback; `show` naming
twins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onlooker.store.objects import hash_bytes
from tests.store.test_restore import MODEL_V1, MODEL_V2, SMALL, World, b3, pipeline


@pytest.fixture
def world(tmp_path):
    (tmp_path / "proj").mkdir()
    w = World(tmp_path / "proj")
    yield w
    w.cat.close()


def one_sentence(result) -> None:
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith(("onlooker: ", "Usage: ", "Error: ")), result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) in (1, 3), result.stderr  # a usage error adds its usage and hint


def test_restore_outputs_round_trip_and_json(world, invoke):
    _, train = pipeline(world)
    model = world.root / "models/model.pkl"
    model.unlink()
    res = invoke("-C", str(world.root), "restore", str(train), "--outputs", "--json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert set(report) == {"run", "target", "dry_run", "files", "counts", "bytes_written", "ok"}
    assert [(f["path"], f["role"], f["status"]) for f in report["files"]] == [
        ("models/model.pkl", "outputs", "restored")]
    assert b3(model) == report["files"][0]["hash"] == hash_bytes(MODEL_V1)
    table = invoke("-C", str(world.root), "restore", "last", "--inputs", "--code")
    assert table.exit_code == 0, table.stderr
    assert "unchanged  inputs  data/part-0.csv" in table.stdout
    assert "src/train.py" in table.stdout and "models/model.pkl" not in table.stdout
    assert table.stderr.startswith("42 unchanged into ")


def test_paths_are_taken_from_the_working_folder(world, invoke, monkeypatch):
    _, train = pipeline(world)
    (world.root / "data/part-1.csv").unlink()
    monkeypatch.chdir(world.root / "data")
    res = invoke("restore", str(train), "part-1.csv")
    assert res.exit_code == 0, res.stderr
    assert (world.root / "data/part-1.csv").read_bytes() == dict(SMALL)["data/part-1.csv"]


def test_to_dir_and_dry_run(world, invoke, tmp_path):
    _, train = pipeline(world)
    dest = tmp_path / "copy"
    dry = invoke("-C", str(world.root), "restore", str(train), "--to", str(dest), "--dry-run")
    assert dry.exit_code == 0 and "would restore" in dry.stdout and "dry run" in dry.stderr
    assert not dest.exists()
    res = invoke("-C", str(world.root), "restore", str(train), "--all", "--to", str(dest))
    assert res.exit_code == 0, res.stderr
    assert b3(dest / "models/model.pkl") == hash_bytes(MODEL_V1)
    assert "43 restored" in res.stderr


def test_refused_exits_non_zero_with_a_summary_until_forced(world, invoke):
    _, train = pipeline(world)
    (world.root / "models/model.pkl").write_bytes(b"not recorded")
    res = invoke("-C", str(world.root), "restore", str(train), "--outputs")
    assert res.exit_code == 1
    assert "refused" in res.stdout and "never recorded" in res.stdout
    assert res.stderr.splitlines()[-1] == ("onlooker: not everything was restored: 1 refused"
                                           " (--force overwrites what was refused)")
    assert (world.root / "models/model.pkl").read_bytes() == b"not recorded"
    forced = invoke("-C", str(world.root), "restore", str(train), "--outputs", "--force")
    assert forced.exit_code == 0 and b3(world.root / "models/model.pkl") == hash_bytes(MODEL_V1)


def test_skipped_exits_non_zero(world, invoke):
    big = world.run([("output", "big.bin", b"B" * 100)], stored=False)
    (world.root / "big.bin").unlink()
    res = invoke("-C", str(world.root), "restore", str(big), "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout)["files"][0]["status"] == "skipped"
    assert "1 skipped" in res.stderr


def test_path_at_hash(world, invoke):
    pipeline(world)
    world.run([("input", "models/model.pkl", MODEL_V1), ("output", "models/model.pkl", MODEL_V2)])
    v1 = hash_bytes(MODEL_V1)
    res = invoke("-C", str(world.root), "restore", f"models/model.pkl@{v1[7:17]}")
    assert res.exit_code == 0, res.stderr
    assert b3(world.root / "models/model.pkl") == v1
    with_prefix = invoke("-C", str(world.root), "restore", f"models/model.pkl@{v1}", "--json")
    assert json.loads(with_prefix.stdout)["files"][0]["status"] == "unchanged"


@pytest.mark.parametrize("args, code, words", [
    (["999"], 2, "no run 999"),
    (["nonsense"], 2, "is not a run"),
    (["RUN", "nowhere.txt"], 2, "has no file at nowhere.txt"),
    (["models/model.pkl@0000"], 2, "no version whose hash starts with 0000"),
    (["models/never.pkl@ab"], 2, "not in the catalog"),
    (["models/model.pkl@abcd", "x"], 2, "restores one file"),
    (["RUN", "--bogus"], 2, "no such option"),
    (["RUN", "--to", "AFILE"], 2, "is a file"),
])
def test_bad_input_is_one_sentence(world, invoke, tmp_path, args, code, words):
    _, train = pipeline(world)
    (tmp_path / "afile").write_text("x")
    args = [str(train) if a == "RUN" else str(tmp_path / "afile") if a == "AFILE" else a
            for a in args]
    res = invoke("-C", str(world.root), "restore", *args)
    assert res.exit_code == code, (res.stdout, res.stderr)
    assert words in res.stderr
    one_sentence(res)


def test_an_ambiguous_prefix_exits_2(world, invoke):
    seen: dict[str, int] = {}
    i = 0
    while True:
        data = b"v%d" % i
        i += 1
        world.run([("output", "notes.txt", data)])
        digit = hash_bytes(data)[7]
        seen[digit] = seen.get(digit, 0) + 1
        if seen[digit] == 2:
            break
    res = invoke("-C", str(world.root), "restore", f"notes.txt@{digit}")
    assert res.exit_code == 2 and "names 2 versions of notes.txt" in res.stderr
    one_sentence(res)


def test_show_names_twins_and_nondeterministic_outputs(world, invoke):
    files = [("code", "src/train.py", b"print('train')\n"), ("input", "params.yaml", b"lr: 1\n")]
    a = world.run([*files, ("output", "model.pkl", b"M1")])
    b = world.run([*files, ("output", "model.pkl", b"M2")])
    lone = world.run([("code", "src/other.py", b"x")])
    shown = invoke("-C", str(world.root), "show", str(b))
    assert shown.exit_code == 0, shown.stderr
    assert f"twin of run {a}" in shown.stdout
    assert "model.pkl differs from a twin's" in shown.stdout
    data = json.loads(invoke("-C", str(world.root), "show", str(a), "--json").stdout)
    assert data["twins"] == [b] and data["nondeterministic"] == ["model.pkl"]
    alone = json.loads(invoke("-C", str(world.root), "show", str(lone), "--json").stdout)
    assert alone["twins"] == [] and alone["nondeterministic"] == []
    assert "twin of" not in invoke("-C", str(world.root), "show", str(lone)).stdout
    listed = invoke("-C", str(world.root), "runs", "--where", f"twin_of = {a}", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [b]


def test_progress_only_on_a_terminal(world, invoke):
    # CliRunner's stderr is no terminal: the report and summary only, no \r progress
    _, train = pipeline(world)
    res = invoke("-C", str(world.root), "restore", str(train))
    assert "\r" not in res.stderr and res.exit_code == 0
    assert Path(world.root / "models/model.pkl").exists()
