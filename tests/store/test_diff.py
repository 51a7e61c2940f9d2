"""Catalog.diff: each section, only-what-differs vs all, and causes up the lineage."""

from __future__ import annotations

import pytest

from onlooker.store.catalog import Catalog
from onlooker.store.errors import NoSuchRun
from onlooker.store.objects import hash_bytes

T0 = 1_795_000_000.0
ENV = {"python": {"executable": "/venv/bin/python", "version": "3.11.4", "venv": True},
       "packages": {"numpy": "1.26.0", "pyyaml": "6.0.1"},
       "os": {"system": "Linux", "release": "6.1", "distro": "Debian 12"},
       "cpu": {"model": "Xeon", "count": 8}, "memory_bytes": 16 << 30, "gpus": [],
       "hostname": "box", "user": "ana"}


@pytest.fixture
def cat(tmp_path):
    c = Catalog.init(tmp_path)
    yield c
    c.close()


class Project:
    """Writes runs into a real catalog the way the agent does: versions, links, params."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self.clock = T0

    def version(self, path: str, content: bytes, *, kind: str, stored: bool = True) -> int:
        h = hash_bytes(content)
        if stored:
            self.cat.objects.put_bytes(content, h)
        self.clock += 1
        return self.cat.add_version(path, hash=h, size=len(content), mtime_ns=1, kind=kind,
                                    stored=stored, created_at=self.clock)

    def run(self, argv: list[str], *, params: dict | None = None,
            inputs: dict[str, bytes] | None = None, outputs: dict[str, bytes] | None = None,
            code: dict[str, bytes] | None = None, env: dict | None = None,
            stored: bool = True, duration: float = 10.0) -> int:
        self.clock += 10
        start = self.clock
        rid = self.cat.begin_run(command=argv, cwd=str(self.cat.project), exe="/venv/bin/python",
                                 pid=100, pid_start=1, user="ana", hostname="box",
                                 started_at=start, tier="netlink+fanotify")
        for path, content in (inputs or {}).items():
            self.cat.link(rid, self.version(path, content, kind="dataset"), "input")
        for path, content in (code or {}).items():
            self.cat.link(rid, self.version(path, content, kind="code", stored=stored), "code")
        for path, content in (outputs or {}).items():
            self.cat.link(rid, self.version(path, content, kind="dataset"), "output")
        if params:
            self.cat.set_params(rid, {k: (v, "argv") for k, v in params.items()})
        fields: dict = {"status": "completed", "exit_code": 0, "ended_at": start + duration}
        if env is not None:
            fields["env_id"] = self.cat.put_env(env)
        self.cat.update_run(rid, **fields)
        return rid


@pytest.fixture
def proj(cat):
    return Project(cat)


def keys(section: list[dict]) -> dict[str, tuple]:
    return {e["key"]: (e["change"], e["old"], e["new"]) for e in section}


def test_same_runs_differ_in_nothing_and_all_lists_every_key(cat, proj):
    a = proj.run(["python", "train.py", "--lr", "0.1"], params={"lr": 0.1},
                 inputs={"data.csv": b"1,2\n"}, code={"train.py": b"print(1)\n"}, env=ENV)
    b = proj.run(["python", "train.py", "--lr", "0.1"], params={"lr": 0.1},
                 inputs={"data.csv": b"1,2\n"}, code={"train.py": b"print(1)\n"}, env=ENV)
    got = cat.diff(a, b)
    assert (got["a"], got["b"], got["same_run"], got["differs"]) == (a, b, False, False)
    assert all(entries == [] for entries in got["sections"].values())
    assert set(got["sections"]) == {"command", "params", "metrics", "code", "environment",
                                    "inputs", "outputs", "telemetry"}
    assert got["causes"] == []
    full = cat.diff(a, b, all=True)
    assert keys(full["sections"]["params"]) == {"lr": ("same", 0.1, 0.1)}
    assert keys(full["sections"]["environment"])["packages.numpy"] == ("same", "1.26.0", "1.26.0")
    assert full["sections"]["inputs"][0]["key"] == "data.csv"
    assert keys(full["sections"]["command"])["argv"][0] == "same"


def test_tags_and_notes_are_shown_beside_the_runs_never_as_a_difference(cat, proj):
    a = proj.run(["python", "train.py"], params={"lr": 0.1})
    b = proj.run(["python", "train.py"], params={"lr": 0.1})
    cat.tag(a, "baseline")
    cat.tag(b, "best", "sweep")
    cat.set_note(b, "fewer features")
    got = cat.diff("baseline", "best")
    assert (got["a"], got["b"]) == (a, b)
    assert got["labels"] == {"a": {"tags": ["baseline"], "note": None},
                             "b": {"tags": ["best", "sweep"], "note": "fewer features"}}
    assert got["differs"] is False


def test_the_same_run_twice(cat, proj):
    a = proj.run(["python", "train.py"], params={"lr": 0.1})
    got = cat.diff("last", a)
    assert got["same_run"] is True and got["differs"] is False and got["causes"] == []


def test_command_and_params_old_new_added_removed(cat, proj):
    a = proj.run(["python", "train.py", "--lr", "0.1"], params={"lr": 0.1, "seed": 1, "flag": True})
    b = proj.run(["python", "train.py", "--lr", "0.2", "--depth", "3"],
                 params={"lr": 0.2, "depth": 3, "flag": 1})
    got = cat.diff(a, b)
    assert keys(got["sections"]["command"]) == {
        "argv": ("changed", ["python", "train.py", "--lr", "0.1"],
                 ["python", "train.py", "--lr", "0.2", "--depth", "3"])}
    assert keys(got["sections"]["params"]) == {
        "lr": ("changed", 0.1, 0.2), "depth": ("added", None, 3), "seed": ("removed", 1, None),
        "flag": ("changed", True, 1)}  # true is not the number 1
    causes = {c["key"]: c for c in got["causes"]}
    assert set(causes) == {"lr", "depth", "seed", "flag"}
    assert causes["lr"]["hops"] == [] and causes["lr"]["runs"] == [a, b]
    assert causes["lr"]["sentence"] == "lr went 0.1 -> 0.2"
    assert causes["depth"]["sentence"] == "depth was set to 3 (unset before)"
    assert causes["seed"]["sentence"] == "seed (1) was no longer set"


def test_metrics_finals_and_series_with_deltas(cat, proj):
    a = proj.run(["python", "eval.py"])
    b = proj.run(["python", "eval.py"])
    cat.set_metrics(a, "eval/metrics.json", [("eval/metrics.json:auc", None, 0.91, None),
                                             ("eval/metrics.json:n", None, 100, None)])
    cat.set_metrics(b, "eval/metrics.json", [("eval/metrics.json:auc", None, 0.87, None),
                                             ("eval/metrics.json:n", None, 100, None),
                                             ("eval/metrics.json:f1", None, 0.5, None)])
    cat.set_metrics(a, "log", [("loss", s, v, None) for s, v in ((1, 0.9), (2, 0.5), (3, 0.4))])
    cat.set_metrics(b, "log", [("loss", s, v, None) for s, v in ((1, 0.8), (2, 0.3))])
    got = cat.diff(a, b)["sections"]["metrics"]
    by = {e["key"]: e for e in got}
    assert set(by) == {"eval/metrics.json:auc", "eval/metrics.json:f1", "loss"}
    assert (by["eval/metrics.json:auc"]["old"], by["eval/metrics.json:auc"]["new"]) == (0.91, 0.87)
    assert by["eval/metrics.json:auc"]["delta"] == pytest.approx(-0.04)
    assert by["eval/metrics.json:f1"]["change"] == "added"
    assert by["eval/metrics.json:f1"]["delta"] is None
    assert by["loss"]["old"] == {"last": 0.4, "min": 0.4, "max": 0.9, "count": 3}
    assert by["loss"]["new"] == {"last": 0.3, "min": 0.3, "max": 0.8, "count": 2}
    assert by["loss"]["delta"] == pytest.approx(-0.1)
    same = {e["key"]: e for e in cat.diff(a, b, all=True)["sections"]["metrics"]}
    assert same["eval/metrics.json:n"]["change"] == "same"
    assert same["eval/metrics.json:n"]["delta"] == 0


def test_code_diff_of_stored_versions_and_git_state(cat, proj):
    a = proj.run(["python", "train.py"], code={"train.py": b"lr = 0.1\nprint(lr)\n",
                                               "util.py": b"x = 1\n"})
    b = proj.run(["python", "train.py"], code={"train.py": b"lr = 0.2\nprint(lr)\n",
                                               "util.py": b"x = 1\n", "new.py": b"y = 2\n"})
    diff_text = b"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-lr = 0.1\n+lr = 0.2\n"
    diff_hash = cat.objects.put_bytes(diff_text)
    cat.update_run(a, git_commit="a" * 40, git_branch="main", git_dirty=False)
    cat.update_run(b, git_commit="a" * 40, git_branch="main", git_dirty=True, git_diff=diff_hash)
    got = cat.diff(a, b)
    code = {e["key"]: e for e in got["sections"]["code"]}
    assert set(code) == {"train.py", "new.py", "git.dirty", "git.diff"}
    assert code["train.py"]["change"] == "changed"
    assert code["train.py"]["diff"].splitlines() == [
        f"--- a/train.py (run {a})", f"+++ b/train.py (run {b})", "@@ -1,2 +1,2 @@",
        "-lr = 0.1", "+lr = 0.2", " print(lr)"]
    assert code["train.py"]["diff_note"] is None
    assert code["new.py"]["change"] == "added" and code["new.py"]["diff"] is None
    assert (code["git.dirty"]["old"], code["git.dirty"]["new"]) == (False, True)
    assert (code["git.diff"]["old"], code["git.diff"]["new"]) == (None, diff_hash)
    assert (code["git.diff"]["old_lines"], code["git.diff"]["new_lines"]) == (None, 5)
    assert {c["key"] for c in got["causes"]} == {"train.py", "new.py"}


def test_code_whose_content_is_not_stored_gets_no_diff(cat, proj):
    a = proj.run(["python", "t.py"], code={"t.py": b"a\n", "blob.so": b"\0\1"})
    b = proj.run(["python", "t.py"], code={"t.py": b"b\n", "blob.so": b"\0\2"}, stored=False)
    code = {e["key"]: e for e in cat.diff(a, b)["sections"]["code"]}
    assert code["t.py"]["diff"] is None and code["t.py"]["diff_note"] == "content not stored"
    c = proj.run(["python", "t.py"], code={"t.py": b"c\n", "blob.so": b"\0\3"})
    code = {e["key"]: e for e in cat.diff(a, c)["sections"]["code"]}
    assert code["t.py"]["diff"].endswith("-a\n+c\n")
    assert code["blob.so"]["diff"] is None and code["blob.so"]["diff_note"] == "binary"


def test_environment_packages_interpreter_host_gpu(cat, proj):
    other = {**ENV, "python": {**ENV["python"], "version": "3.12.1"},
             "packages": {"numpy": "2.0.0", "torch": "2.3.0"}, "hostname": "gpu-box",
             "gpus": [{"name": "NVIDIA H100", "driver": "550.1", "memory_bytes": 80 << 30}]}
    a = proj.run(["python", "t.py"], env=ENV)
    b = proj.run(["python", "t.py"], env=other)
    c = proj.run(["python", "t.py"])  # no env recorded
    got = cat.diff(a, b)
    assert keys(got["sections"]["environment"]) == {
        "python.version": ("changed", "3.11.4", "3.12.1"),
        "packages.numpy": ("changed", "1.26.0", "2.0.0"),
        "packages.pyyaml": ("removed", "6.0.1", None),
        "packages.torch": ("added", None, "2.3.0"),
        "hostname": ("changed", "box", "gpu-box"),
        "gpus.0.name": ("added", None, "NVIDIA H100"),
        "gpus.0.driver": ("added", None, "550.1"),
        "gpus.0.memory_bytes": ("added", None, 80 << 30),
    }
    # what changes results is a cause; the host and the GPU model are context
    assert {c["key"] for c in got["causes"]} == {"python.version", "packages.numpy",
                                                 "packages.pyyaml", "packages.torch"}
    assert keys(cat.diff(a, c)["sections"]["environment"]) == {"env": ("removed", "recorded",
                                                                        None)}


def test_inputs_and_outputs_changed_appeared_vanished(cat, proj):
    a = proj.run(["python", "t.py"], inputs={"data/a.csv": b"1\n", "data/gone.csv": b"g\n"},
                 outputs={"model.pkl": b"m1", "same.txt": b"s"})
    b = proj.run(["python", "t.py"], inputs={"data/a.csv": b"2\n", "data/new.csv": b"n\n"},
                 outputs={"model.pkl": b"m2!", "same.txt": b"s", "extra.txt": b"e"})
    got = cat.diff(a, b)["sections"]
    ins = {e["key"]: e for e in got["inputs"]}
    assert {k: e["change"] for k, e in ins.items()} == {
        "data/a.csv": "changed", "data/gone.csv": "removed", "data/new.csv": "added"}
    assert (ins["data/a.csv"]["old"], ins["data/a.csv"]["new"]) == (hash_bytes(b"1\n"),
                                                                    hash_bytes(b"2\n"))
    assert (ins["data/a.csv"]["old_size"], ins["data/a.csv"]["new_size"]) == (2, 2)
    outs = {e["key"]: e["change"] for e in got["outputs"]}
    assert outs == {"model.pkl": "changed", "extra.txt": "added"}
    assert outs.get("same.txt") is None


def test_telemetry_differences_beyond_jitter(cat, proj):
    a = proj.run(["python", "t.py"], duration=10.0)
    b = proj.run(["python", "t.py"], duration=10.2)  # jitter: the same
    c = proj.run(["python", "t.py"], duration=30.0)
    for rid, rss, cpu in ((a, 100 << 20, 50.0), (b, 101 << 20, 52.0), (c, 400 << 20, 95.0)):
        cat.add_telemetry([(rid, T0 + i, {"rss": rss, "cpu_pct": cpu, "cpu_s": float(i)})
                           for i in range(3)])
    assert cat.diff(a, b)["sections"]["telemetry"] == []
    tele = {e["key"]: e for e in cat.diff(a, c)["sections"]["telemetry"]}
    assert set(tele) == {"duration", "rss_peak", "cpu_pct_mean", "cpu_pct_peak"}
    assert (tele["duration"]["old"], tele["duration"]["new"]) == (10.0, 30.0)
    assert tele["duration"]["delta"] == pytest.approx(20.0)
    assert tele["rss_peak"]["delta"] == 300 << 20
    everything = {e["key"]: e["change"] for e in cat.diff(a, b, all=True)["sections"]["telemetry"]}
    assert everything["duration"] == "same" and everything["rss_peak"] == "same"
    assert "cpu_seconds" in everything


def pipeline(proj: Project, *, max_features: int, raw: bytes, seed: int = 1) -> dict[str, int]:
    """raw (by hand) -> prepare -> featurize (param) -> train -> evaluate; the ids."""
    prep = f"prepared from {raw!r}".encode()
    feats = f"{prep!r} with {max_features}".encode()
    model = f"model of {feats!r} seed {seed}".encode()
    ids = {"prepare": proj.run(["python", "src/prepare.py", "data/raw.csv"],
                               inputs={"data/raw.csv": raw},
                               outputs={"data/prepared/all.csv": prep})}
    ids["featurize"] = proj.run(["python", "src/featurize.py"],
                                params={"params.yaml:featurize.max_features": max_features},
                                inputs={"data/prepared/all.csv": prep},
                                outputs={"data/features/train.pkl": feats + b"1",
                                         "data/features/test.pkl": feats + b"2"})
    ids["train"] = proj.run(["python", "src/train.py", "--seed", str(seed)],
                            params={"seed": seed},
                            inputs={"data/features/train.pkl": feats + b"1"},
                            outputs={"model.pkl": model})
    ids["evaluate"] = proj.run(["python", "src/evaluate.py"],
                               inputs={"model.pkl": model, "data/features/test.pkl": feats + b"2"},
                               outputs={"eval/metrics.json": model[:20] + b"!"})
    proj.cat.set_metrics(ids["evaluate"], "eval/metrics.json",
                         [("eval/metrics.json:auc", None, 0.9 if max_features == 200 else 0.8,
                           None)])
    return ids


def test_a_param_two_hops_up_is_the_cause(cat, proj):
    one = pipeline(proj, max_features=200, raw=b"raw")
    two = pipeline(proj, max_features=300, raw=b"raw")
    got = cat.diff(one["evaluate"], two["evaluate"])
    assert [c["key"] for c in got["causes"]] == ["params.yaml:featurize.max_features"]
    (cause,) = got["causes"]
    assert (cause["kind"], cause["change"], cause["old"], cause["new"]) == ("param", "changed",
                                                                            200, 300)
    assert cause["runs"] == [one["featurize"], two["featurize"]]
    # the direct path: evaluate read data/features/test.pkl, which featurize made
    assert cause["hops"] == [{"paths": ["data/features/test.pkl"], "a": one["featurize"],
                              "b": two["featurize"]}]
    assert cause["sentence"] == (
        f"eval/metrics.json:auc 0.9 -> 0.8 because data/features/test.pkl changed, produced by "
        f"featurize runs {one['featurize']} and {two['featurize']}, whose "
        "params.yaml:featurize.max_features went 200 -> 300")


def test_causes_through_two_hops_most_upstream_first(cat, proj):
    one = pipeline(proj, max_features=200, raw=b"raw", seed=1)
    two = pipeline(proj, max_features=300, raw=b"raw", seed=2)
    got = cat.diff(one["evaluate"], two["evaluate"])
    assert [c["key"] for c in got["causes"]] == ["params.yaml:featurize.max_features", "seed"]
    seed = got["causes"][1]
    assert seed["hops"] == [{"paths": ["model.pkl"], "a": one["train"], "b": two["train"]}]
    # through train to featurize, train's own input
    train_diff = cat.diff(one["train"], two["train"])
    first = train_diff["causes"][0]
    assert first["key"] == "params.yaml:featurize.max_features"
    assert first["hops"][0]["paths"] == ["data/features/train.pkl"]


def test_raw_data_changed_by_hand_is_the_cause_with_no_producer(cat, proj):
    one = pipeline(proj, max_features=200, raw=b"raw v1")
    two = pipeline(proj, max_features=200, raw=b"raw v2")
    got = cat.diff(one["evaluate"], two["evaluate"])
    assert [c["key"] for c in got["causes"]] == ["data/raw.csv"]
    (cause,) = got["causes"]
    assert cause["kind"] == "input" and cause["producers"] == {"old": None, "new": None}
    assert [h["a"] for h in cause["hops"]] == [one["featurize"], one["prepare"]]
    assert [h["b"] for h in cause["hops"]] == [two["featurize"], two["prepare"]]
    assert cause["hops"][1]["paths"] == ["data/prepared/all.csv"]
    assert cause["runs"] == [one["prepare"], two["prepare"]]
    assert cause["sentence"].endswith(
        f"produced by prepare runs {one['prepare']} and {two['prepare']}, whose input "
        "data/raw.csv changed (no run produced it)")
    # straight at the stage that read it: no hops
    direct = cat.diff(one["prepare"], two["prepare"])["causes"]
    assert [(c["key"], c["hops"]) for c in direct] == [("data/raw.csv", [])]
    assert direct[0]["sentence"].startswith("data/prepared/all.csv changed because "
                                            "data/raw.csv changed (no run produced it)")


def test_producers_that_differ_in_nothing_and_several_files_of_one_folder(cat, proj):
    a = proj.run(["python", "src/make.py"], outputs={"out/x.bin": b"x1", "out/y.bin": b"y1"})
    b = proj.run(["python", "src/make.py"], outputs={"out/x.bin": b"x2", "out/y.bin": b"y2"})
    c = proj.run(["python", "src/use.py"], inputs={"out/x.bin": b"x1", "out/y.bin": b"y1"})
    d = proj.run(["python", "src/use.py"], inputs={"out/x.bin": b"x2", "out/y.bin": b"y2"})
    (cause,) = cat.diff(c, d)["causes"]
    assert cause["kind"] == "input" and cause["paths"] == ["out/x.bin", "out/y.bin"]
    assert cause["producers"] == {"old": a, "new": b}
    assert cause["sentence"] == (f"out/ (2 files) changed, produced by make runs {a} and {b}, "
                                 "which differ in no param, code or input")


def test_a_config_edited_by_hand_is_named_by_its_params_only(cat, proj):
    a = proj.run(["python", "t.py"], params={"params.yaml:lr": 0.1},
                 inputs={"params.yaml": b"lr: 0.1\n"})
    b = proj.run(["python", "t.py"], params={"params.yaml:lr": 0.2},
                 inputs={"params.yaml": b"lr: 0.2\n"})
    assert [c["key"] for c in cat.diff(a, b)["causes"]] == ["params.yaml:lr"]
    c = proj.run(["python", "t.py"], params={"params.yaml:lr": 0.2},
                 inputs={"params.yaml": b"lr: 0.2  # a comment\n"})
    (only,) = cat.diff(b, c)["causes"]
    assert (only["key"], only["kind"]) == ("params.yaml", "input")


def test_a_cycle_in_the_lineage_ends(cat, proj):
    # two runs that each read what the other wrote: a loop in the graph
    cat_ = proj.cat
    x1, y1 = proj.version("x", b"x1", kind="dataset"), proj.version("y", b"y1", kind="dataset")
    x2, y2 = proj.version("x", b"x2", kind="dataset"), proj.version("y", b"y2", kind="dataset")
    p = proj.run(["python", "src/p.py"], params={"k": 1})
    q = proj.run(["python", "src/q.py"], params={"k": 1})
    r = proj.run(["python", "src/p.py"], params={"k": 2})
    s = proj.run(["python", "src/q.py"], params={"k": 1})
    for run, reads, writes in ((p, y1, x1), (q, x1, y1), (r, y2, x2), (s, x2, y2)):
        cat_.link(run, reads, "input")
        cat_.link(run, writes, "output")
    got = cat.diff(q, s)
    assert [(c["key"], c["runs"]) for c in got["causes"]] == [("k", [p, r])]


def test_depth_limit_stops_a_long_chain(cat, proj):
    ones, twos = [], []
    for content, out in ((b"1", ones), (b"2", twos)):
        prev = None
        for i in range(6):
            ins = {f"f{i - 1}": prev} if prev is not None else {"raw": content}
            prev = content + str(i).encode()
            out.append(proj.run(["python", f"src/s{i}.py"], inputs=ins, outputs={f"f{i}": prev}))
    from onlooker.store.diff import diff_runs

    deep = diff_runs(cat, ones[-1], twos[-1])["causes"]
    assert [(c["key"], len(c["hops"])) for c in deep] == [("raw", 5)]
    cut = diff_runs(cat, ones[-1], twos[-1], max_depth=2)["causes"]
    assert len(cut) == 1 and cut[0]["truncated"] is True and len(cut[0]["hops"]) == 2
    assert "lineage not followed past 2 hops" in cut[0]["sentence"]


def test_bad_refs_raise_no_such_run(cat, proj):
    a = proj.run(["python", "t.py"])
    with pytest.raises(NoSuchRun):
        cat.diff(a, 999)
    with pytest.raises(NoSuchRun):
        cat.diff("nope", a)


def test_diff_is_a_read(cat, proj):
    a = proj.run(["python", "t.py"], params={"lr": 1}, code={"t.py": b"a\n"})
    b = proj.run(["python", "t.py"], params={"lr": 2}, code={"t.py": b"b\n"})
    before = (cat.counts(), cat.run(a), cat.run(b))
    ro = Catalog(cat.store_dir, readonly=True)
    try:
        assert ro.diff(a, b)["differs"] is True
    finally:
        ro.close()
    assert (cat.counts(), cat.run(a), cat.run(b)) == before


def test_the_producer_is_the_last_writer_before_the_reader(cat, proj):
    # a stage run twice writing the same content: the later one made what the reader read
    proj.run(["python", "src/make.py"], params={"k": 1}, outputs={"out.bin": b"A"})
    p2 = proj.run(["python", "src/make.py"], params={"k": 2}, outputs={"out.bin": b"B"})
    c3 = proj.run(["python", "src/use.py"], inputs={"out.bin": b"B"})
    p4 = proj.run(["python", "src/make.py"], params={"k": 1, "note": "again"},
                  outputs={"out.bin": b"A"})
    c5 = proj.run(["python", "src/use.py"], inputs={"out.bin": b"A"})
    causes = cat.diff(c3, c5)["causes"]
    assert {c["key"] for c in causes} == {"k", "note"}
    assert all(c["runs"] == [p2, p4] for c in causes)
