"""The JSON API the pages use, mirroring the CLI's `--json` (docs/user-guide.md, "The
dashboard"): each endpoint parses, calls the same store/ function as its command, and
returns what that command prints; errors are a 4xx with {"error": sentence}."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from onlooker.cli.web.app import ApiError, Json, Project, bounded_int, error_json, run_id, status_of
from onlooker.store import query, series
from onlooker.store.catalog import Catalog
from onlooker.store.errors import StoreError

log = logging.getLogger(__name__)

STATUSES = ("running", "completed", "failed", "ended", "lost")
PAGE_SIZE = 50
MAX_PAGE = 500


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def endpoint(where: Project, func: Callable[[Catalog, Request], Any]) -> Callable:
    """A sync route (Starlette runs it in its thread pool) around `func(catalog,
    request)`: the catalog opened read-only for this request, domain errors as JSON."""

    def handle(request: Request) -> Response:
        try:
            with where.catalog() as catalog:
                return Json(func(catalog, request))
        except (StoreError, ApiError) as err:
            return error_json(_one_line(str(err)), status_of(err))

    handle.__name__ = func.__name__
    return handle


def quoted(text: str) -> str:
    """A literal of the --where language for any text (backslash escapes any character)."""
    return "'" + re.sub(r"([\\'])", r"\\\1", text) + "'"


def _specs(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def _count(catalog: Catalog, status: str | None) -> int:
    sql, args = "SELECT count(*) FROM runs", ()
    if status is not None:
        sql, args = sql + " WHERE status = ?", (status,)
    return int(catalog.sql(sql, args)[1][0][0])


def _page(catalog: Catalog, filters: list[str], *, since: Any, until: Any,
          status: str | None, sort: str | None, offset: int, limit: int) -> list[dict]:
    """Runs [offset, offset + limit] (one more than the page, to tell whether there is
    a next). Catalog.query has no offset yet, so the runs before the page are read
    too; where it has one, it is used."""
    kwargs = {"since": since, "until": until, "status": status, "sort": sort}
    if "offset" in inspect.signature(catalog.query).parameters:
        return catalog.query(filters, **kwargs, offset=offset, limit=limit + 1)
    return catalog.query(filters, **kwargs, limit=offset + limit + 1)[offset:]



def runs(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/runs?where=&status=&tag=&since=&until=&sort=&columns=&limit=&offset="""
    params = request.query_params
    texts = [t for t in params.getlist("where") if t.strip()]
    for text in texts:  # a bad filter is refused before the catalog is read
        query.parse(text)
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(f"status must be one of {', '.join(STATUSES)}, not '{status}'")
    sort = params.get("sort") or None
    columns = _specs(params.get("columns"))
    for spec in [*columns, *([sort] if sort else [])]:
        query.check_column(spec)
    limit = bounded_int(request, "limit", PAGE_SIZE, 1, MAX_PAGE)
    offset = bounded_int(request, "offset", 0, 0, 10**9)
    tag = params.get("tag") or None
    filters = [*texts, *([f"tag = {quoted(tag)}"] if tag else [])]
    since, until = params.get("since") or None, params.get("until") or None
    found = _page(catalog, filters, since=since, until=until, status=status, sort=sort,
                  offset=offset, limit=limit)
    page, more = found[:limit], len(found) > limit
    if columns:
        for run in page:
            run["columns"] = {c: query.column_value(run, c) for c in columns}
    filtered = bool(filters or since or until)
    return {"runs": page, "offset": offset, "limit": limit, "has_more": more,
            "total": None if filtered else _count(catalog, status), "columns": columns}


