"""Lineage walks, the inferred pipeline and what is out of date, over real catalogs.

`Project` writes real files and records runs the way the agent does (versions, io
links with roles, params from the config files a run read), so the same catalogs serve
the CLI tests (tests/cli/test_lineage_cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from onlooker.store.catalog import Catalog
from onlooker.store.errors import NoSuchRun
from onlooker.store.hashing import hash_file
from onlooker.store.lineage import NotInCatalog, producers
from onlooker.store.objects import hash_bytes
from onlooker.store.outdated import read_config
from onlooker.store.pipeline import dvc_yaml, stage_params

T0 = 1_795_000_000.0
KINDS = {".py": "code", ".yaml": "config", ".csv": "dataset", ".pkl": "model",
         ".json": "metrics"}
PARAMS = {"prepare": {"split": 0.25, "seed": 7}, "featurize": {"max_features": 8},
          "train": {"seed": 7, "n_est": 5}}


class Project:
    """A project folder with a catalog, filled as the agent would fill it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cat = Catalog.init(root)
        self.t = T0

    def close(self) -> None:
        self.cat.close()

    def put(self, path: str, text: str, *, seen: bool = True) -> str:
        """A person writes a file; `seen`: the agent records the new version."""
        full = self.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)
        if seen:
            self._version(path)
        return hash_bytes(text.encode())

    def _version(self, path: str, run_id: int | None = None) -> int:
        full = self.root / path
        data = full.read_bytes()
        st = full.stat()
        self.t += 1
        return self.cat.add_version(str(full), hash=hash_bytes(data), size=len(data),
                                    mtime_ns=st.st_mtime_ns,
                                    kind=KINDS.get(full.suffix, "other"), stored=False,
                                    created_at=self.t, run_id=run_id)

    def run(self, argv: list[str], *, reads: tuple[str, ...] = (), code: tuple[str, ...] = (),
            writes: dict[str, str] | None = None, meta_reads: tuple[str, ...] = (),
            meta_writes: dict[str, str] | None = None, status: str = "completed") -> int:
        self.t += 10
        run = self.cat.begin_run(command=argv, cwd=str(self.root), exe="/usr/bin/python3",
                                 pid=1000 + int(self.t) % 1000, pid_start=1, user="me",
                                 hostname="box", started_at=self.t, tier="netlink+fanotify")
        params: dict[str, tuple[object, str]] = {}
        for path in reads:
            self.cat.link(run, self._version(path), "input", basis="fanotify")
            if path.endswith(".yaml"):
                found = read_config(path, (self.root / path).read_bytes())
                params.update({k: (v, path) for k, v in found.items()})
        for path in code:
            self.cat.link(run, self._version(path), "code", basis="fanotify")
        for path in meta_reads:
            self.cat.link(run, self._version(path), "meta", access="read")
        for path, text in (meta_writes or {}).items():
            self.put(path, text, seen=False)
            self.cat.link(run, self._version(path), "meta", access="write")
        for path, text in (writes or {}).items():
            self.put(path, text, seen=False)
            self.cat.link(run, self._version(path, run), "output", producer_set=True,
                          basis="fanotify")
        if params:
            self.cat.set_params(run, params)
        self.cat.update_run(run, status=status, exit_code=0 if status == "completed" else 1,
                            ended_at=self.t + 5)
        return run

    def params(self, **change: object) -> None:
        """Rewrite params.yaml with `stage_key=value` changes (no run: a person)."""
        data = yaml.safe_load((self.root / "params.yaml").read_text())
        for key, value in change.items():
            stage, _, name = key.partition("_")
            data[stage][name] = value
        self.put("params.yaml", yaml.safe_dump(data), seen=False)

    def load(self, path: str) -> dict:
        return yaml.safe_load((self.root / path).read_text())


