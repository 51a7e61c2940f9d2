"""A concurrent sweep under the unprivileged tiers: each run gets exactly its own files.

N processes of one script start at once (`for i in ...; do python train.py ... & done;
wait`), each with its own argv (`--config configs/I.yaml --lr X --out runs/I`), its own
config and its own output folder, all reading one shared data file. Without fanotify no
file event names its process, so the agent has to tell the runs apart from what the
tier has: argv path references, output folders named in argv, `/proc/<pid>/fd` samples,
time windows and the order of inotify's events.

The truth per run: inputs {its config, the shared data}, outputs {its model and
metrics}, code {train.py}, its argv and config params. Every file entry must carry a
basis; an entry the evidence could not settle must say `ambiguous` and be on each run
that may have done it (which includes the one that did): a neighbour's file on a run
with any other basis, or a true file missing, is wrong.

Run as root with the tiers forced by config (poll + inotify), and as an ordinary user
made with useradd (whatever the agent picks without privileges: netlink where the
kernel allows it, else poll, and inotify). `ONLOOKER_SWEEP_REPORT=FILE` appends each
case's figures there as a JSON line (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .test_ordinary_user import _as, _user_venv, user  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

FORCED = '[capture]\nprocess = "poll"\nfiles = "inotify"\n'

TRAIN = '''
import argparse
import json
import os
import time

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--lr", type=float, required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--data", default="data/train.csv")
args = ap.parse_args()
# the poll tier is promised to see processes of 100 ms and more
time.sleep(float(os.environ.get("SWEEP_SLEEP_BEFORE", "0.15")))
seed = int(open(args.config).read().split(":")[1])
with open(args.data) as f:  # a large file takes a while: SWEEP_READ_SECONDS stands for it
    rows = f.read(4096).splitlines()
    time.sleep(float(os.environ.get("SWEEP_READ_SECONDS", "0")))
    rows += f.read().splitlines()
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "model.bin"), "wb") as f:
    f.write(bytes([seed]) * 64 + repr(args.lr).encode())
with open(os.path.join(args.out, "metrics.json"), "w") as f:
    json.dump({"loss": round(args.lr * len(rows), 6)}, f)
time.sleep(float(os.environ.get("SWEEP_SLEEP_AFTER", "0.05")))
'''

LRS = ("0.1", "0.05", "0.02", "0.01", "0.005", "0.002", "0.001", "0.0005")


def _project(project: Path, n: int) -> None:
    (project / "configs").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "train.py").write_text(TRAIN.lstrip())
    (project / "data" / "train.csv").write_text(
        "x,y\n" + "".join(f"{i},{i * 2}\n" for i in range(2000)))
    for i in range(n):
        (project / "configs" / f"{i}.yaml").write_text(f"seed: {i + 1}\n")


def _sweep_cmds(n: int, data_named: bool) -> list[list[str]]:
    data = ["--data", "data/train.csv"] if data_named else []
    return [["python", "train.py", "--config", f"configs/{i}.yaml", "--lr", LRS[i],
             "--out", f"runs/{i}", *data] for i in range(n)]


def _truth(i: int, data_named: bool) -> dict[str, object]:
    params: dict[str, object] = {"config": f"configs/{i}.yaml", "lr": float(LRS[i]),
                                 "out": f"runs/{i}", f"configs/{i}.yaml:seed": i + 1}
    if data_named:
        params["data"] = "data/train.csv"
    return {
        "inputs": {f"configs/{i}.yaml", "data/train.csv"},
        "outputs": {f"runs/{i}/model.bin", f"runs/{i}/metrics.json"},
        "code": {"train.py"},
        "params": params,
    }


def score(runs: list[dict], n: int, data_named: bool = False) -> dict[str, object]:
    """Figures of one sweep, and what is wrong: every (run, true file) pair and every
    extra entry is judged; `ambiguous` entries are counted apart."""
    by_index: dict[int, dict] = {}
    wrong: list[str] = []
    for r in runs:
        cmd = r["command"]
        if cmd[:2] != ["python", "train.py"] or "--out" not in cmd:
            wrong.append(f"a run that is none of the sweep's: {cmd}")
            continue
        i = int(cmd[cmd.index("--out") + 1].rsplit("/", 1)[1])
        if i in by_index:
            wrong.append(f"run {i} recorded twice")
        by_index[i] = r
    right = ambiguous = total = 0
    guessed: list[str] = []  # the true entries left `ambiguous`, to say which they were
    # who truly touched each file, for judging `ambiguous` entries
    owners: dict[str, set[int]] = {}
    for i in range(n):
        for role in ("inputs", "outputs", "code"):
            for path in _truth(i, data_named)[role]:  # type: ignore[attr-defined]
                owners.setdefault(path, set()).add(i)
    for i in range(n):
        want = _truth(i, data_named)
        run = by_index.get(i)
        if run is None:
            wrong.append(f"run {i} not recorded")
            total += sum(len(want[k]) for k in ("inputs", "outputs", "code"))  # type: ignore
            continue
        for role in ("inputs", "outputs", "code"):
            got = {e["path"]: e for e in run[role]}
            for path in sorted(want[role]):  # type: ignore[call-overload]
                total += 1
                entry = got.pop(path, None)
                if entry is None:
                    wrong.append(f"run {i}: {role} {path} missing")
                elif entry.get("basis") is None:
                    wrong.append(f"run {i}: {role} {path} has no basis")
                elif entry["basis"] == "ambiguous":
                    ambiguous += 1
                    guessed.append(f"run {i}: {role} {path}")
                else:
                    right += 1
            for path, entry in sorted(got.items()):
                if entry.get("basis") != "ambiguous":
                    wrong.append(f"run {i}: {role} {path} is a neighbour's, "
                                 f"basis {entry.get('basis')}")
                elif not owners.get(path):
                    wrong.append(f"run {i}: {role} {path} ambiguous, yet no run touched it")
        for entry in run["meta"]:
            wrong.append(f"run {i}: meta {entry['path']} (the sweep touches no tool file)")
        got_params = {k: v for k, v in run["params"].items() if not k.startswith("env:")}
        if got_params != want["params"]:
            wrong.append(f"run {i}: params {got_params} != {want['params']}")
        if set(run["metrics"]) != {f"runs/{i}/metrics.json:loss"}:
            wrong.append(f"run {i}: metrics {sorted(run['metrics'])}")
    # an ambiguous entry is shared by the candidates: the runs that truly did it among them
    held = {i: {e["path"]: e["basis"] for k in ("inputs", "outputs", "code") for e in r[k]}
            for i, r in by_index.items()}
    for path, who in sorted(owners.items()):
        if any(h.get(path) == "ambiguous" for h in held.values()):
            lacking = sorted(i for i in who if i in held and path not in held[i])
            if lacking:
                wrong.append(f"{path}: ambiguous, yet not on runs {lacking} that did it")
    statuses: dict[str, int] = {}
    for r in by_index.values():
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"runs": n, "attributions": total, "right": right, "ambiguous": ambiguous,
            "wrong": wrong, "statuses": statuses, "guessed": guessed}


def _report(case: str, figures: dict[str, object], tiers: tuple[str, str]) -> None:
    out = os.environ.get("ONLOOKER_SWEEP_REPORT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"case": case, "tiers": tiers, **figures}) + "\n")


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout} s")
        time.sleep(0.05)


def _sweep(project: Path, case: dict, run, start) -> tuple[list[dict], tuple[str, str]]:
    """Start the agent, run the sweep, stop, and return every run as `show` has it.
    `run(*argv)` runs a command in the project as whoever the case is, `start(*argv)`
    starts one (a Popen)."""
    onlooker = ["python", "-m", "onlooker.cli.main"]

    def cli(*args: str) -> str:
        res = run(*onlooker, *args)
        assert res.returncode == 0, (args, res.stderr[-3000:])
        return res.stdout

    cli("start")
    try:
        st = json.loads(cli("status", "--json"))
        tiers = (st["tiers"]["process"]["name"], st["tiers"]["files"]["name"])
        assert tiers[1] == "inotify", st["tiers"]
        # All at once, as `for i in ...; do python train.py ... & done; wait` typed at a
        # prompt starts them (the prompt's shell is no run; a `bash -c` in the project is),
        # or one after the other (`...; done` without the `&`).
        cmds = _sweep_cmds(case["n"], case["data_named"])
        env = case.get("env", {})
        if case["together"]:
            procs = [start(*argv, env=env) for argv in cmds]
        else:
            procs = []
            for argv in cmds:
                procs.append(start(*argv, env=env))
                procs[-1].wait(timeout=180)
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0, err[-3000:]

        def all_ended() -> bool:
            rows = json.loads(cli("runs", "--json", "--all"))
            return bool(rows) and all(r["status"] != "running" for r in rows)
        _wait_for(all_ended, 60, "every run of the sweep ended")
    finally:
        cli("stop")
    rows = json.loads(cli("runs", "--json", "--all"))
    return [json.loads(cli("show", str(r["id"]), "--json")) for r in rows], tiers


CASES = {
    "3 at once": {"n": 3, "together": True, "data_named": False},
    "8 at once": {"n": 8, "together": True, "data_named": False},
    "8 at once, data in argv": {"n": 8, "together": True, "data_named": True},
    "5 back to back": {"n": 5, "together": False, "data_named": False},
    # the shared data read for 0.3 s, as a large file is: fd sampling names each reader
    "8 at once, data read slowly": {"n": 8, "together": True, "data_named": False,
                                    "env": {"SWEEP_READ_SECONDS": "0.3"}, "decided": True},
    # about 0.1 s each, reading at once: the poller sees each start and end late
    "5 back to back, 0.1 s": {"n": 5, "together": False, "data_named": False,
                              "env": {"SWEEP_SLEEP_BEFORE": "0", "SWEEP_SLEEP_AFTER": "0.1"}},
}


def _check(who: str, name: str, runs: list[dict], tiers: tuple[str, str]) -> dict:
    case = CASES[name]
    figures = score(runs, case["n"], case["data_named"])
    _report(f"{who}, {name}", figures, tiers)
    assert figures["wrong"] == [], json.dumps(figures, indent=1)
    # What the evidence decides: a config and the files under an output folder are named
    # in argv; so is the shared data where the argv gives it, and runs one after the
    # other are told apart by their windows. Only the shared data, read by several runs
    # at once and named by none, can stay undecided (each reader has it, `ambiguous`).
    undecidable = case["n"] if case["together"] and not case["data_named"] \
        and not case.get("decided") else 0
    assert figures["right"] >= figures["attributions"] - undecidable, \
        json.dumps(figures, indent=1)
    # Exit statuses: netlink gives each; polling sees each end, and the status only of a
    # process it catches as a zombie (`ended` otherwise, the agent's log says why).
    statuses = figures["statuses"]
    if tiers[0] == "netlink":
        assert statuses == {"completed": case["n"]}, statuses
    else:
        assert set(statuses) <= {"completed", "ended"}, statuses
    return figures


@pytest.mark.parametrize("name", list(CASES))
def test_a_sweep_as_root_with_the_unprivileged_tiers_forced(tmp_path, name):
    project = tmp_path / "proj"
    _project(project, CASES[name]["n"])
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "LANG": "C.UTF-8", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    base_env = {k: v for k, v in env.items() if v}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=project, env=base_env, capture_output=True,
                              text=True, timeout=180)

    def start(*argv: str, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(list(argv), cwd=project, env={**base_env, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    assert run(sys.executable, "-m", "onlooker.cli.main", "init").returncode == 0
    (project / ".onlooker" / "config.toml").write_text(FORCED)
    runs, tiers = _sweep(project, CASES[name], run, start)
    assert tiers == ("poll", "inotify")
    _check("root, tiers forced", name, runs, tiers)


@pytest.mark.parametrize("name", ["8 at once", "8 at once, data read slowly",
                                  "5 back to back, 0.1 s"])
def test_a_sweep_as_an_ordinary_user(user, name):  # noqa: F811 (the fixture)
    base = Path(tempfile.mkdtemp(prefix="onlooker-sweep-"))
    try:
        base.chmod(0o755)
        home, project = base / "home", base / "proj"
        home.mkdir()
        _project(project, CASES[name]["n"])
        for p in (home, *[project, *project.rglob("*")]):
            os.chown(p, user.pw_uid, user.pw_gid)
        drop, base_env = _as(user, home, _user_venv(user, base))

        def run(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(list(argv), cwd=project, env=base_env, preexec_fn=drop,
                                  capture_output=True, text=True, timeout=180)

        def start(*argv: str, env: dict[str, str]) -> subprocess.Popen:
            return subprocess.Popen(list(argv), cwd=project, env={**base_env, **env},
                                    preexec_fn=drop,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)

        assert run("python", "-m", "onlooker.cli.main", "init").returncode == 0
        runs, tiers = _sweep(project, CASES[name], run, start)
        _check("ordinary user", name, runs, tiers)
    finally:
        shutil.rmtree(base, ignore_errors=True)
