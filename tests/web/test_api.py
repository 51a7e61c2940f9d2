"""The dashboard's JSON API and pages over a real catalog (built through the store):
shapes as the CLI's --json, 4xx with {"error"} for bad input, and no write ever."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from onlooker.cli.web.server import Dashboard
from onlooker.store import query
from onlooker.store.catalog import Catalog

from .catalogs import build

N = 130


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("web") / "proj", N, long_series=30_000)


@pytest.fixture(scope="module")
def server(project):
    with Dashboard(project, port=0) as dash:
        yield dash


@pytest.fixture(scope="module")
def catalog(project):
    with Catalog.find(project) as cat:
        yield cat


def get(server, path: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.headers.get("content-type", ""), res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), err.read()


def api(server, path: str, /, **params) -> tuple[int, dict]:
    query_text = urllib.parse.urlencode(params, doseq=True)
    status, kind, body = get(server, path + (f"?{query_text}" if query_text else ""))
    assert kind.startswith("application/json"), (path, kind)
    return status, json.loads(body)


def refused(server, path: str, code: int, /, **params) -> str:
    got, body = api(server, path, **params)
    assert got == code, (path, params, got, body)
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    assert "Traceback" not in body["error"]
    return body["error"]


def test_runs_pages_through_every_run_newest_first(server, catalog):
    seen = []
    offset = 0
    while True:
        status, page = api(server, "/api/runs", limit=50, offset=offset)
        assert status == 200
        assert set(page) == {"runs", "offset", "limit", "has_more", "total", "columns"}
        assert page["total"] == N and page["offset"] == offset and page["limit"] == 50
        seen += [r["id"] for r in page["runs"]]
        if not page["has_more"]:
            break
        offset += 50
    assert seen == [r["id"] for r in catalog.query(None, limit=None)]
    assert len(seen) == N


def test_a_page_is_asked_with_an_offset_once_the_store_takes_one(server, catalog,
                                                                 monkeypatch):
    seen = []
    original = Catalog.query

    def query(self, where=None, *, offset=0, limit=None, **kwargs):
        seen.append((offset, limit))
        found = original(self, where, limit=None if limit is None else offset + limit,
                         **kwargs)
        return found[offset:]

    monkeypatch.setattr(Catalog, "query", query)
    _, page = api(server, "/api/runs", limit=10, offset=20)
    assert seen == [(20, 11)]  # one more than the page: is there a next one?
    want = [r["id"] for r in original(catalog, None, limit=30)][20:]
    assert [r["id"] for r in page["runs"]] == want and page["has_more"] is True


def test_runs_are_the_json_contract_of_runs(server, catalog):
    _, page = api(server, "/api/runs", limit=3)
    want = json.loads(json.dumps(catalog.query(None, limit=3), default=str))
    assert page["runs"] == want
    assert {"id", "command", "status", "params", "metrics", "inputs", "outputs",
            "telemetry"} <= set(page["runs"][0])


def test_where_sort_and_columns_are_the_store_query(server, catalog):
    where = "params.lr > 0.01 and status = completed"
    _, page = api(server, "/api/runs", where=where, sort="-metrics.test.f1",
                  columns="params.lr,metrics.test.f1", limit=500)
    want = catalog.query(where, sort="-metrics.test.f1", limit=None)
    assert [r["id"] for r in page["runs"]] == [r["id"] for r in want]
    assert page["total"] is None and page["has_more"] is False  # a filter: no count
    for run, full in zip(page["runs"], want, strict=True):
        assert run["columns"] == {"params.lr": query.column_value(full, "params.lr"),
                                  "metrics.test.f1": query.column_value(full,
                                                                        "metrics.test.f1")}
    _, failed = api(server, "/api/runs", status="failed", limit=500)
    assert {r["status"] for r in failed["runs"]} == {"failed"}
    assert failed["total"] == len(catalog.query(None, status="failed", limit=None))


def test_tag_filter(server, project, tmp_path):
    with Catalog.find(project, readonly=False) as cat:
        cat.tag(7, "it's-best")  # a quote: the filter must be quoted for the language
    _, page = api(server, "/api/runs", tag="it's-best")
    assert [r["id"] for r in page["runs"]] == [7]
    _, tags = api(server, "/api/tags")
    assert tags == {"tags": {"it's-best": 1}}


def test_bad_input_is_a_400_with_one_sentence(server):
    text = refused(server, "/api/runs", 400, where="params.lr >")
    with pytest.raises(query.QueryError) as err:
        query.parse("params.lr >")
    assert text == str(err.value)
    assert "unknown field" in refused(server, "/api/runs", 400, where="parms.lr > 1")
    assert "unknown column" in refused(server, "/api/runs", 400, sort="nope")
    assert "unknown column" in refused(server, "/api/runs", 400, columns="params.lr,bogus")
    assert "limit" in refused(server, "/api/runs", 400, limit="many")
    assert "limit" in refused(server, "/api/runs", 400, limit="0")
    assert "status" in refused(server, "/api/runs", 400, status="exploded")
    assert "direction" in refused(server, "/api/lineage", 400, path="data/raw.csv",
                                  direction="sideways")
    assert "missing" in refused(server, "/api/diff", 400, a="1")


def test_unknown_things_are_a_404(server):
    assert "no run 99999" in refused(server, "/api/runs/99999", 404)
    assert "no run 99999" in refused(server, "/api/runs/99999/telemetry", 404)
    assert "not a run" in refused(server, "/api/runs/no-such-tag", 404)
    assert "no metric series 'nope'" in refused(server, "/api/runs/1/metrics/nope", 404)
    assert "not in the catalog" in refused(server, "/api/lineage", 404, path="nowhere.csv")
    assert refused(server, "/api/nothing-here", 404)
    assert refused(server, "/api/diff", 404, a="1", b="99999")


def test_one_run_is_show_json(server, catalog):
    _, run = api(server, "/api/runs/5")
    want = catalog.run(5)
    want["twins"] = catalog.twins(5)
    want["nondeterministic"] = catalog.nondeterministic(5) if want["twins"] else []
    assert run == json.loads(json.dumps(want, default=str))
    _, last = api(server, "/api/runs/last")
    assert last["id"] == N
    _, diff = api(server, "/api/runs/5/diff")
    assert diff == {"run": 5, "diff": None}


def test_metric_series_whole_and_downsampled(server, catalog):
    _, keys = api(server, "/api/runs/1/metrics")
    assert keys == {"run": 1, "series": ["loss"]}
    _, small = api(server, "/api/runs/2/metrics/loss")
    stored = catalog.metric_series(2, "loss")["loss"]
    assert small["downsampled"] is False and small["count"] == len(stored)
    assert small["step"] == [p["step"] for p in stored]
    assert small["value"] == [p["value"] for p in stored]
    _, big = api(server, "/api/runs/1/metrics/loss", points=2000)
    stored = catalog.metric_series(1, "loss")["loss"]
    assert big["count"] == len(stored) == 30_000 and big["downsampled"] is True
    assert len(big["step"]) == len(big["value"]) == 2000
    assert big["step"] == sorted(big["step"])
    assert big["step"][0] == stored[0]["step"] and big["step"][-1] == stored[-1]["step"]
    real = {p["step"]: p["value"] for p in stored}
    assert all(real[s] == v for s, v in zip(big["step"], big["value"], strict=True))
    spike = max(stored, key=lambda p: p["value"])
    assert spike["step"] in big["step"]  # a spike survives the downsampling


def test_telemetry_diff_lineage_pipeline_are_their_commands_json(server, catalog):
    _, tele = api(server, "/api/runs/3/telemetry")
    assert tele == json.loads(json.dumps({"run": 3, "summary": catalog.telemetry_summary(3),
                                          "series": catalog.telemetry(3)}))
    _, diff = api(server, "/api/diff", a="1", b="2")
    assert diff == json.loads(json.dumps(catalog.diff(1, 2), default=str))
    _, graph = api(server, "/api/lineage", path="models/model-0.pkl", direction="down")
    assert graph == json.loads(json.dumps(catalog.lineage("models/model-0.pkl", up=False)))
    assert "run:2" in {n["id"] for n in graph["nodes"]}
    _, pipe = api(server, "/api/pipeline")
    assert pipe == json.loads(json.dumps(catalog.pipeline()))
    _, status = api(server, "/api/status")
    assert status["runs"] == N and status["last_run"] == N and status["readonly"] is True


def test_pages_and_their_errors(server):
    status, kind, body = get(server, "/")
    assert status == 200 and kind.startswith("text/html") and b'id="boot"' in body
    status, _, body = get(server, "/runs/last")
    assert status == 200 and f'"run": {N}'.encode() in body
    for path, code, sentence in (
            ("/runs/99999", 404, b"there is no run 99999"),
            ("/compare?runs=3", 400, b"compare needs 2 to 50 different runs"),
            ("/compare?runs=3,99999", 404, b"there is no run 99999"),
            ("/nowhere", 404, b"there is no such page")):
        status, kind, body = get(server, path)
        assert status == code and kind.startswith("text/html"), path
        assert sentence in body and b"Traceback" not in body, path
    status, _, body = get(server, "/?where=" + urllib.parse.quote("params.lr >"))
    assert status == 200 and b"a value after" in body  # shown inline by the page
    status, kind, body = get(server, "/static/vendor/uPlot.iife.min.js")
    assert status == 200 and "javascript" in kind


def test_only_local_host_names_are_served(server):
    status, _, _ = get(server, "/api/status", headers={"Host": "attacker.example:80"})
    assert status == 400


def _fingerprint(project: Path) -> dict[str, str]:
    """The catalog's bytes, and its write-ahead log's where it holds any (a read-only
    connection in WAL mode may create it empty; the -shm index is shared memory)."""
    store = project / ".onlooker"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.iterdir()) if p.is_file() and not p.name.endswith("-shm")
            and not (p.name.endswith("-wal") and p.stat().st_size == 0)}


def test_a_session_of_requests_writes_nothing(tmp_path):
    project = build(tmp_path / "ro", 40)
    before = _fingerprint(project)
    with Dashboard(project, port=0) as dash:
        for path in ("/", "/runs/3", "/compare?runs=1,2", "/pipeline", "/lineage?path=x",
                     "/api/runs?where=params.lr%3E0.01&sort=-metrics.test.f1",
                     "/api/runs?offset=20&limit=5", "/api/runs/3", "/api/runs/3/diff",
                     "/api/runs/3/metrics", "/api/runs/3/metrics/loss",
                     "/api/runs/3/telemetry", "/api/diff?a=1&b=2", "/api/pipeline",
                     "/api/lineage?path=models/model-0.pkl&direction=down", "/api/tags",
                     "/api/status", "/api/runs/999", "/api/runs?where=bad%20%3E"):
            get(dash, path)
    assert _fingerprint(project) == before


def test_a_bug_is_a_500_with_one_line_not_a_traceback(server, monkeypatch):
    def broken(self):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Catalog, "pipeline", broken)
    assert refused(server, "/api/pipeline", 500) == "internal error: RuntimeError: boom second line"