def pipeline_pass(p: Project, *, n_est: int = 50) -> dict[str, int]:
    """prepare -> featurize -> train -> evaluate, with outputs that follow the inputs
    (as real stages' would) and a tool's files (git, dvc.lock) around train."""
    prm = p.load("params.yaml")
    data = (p.root / "data/data.csv").read_text()
    common = ("src/common.py",)
    runs = {}
    runs["prepare"] = p.run(
        ["/usr/bin/python3.11", "src/prepare.py", "data/data.csv"],
        reads=("data/data.csv", "params.yaml"), code=("src/prepare.py", *common),
        writes={"data/prepared/train.csv": f"train {data} {prm['prepare']}",
                "data/prepared/test.csv": f"test {data} {prm['prepare']}"})
    prep = (p.root / "data/prepared/train.csv").read_text()
    runs["featurize"] = p.run(
        ["python", "src/featurize.py", "data/prepared", "data/features"],
        reads=("data/prepared/train.csv", "data/prepared/test.csv", "params.yaml"),
        code=("src/featurize.py", *common),
        writes={"data/features/train.pkl": f"f {prep} {prm['featurize']}",
                "data/features/test.pkl": f"ft {prep} {prm['featurize']}"})
    feats = (p.root / "data/features/train.pkl").read_text()
    runs["train"] = p.run(
        ["python3", "src/train.py", "data/features", "model.pkl", "--n-est", str(n_est)],
        reads=("data/features/train.pkl", "params.yaml"), code=("src/train.py", *common),
        meta_reads=(".git/HEAD",), meta_writes={"dvc.lock": f"lock {p.t}"},
        writes={"model.pkl": f"m {feats} {prm['train']} {n_est}"})
    model = (p.root / "model.pkl").read_text()
    runs["evaluate"] = p.run(
        ["python", "src/evaluate.py", "model.pkl", "data/features"],
        reads=("model.pkl", "data/features/test.pkl"), code=("src/evaluate.py",),
        writes={"eval/metrics.json": f'{{"acc": {len(model) % 97}}}'})
    return runs


def four_stage_project(root: Path) -> Project:
    """The four stages run twice, featurize's param changed in between; `first` and
    `second` map each stage to its run in that pass."""
    p = Project(root)
    p.put("params.yaml", yaml.safe_dump(PARAMS))
    p.put("data/data.csv", "a,b\n1,2\n3,4\n")
    for name in ("common", "prepare", "featurize", "train", "evaluate"):
        p.put(f"src/{name}.py", f"# {name}\n")
    p.put(".git/HEAD", "ref: refs/heads/main\n")
    p.first = pipeline_pass(p, n_est=50)
    p.params(featurize_max_features=3)
    p.second = pipeline_pass(p, n_est=100)
    return p


@pytest.fixture
def proj(tmp_path):
    p = four_stage_project(tmp_path)
    yield p
    p.close()


def nodes_of(graph: dict, kind: str) -> list[dict]:
    return [n for n in graph["nodes"] if n["type"] == kind]


def run_ids(graph: dict) -> set[int]:
    return {n["run"] for n in nodes_of(graph, "run")}


def version_paths(graph: dict) -> set[str]:
    return {n["path"] for n in nodes_of(graph, "version")}


# -- producers ------------------------------------------------------------------------------


def test_producers_of_a_version(proj):
    model = proj.cat.latest_version("model.pkl")["hash"]
    assert producers(proj.cat, model) == [proj.second["train"]]
    assert proj.cat.producers(model, "model.pkl") == [proj.second["train"]]
    assert producers(proj.cat, model, "eval/metrics.json") == []
    # prepare wrote the same content in both passes (its params did not change)
    prepared = proj.cat.latest_version("data/prepared/train.csv")["hash"]
    assert producers(proj.cat, prepared) == [proj.first["prepare"], proj.second["prepare"]]
    # a person's file, and a tool's file a run wrote, have no producer
    assert producers(proj.cat, proj.cat.latest_version("data/data.csv")["hash"]) == []
    assert producers(proj.cat, proj.cat.latest_version("dvc.lock")["hash"]) == []