def run(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/runs/{ref}: `show --json` (with twins)."""
    from onlooker.cli.commands.show import add_twins

    found = catalog.run(run_id(catalog, request.path_params["ref"]))
    add_twins(catalog, found)
    return found


def git_diff(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/runs/{ref}/diff: the uncommitted changes the run started with (`show
    --diff`): {"run", "diff"}; diff is null when none was kept."""
    from onlooker.cli.commands.show import diff_text

    found = catalog.run(run_id(catalog, request.path_params["ref"]))
    return {"run": found["id"], "diff": diff_text(catalog, found)}


def metric_keys(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/runs/{ref}/metrics: the keys of the run's series, without reading them."""
    rid = run_id(catalog, request.path_params["ref"])
    return {"run": rid, "series": series.series_keys(catalog, rid)}


def metric(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/runs/{ref}/metrics/{key}?points=2000: one series, LTTB-downsampled to
    at most `points` (store/series.py); KEY by the rule of every command (match_key)."""
    rid = run_id(catalog, request.path_params["ref"])
    wanted = request.path_params["key"]
    points = bounded_int(request, "points", series.DEFAULT_POINTS, 3, 1_000_000)
    keys = series.series_keys(catalog, rid)
    key = query.match_key(keys, wanted)
    if key is None:
        raise ApiError(f"run {rid} has no metric series '{wanted}'"
                       + (f" (it has: {', '.join(keys[:8])})" if keys else ""), 404)
    return series.metric_points(catalog, rid, key, points)


def telemetry(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/runs/{ref}/telemetry: `telemetry --json` ({run, summary, series})."""
    rid = run_id(catalog, request.path_params["ref"])
    return {"run": rid, "summary": catalog.telemetry_summary(rid),
            "series": catalog.telemetry(rid)}


def diff(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/diff?a=&b=&all=: `diff --json`."""
    params = request.query_params
    for side in ("a", "b"):
        if not params.get(side):
            raise ApiError(f"give both runs to compare: ?a=RUN&b=RUN ({side} is missing)")
    a, b = run_id(catalog, params["a"]), run_id(catalog, params["b"])
    return catalog.diff(a, b, all=params.get("all") in ("1", "true", "yes"))


def lineage(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/lineage?path=&direction=up|down&depth=: `lineage --json`."""
    params = request.query_params
    target = (params.get("path") or "").strip()
    if not target:
        raise ApiError("give a file (path=PATH, PATH@HASH) or a run (path=RUN)")
    direction = params.get("direction") or "up"
    if direction not in ("up", "down"):
        raise ApiError(f"direction must be up or down, not '{direction}'")
    depth = bounded_int(request, "depth", -1, 0, 10_000)
    return catalog.lineage(target, up=direction == "up", depth=None if depth < 0 else depth)


def pipeline(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/pipeline: `pipeline --json`."""
    return catalog.pipeline()


def tags(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/tags: {tag: number of runs carrying it}."""
    return {"tags": catalog.all_tags()}


def status(catalog: Catalog, request: Request) -> dict[str, Any]:
    """GET /api/status: the project and how many runs it has (the pages poll it to show
    new runs as the agent records them)."""
    names, rows = catalog.sql("SELECT count(*), max(run_id), sum(status = 'running') FROM runs")
    total, last, running = rows[0]
    return {"project": str(catalog.project), "runs": total, "last_run": last,
            "running": running or 0, "readonly": True}


def not_found(catalog: Catalog, request: Request) -> dict[str, Any]:
    raise ApiError(f"there is no API endpoint {request.url.path}", 404)


def routes(where: Project) -> list[Route]:
    def route(path: str, func: Callable[[Catalog, Request], Any]) -> Route:
        return Route(path, endpoint(where, func), methods=["GET"])

    return [
        route("/api/runs", runs),
        route("/api/runs/{ref}", run),
        route("/api/runs/{ref}/diff", git_diff),
        route("/api/runs/{ref}/metrics", metric_keys),
        route("/api/runs/{ref}/metrics/{key:path}", metric),
        route("/api/runs/{ref}/telemetry", telemetry),
        route("/api/diff", diff),
        route("/api/lineage", lineage),
        route("/api/pipeline", pipeline),
        route("/api/tags", tags),
        route("/api/status", status),
        route("/api/{rest:path}", not_found),
    ]