# -- lineage --------------------------------------------------------------------------------


def test_lineage_up_traces_the_model_back_to_the_raw_data(proj):
    graph = proj.cat.lineage("model.pkl")
    first, second = proj.first, proj.second
    assert graph["direction"] == "up" and graph["depth"] is None
    model = proj.cat.latest_version("model.pkl")["hash"]
    assert graph["targets"] == [f"model.pkl@{model}"]
    # pass 2's chain; its prepared data is also what pass 1's prepare wrote
    assert run_ids(graph) == {second["train"], second["featurize"], second["prepare"],
                              first["prepare"]}
    assert version_paths(graph) == {"model.pkl", "data/features/train.pkl",
                                    "data/prepared/train.csv", "data/prepared/test.csv",
                                    "params.yaml", "data/data.csv"}
    # code and tools' files are never nodes; code is an attribute of the run
    train = next(n for n in graph["nodes"] if n.get("run") == second["train"])
    assert {c["path"] for c in train["code"]} == {"src/train.py", "src/common.py"}
    assert train["stage"] == "train"
    by_id = {n["id"]: n for n in graph["nodes"]}
    for edge in graph["edges"]:
        a, b = by_id[edge["from"]], by_id[edge["to"]]
        assert (a["type"], b["type"], edge["role"]) in (("version", "run", "input"),
                                                        ("run", "version", "output"))
    assert {"from": f"run:{second['train']}", "to": f"model.pkl@{model}",
            "role": "output"} in graph["edges"]
    data = next(n for n in nodes_of(graph, "version") if n["path"] == "data/data.csv")
    assert data["current"] is True
    assert {e["to"] for e in graph["edges"] if e["from"] == data["id"]} == {
        f"run:{first['prepare']}", f"run:{second['prepare']}"}
    # params.yaml: both passes' versions (each prepare read its own)
    assert len([n for n in nodes_of(graph, "version") if n["path"] == "params.yaml"]) == 2


def test_lineage_depth_counts_runs(proj):
    second = proj.second
    only = proj.cat.lineage("model.pkl", depth=0)
    assert run_ids(only) == set() and version_paths(only) == {"model.pkl"}
    one = proj.cat.lineage("model.pkl", depth=1)
    assert run_ids(one) == {second["train"]}
    assert version_paths(one) == {"model.pkl", "data/features/train.pkl", "params.yaml"}
    two = proj.cat.lineage("model.pkl", depth=2)
    assert run_ids(two) == {second["train"], second["featurize"]}
    # a run's own inputs are at its depth
    run = proj.cat.lineage(str(second["train"]), depth=0)
    assert run["targets"] == [f"run:{second['train']}"]
    assert version_paths(run) == {"data/features/train.pkl", "params.yaml"}
    with pytest.raises(ValueError):
        proj.cat.lineage("model.pkl", depth=-1)


def test_lineage_down_finds_what_came_from_a_version(proj):
    first, second = proj.first, proj.second
    old_feats = proj.cat.versions("data/features/train.pkl")[0]["hash"]
    graph = proj.cat.lineage(f"data/features/train.pkl@{old_feats[7:19]}", up=False)
    assert graph["direction"] == "down"
    # pass 1's features fed pass 1's train and evaluate only
    assert run_ids(graph) == {first["train"], first["evaluate"]}
    assert version_paths(graph) == {"data/features/train.pkl", "model.pkl",
                                    "eval/metrics.json"}
    models = [n for n in nodes_of(graph, "version") if n["path"] == "model.pkl"]
    assert [m["current"] for m in models] == [False]
    # the raw data fed every run of both passes
    down = proj.cat.lineage("data/data.csv", up=False)
    assert run_ids(down) == set(first.values()) | set(second.values())
    # from a run: what it wrote and what was made from that
    run = proj.cat.lineage(str(first["featurize"]), up=False)
    assert run_ids(run) == {first["featurize"], first["train"], first["evaluate"]}
    assert "dvc.lock" not in version_paths(run)  # train wrote it as a tool's file
    shallow = proj.cat.lineage(str(first["featurize"]), up=False, depth=0)
    assert run_ids(shallow) == {first["featurize"]}
    assert version_paths(shallow) == {"data/features/train.pkl", "data/features/test.pkl"}


def test_lineage_targets(proj):
    cat = proj.cat
    folder = cat.lineage("data/features", depth=0)
    assert version_paths(folder) == {"data/features/train.pkl", "data/features/test.pkl"}
    assert len(folder["targets"]) == 2
    # a path relative to a folder the person stands in
    sub = cat.lineage("train.pkl", cwd=str(proj.root / "data" / "features"), depth=0)
    assert version_paths(sub) == {"data/features/train.pkl"}
    assert cat.lineage("last", up=True, depth=0)["targets"] == [
        f"run:{proj.second['evaluate']}"]
    with pytest.raises(NotInCatalog, match="nowhere.csv is not in the catalog"):
        cat.lineage("nowhere.csv")
    with pytest.raises(NotInCatalog, match="has no version whose hash starts with 0000"):
        cat.lineage("model.pkl@0000")
    with pytest.raises(NotInCatalog, match="not in the catalog"):
        cat.lineage("nowhere.csv@abcd")
    with pytest.raises(NoSuchRun):
        cat.lineage("999")


def test_lineage_hash_prefix_must_name_one_version(tmp_path):
    with Catalog.init(tmp_path) as cat:
        for n, h in enumerate(("ab12" + "0" * 60, "ab34" + "0" * 60)):
            cat.add_version("x.bin", hash="blake3:" + h, size=1, mtime_ns=n, kind="other",
                            stored=False, created_at=T0 + n)
        with pytest.raises(NotInCatalog, match="names 2 versions of x.bin"):
            cat.lineage("x.bin@ab")
        graph = cat.lineage("x.bin@blake3:ab3")
        assert [n["hash"][7:11] for n in graph["nodes"]] == ["ab34"]
        assert graph["nodes"][0]["current"] is True
        assert cat.lineage("x.bin@AB1")["nodes"][0]["current"] is False


def test_lineage_of_a_cycle_ends(tmp_path):
    """A run that reads a file another run wrote from its output (a loop of two
    scripts) must not make the walk loop."""
    p = Project(tmp_path)
    p.put("a.txt", "a0")
    p.run(["python", "one.py"], reads=("a.txt",), writes={"b.txt": "b1"})
    p.run(["python", "two.py"], reads=("b.txt",), writes={"a.txt": "a0"})  # same content
    graph = p.cat.lineage("b.txt")
    assert len(run_ids(graph)) == 2 and version_paths(graph) == {"a.txt", "b.txt"}
    assert len(p.cat.lineage("a.txt", up=False)["nodes"]) == 4
    p.close()


# -- pipeline -------------------------------------------------------------------------------


def test_pipeline_infers_the_four_stages(proj):
    pipe = proj.cat.pipeline()
    stages = {s["name"]: s for s in pipe["stages"]}
    assert [s["name"] for s in pipe["stages"]] == ["prepare", "featurize", "train", "evaluate"]
    prepare, featurize, train, evaluate = (stages[n] for n in
                                           ("prepare", "featurize", "train", "evaluate"))
    # runs grouped by program + script: /usr/bin/python3.11 and python3 are python
    assert prepare["runs"] == [proj.first["prepare"], proj.second["prepare"]]
    assert train["latest_run"] == proj.second["train"]
    assert prepare["key"] == "python src/prepare.py"
    assert prepare["cmd"] == "python3.11 src/prepare.py data/data.csv"
    assert prepare["deps"] == ["data/data.csv", "src/common.py", "src/prepare.py"]
    assert prepare["outs"] == ["data/prepared/test.csv", "data/prepared/train.csv"]
    assert prepare["params"] == {"params.yaml": ["prepare.seed", "prepare.split"]}
    assert featurize["params"] == {"params.yaml": ["featurize.max_features"]}
    assert featurize["code"] == ["src/common.py", "src/featurize.py"]
    assert train["params"] == {"params.yaml": ["train.n_est", "train.seed"]}
    assert train["outs"] == ["model.pkl"] and "dvc.lock" not in train["deps"] + train["outs"]
    assert evaluate["params"] == {}
    assert evaluate["deps"] == ["data/features/test.pkl", "model.pkl", "src/evaluate.py"]
    # the argument that varied is generalised; the concrete command is the latest
    assert train["pattern"] == "python3 src/train.py data/features model.pkl --n-est {n-est}"
    assert train["varying"] == {"n-est": ["50", "100"]}
    assert train["cmd"] == "python3 src/train.py data/features model.pkl --n-est 100"
    assert prepare["varying"] == {}
    edges = {(e["from"], e["to"]): e["paths"] for e in pipe["edges"]}
    assert edges == {
        ("prepare", "featurize"): ["data/prepared/test.csv", "data/prepared/train.csv"],
        ("featurize", "train"): ["data/features/train.pkl"],
        ("featurize", "evaluate"): ["data/features/test.pkl"],
        ("train", "evaluate"): ["model.pkl"],
    }
    assert pipe["warnings"] == []


def test_pipeline_leaves_out_commands_without_data_and_names_apart(tmp_path):
    p = Project(tmp_path)
    p.put("in.csv", "x")
    p.run(["python", "-c", "print(1)"])
    p.run(["python", "-u", "a/train.py", "in.csv"], reads=("in.csv",), writes={"a.out": "1"})
    p.run(["python", "b/train.py"], reads=("a.out",), writes={"b.out": "2"})
    p.run(["python", "-m", "pkg.report", "--lr=0.1"], reads=("b.out",), writes={"r.md": "3"})
    p.run(["python", "-m", "pkg.report", "--lr=0.2"], reads=("b.out",), writes={"r.md": "4"})
    p.run(["make", "all"], reads=("r.md",), writes={"final": "5"})
    pipe = p.cat.pipeline()
    assert [s["name"] for s in pipe["stages"]] == ["train", "train-2", "report", "make-all"]
    report = pipe["stages"][2]
    assert report["key"] == "python -m pkg.report"
    assert report["pattern"] == "python -m pkg.report --lr={lr}"
    assert report["varying"] == {"lr": ["0.1", "0.2"]}
    assert [(e["from"], e["to"]) for e in pipe["edges"]] == [
        ("train", "train-2"), ("train-2", "report"), ("report", "make-all")]
    p.close()


def test_stage_params_convention():
    keys = ["p.yaml:prepare.seed", "p.yaml:train.seed", "p.yaml:seed", "c.json:lr"]
    names = {"prepare", "train", "evaluate"}
    assert stage_params(keys, "train", names) == ["c.json:lr", "p.yaml:seed",
                                                  "p.yaml:train.seed"]
    assert stage_params(keys, "evaluate", names) == ["c.json:lr", "p.yaml:seed"]
    # a file without a section named after any stage is every reader's
    assert stage_params(["c.yaml:model.depth", "c.yaml:lr"], "train", names) == [
        "c.yaml:lr", "c.yaml:model.depth"]


def test_dvc_yaml_of_the_pipeline(proj):
    pipe = proj.cat.pipeline()
    text = dvc_yaml(pipe)
    assert text.startswith("# Inferred by `onlooker pipeline --dvc-yaml`")
    data = yaml.safe_load(text)
    assert list(data["stages"]) == ["prepare", "featurize", "train", "evaluate"]
    featurize = data["stages"]["featurize"]
    assert featurize == {
        "cmd": "python src/featurize.py data/prepared data/features",
        "deps": ["data/prepared/test.csv", "data/prepared/train.csv", "src/common.py",
                 "src/featurize.py"],
        "params": ["featurize.max_features"],
        "outs": ["data/features/test.pkl", "data/features/train.pkl"],
    }
    assert "params" not in data["stages"]["evaluate"]


def test_dvc_yaml_params_of_other_files_and_shared_outs():
    pipe = {"stages": [
        {"name": "a", "cmd": "python a.py", "wdir": ".", "deps": ["a.py"], "outs": ["x"],
         "params": {"conf/train.yaml": ["lr"], "setup.cfg": ["tool.x"]}},
        {"name": "b", "cmd": "python b.py", "wdir": "sub", "deps": ["x", "sub/b.py"],
         "outs": ["x", "sub/y", "/tmp/outside"], "params": {"sub/params.yaml": ["k"]}},
    ], "edges": [], "warnings": []}
    text = dvc_yaml(pipe)
    data = yaml.safe_load(text)
    assert data["stages"]["a"] == {"cmd": "python a.py", "deps": ["a.py", "setup.cfg"],
                                   "params": [{"conf/train.yaml": ["lr"]}], "outs": ["x"]}
    assert data["stages"]["b"] == {"cmd": "python b.py", "wdir": "sub",
                                   "deps": ["../x", "b.py"], "params": ["k"], "outs": ["y"]}
    assert "# note: b: x is an out of an earlier stage too" in text
    assert "# note: b: /tmp/outside is outside the project" in text


# -- outdated -------------------------------------------------------------------------------


def stale_stages(report: dict) -> list[str]:
    return [r["stage"] for r in report["runs"]]


def test_nothing_is_outdated_right_after_the_runs(proj):
    for current in ("disk", "catalog"):
        report = proj.cat.outdated(current)
        assert report["current"] == current
        assert report["runs"] == [] and report["outputs"] == []
        assert report["checked"]["runs"] == 4  # pass 2's; pass 1 wrote nothing left


def test_outdated_after_a_param_change(proj):
    proj.params(featurize_max_features=5)
    # the agent did not see it: the catalog still has the old params.yaml
    assert proj.cat.outdated("catalog")["runs"] == []
    report = proj.cat.outdated("disk")
    assert stale_stages(report) == ["featurize", "train", "evaluate"]
    featurize, train, _ = report["runs"]
    assert featurize["run"] == proj.second["featurize"]
    assert featurize["reasons"] == [{"kind": "param", "key": "params.yaml:featurize.max_features",
                                     "path": "params.yaml", "was": 3, "now": 5}]
    assert train["reasons"] == [{"kind": "upstream", "run": proj.second["featurize"],
                                 "stage": "featurize", "paths": ["data/features/train.pkl"]}]
    assert train["cmd"] == "python3 src/train.py data/features model.pkl --n-est 100"
    assert {o["path"]: o["state"] for o in report["outputs"]} == {
        "data/features/train.pkl": "stale", "data/features/test.pkl": "stale",
        "model.pkl": "stale", "eval/metrics.json": "stale"}
    # once the agent saw the new version, the catalog says the same
    proj._version("params.yaml")
    assert stale_stages(proj.cat.outdated("catalog")) == ["featurize", "train", "evaluate"]


def test_a_change_in_another_stages_section_or_a_new_key(proj):
    proj.params(train_seed=8)
    assert stale_stages(proj.cat.outdated()) == ["train", "evaluate"]
    proj.params(train_seed=7)
    assert proj.cat.outdated()["runs"] == []
    data = proj.load("params.yaml")
    data["prepare"]["shuffle"] = True
    proj.put("params.yaml", yaml.safe_dump(data), seen=False)
    report = proj.cat.outdated()
    assert stale_stages(report) == ["prepare", "featurize", "train", "evaluate"]
    assert report["runs"][0]["reasons"] == [{"kind": "param", "path": "params.yaml",
                                             "key": "params.yaml:prepare.shuffle",
                                             "was": None, "now": True}]


def test_outdated_after_an_input_or_code_change(proj):
    old = proj.cat.latest_version("data/data.csv")["hash"]
    new = proj.put("data/data.csv", "a,b\n5,6\n", seen=False)
    report = proj.cat.outdated()
    assert report["current"] == "disk"
    assert stale_stages(report) == ["prepare", "featurize", "train", "evaluate"]
    assert report["runs"][0]["reasons"] == [{"kind": "input", "path": "data/data.csv",
                                             "was": old, "now": new}]
    proj.put("data/data.csv", "a,b\n1,2\n3,4\n", seen=False)  # back as it was
    assert proj.cat.outdated()["runs"] == []
    proj.put("src/train.py", "# train, better\n", seen=False)
    report = proj.cat.outdated()
    assert stale_stages(report) == ["train", "evaluate"]
    assert [r["kind"] for r in report["runs"][0]["reasons"]] == ["code"]
    proj.put("src/common.py", "# common, changed\n", seen=False)
    assert stale_stages(proj.cat.outdated()) == ["prepare", "featurize", "train", "evaluate"]


def test_outdated_output_edited_by_hand_or_removed(proj):
    proj.put("model.pkl", "edited by hand", seen=False)
    report = proj.cat.outdated()
    assert stale_stages(report) == ["train", "evaluate"]
    assert [r["kind"] for r in report["runs"][0]["reasons"]] == ["output"]
    states = {o["path"]: o["state"] for o in report["outputs"]}
    assert states == {"model.pkl": "modified", "eval/metrics.json": "stale"}
    # evaluate read the model train wrote: now a changed input too
    assert {r["kind"] for r in report["runs"][1]["reasons"]} == {"input", "upstream"}
    os.remove(proj.root / "model.pkl")
    report = proj.cat.outdated()
    model = next(o for o in report["outputs"] if o["path"] == "model.pkl")
    assert model["state"] == "missing" and model["now"] is None


def test_outdated_follows_the_last_writer_and_skips_running_runs(tmp_path):
    p = Project(tmp_path)
    p.put("in.txt", "1")
    p.run(["python", "a.py"], reads=("in.txt",), writes={"out.txt": "x1"})
    p.put("in.txt", "2")
    p.run(["python", "a.py"], reads=("in.txt",), writes={"out.txt": "x2"})
    assert p.cat.outdated()["runs"] == []  # the old run's output was replaced
    p.run(["python", "b.py"], reads=("out.txt",), writes={"fin.txt": "y"}, status="running")
    assert p.cat.outdated()["checked"]["runs"] == 1
    p.close()


def test_outdated_rerun_order_is_upstream_first(tmp_path):
    """A run started before the run that made its input (a long consumer) still comes
    after it in the re-run order."""
    p = Project(tmp_path)
    p.put("src.txt", "s")
    cat = p.cat

    def begin(argv: list[str], t: float) -> int:
        return cat.begin_run(command=argv, cwd=str(tmp_path), exe=None, pid=1, pid_start=1,
                             user="me", hostname="box", started_at=t, tier="netlink")

    consumer = begin(["python", "consumer.py"], T0 + 100)
    maker = begin(["python", "maker.py"], T0 + 200)
    cat.link(maker, p._version("src.txt"), "input")
    p.put("mid.txt", "m", seen=False)
    cat.link(maker, p._version("mid.txt", maker), "output", producer_set=True)
    cat.link(consumer, p._version("mid.txt"), "input")
    p.put("end.txt", "e", seen=False)
    cat.link(consumer, p._version("end.txt", consumer), "output", producer_set=True)
    for run in (consumer, maker):
        cat.update_run(run, status="completed", exit_code=0, ended_at=T0 + 300)
    assert cat.outdated()["runs"] == []
    p.put("src.txt", "changed", seen=False)
    report = cat.outdated()
    assert [r["run"] for r in report["runs"]] == [maker, consumer]
    assert [r["outputs"] for r in report["runs"]] == [["mid.txt"], ["end.txt"]]
    p.close()


def test_read_config_flattens_like_the_agent(tmp_path):
    got = read_config("p.yaml", b"a:\n  b: 1\n  c: [1, 2]\nd:\n  - {e: 3}\n")
    assert got == {"p.yaml:a.b": 1, "p.yaml:a.c": [1, 2], "p.yaml:d.0.e": 3}
    assert read_config("p.json", b'{"x": {"y": "z"}}') == {"p.json:x.y": "z"}
    assert read_config("p.toml", b"[t]\nk = 2\n") == {"p.toml:t.k": 2}
    assert read_config("p.yaml", b": : bad [") == {}


def test_agents_reader_agrees(proj):
    """The CLI hands the agent's reader in; a catalog the agent filled compares the same."""
    from onlooker.agent.rules.params import config_params

    data = (proj.root / "params.yaml").read_bytes()
    assert config_params("params.yaml", data, "params.yaml") == read_config("params.yaml", data)
    proj.params(featurize_max_features=5)
    report = proj.cat.outdated(read_params=lambda rel, d: config_params(rel, d, rel))
    assert stale_stages(report) == ["featurize", "train", "evaluate"]


def test_reads_change_nothing(proj):
    store = proj.root / ".onlooker"
    before = [(store / name).read_bytes() for name in ("catalog.db", "catalog.db-wal")]
    ro = Catalog(proj.root / ".onlooker", readonly=True)
    ro.lineage("model.pkl")
    ro.pipeline()
    ro.outdated()
    ro.close()
    assert [(store / name).read_bytes() for name in ("catalog.db", "catalog.db-wal")] == before


def test_outdated_says_which_files_it_hashes_from_disk(tmp_path):
    """Progress for a person waiting: only files whose size or mtime say they changed
    are hashed, and each is announced first."""
    cat = Catalog.init(tmp_path)
    try:
        (tmp_path / "raw.csv").write_text("a\n")
        run = cat.begin_run(command=["python", "prep.py"], cwd=str(tmp_path), exe=None, pid=1,
                            pid_start=1, user="u", hostname="h", started_at=1.0, tier="t")
        cat.update_run(run, status="completed", exit_code=0, ended_at=3.0)
        st = (tmp_path / "raw.csv").stat()
        raw = cat.add_version("raw.csv", hash=hash_file(tmp_path / "raw.csv").hash,
                              size=st.st_size, mtime_ns=st.st_mtime_ns, kind="dataset",
                              stored=False, created_at=1.0)
        cat.link(run, raw, "input")
        (tmp_path / "out.csv").write_text("b\n")
        st = (tmp_path / "out.csv").stat()
        out = cat.add_version("out.csv", hash=hash_file(tmp_path / "out.csv").hash,
                              size=st.st_size, mtime_ns=st.st_mtime_ns, kind="dataset",
                              stored=False, created_at=2.0, run_id=run)
        cat.link(run, out, "output")
        seen: list[tuple[str, int]] = []
        assert cat.outdated("disk", on_hash=lambda p, n: seen.append((p, n)))["runs"] == []
        assert seen == []  # unchanged by size and mtime: nothing hashed
        (tmp_path / "raw.csv").write_text("a changed\n")
        report = cat.outdated("disk", on_hash=lambda p, n: seen.append((p, n)))
        assert seen == [("raw.csv", len("a changed\n"))]
        assert [r["run"] for r in report["runs"]] == [run]
    finally:
        cat.close()
