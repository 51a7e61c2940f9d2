"""The HTML pages: one shell per page (templates/page.html) that static/app.js fills from
the API; a page that cannot be shown (an unknown run, a bad comparison) is a page with
one sentence and its HTTP status, never a traceback."""

from __future__ import annotations

import functools
import html
import json
import logging
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from onlooker.cli.web.app import Json, Project, error_json, run_id, status_of
from onlooker.store import query
from onlooker.store.errors import StoreError

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).parent / "templates" / "page.html"
MAX_COMPARE = 50


@functools.lru_cache(maxsize=1)
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onlooker")
    except PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "dev"


def _boot_json(data: dict[str, Any]) -> str:
    # inside <script>: no "</script>" or "<!--" can close or open anything
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


def render(project: str, page: str, title: str, boot: dict[str, Any] | None = None,
           body: str = "", status: int = 200) -> HTMLResponse:
    text = _template()
    for name, value in (("title", html.escape(title)), ("page", html.escape(page)),
                        ("project", html.escape(project)), ("version", _version()),
                        ("boot", _boot_json({"page": page, **(boot or {})})),
                        ("body", body or "<noscript>The dashboard needs JavaScript.</noscript>")):
        text = text.replace("{{" + name + "}}", value)
    return HTMLResponse(text, status_code=status)


def error_page(project: str, message: str, status: int) -> HTMLResponse:
    title = "Not found" if status == 404 else "Cannot show this page" if status < 500 \
        else "Something went wrong"
    body = (f'<section class="card error-page"><h1>{html.escape(title)}</h1>'
            f'<p class="sentence">{html.escape(message)}</p>'
            '<p><a href="/">Back to the runs</a></p></section>')
    return render(project, "error", title, {"error": message}, body=body, status=status)


def _project_name(request: Request) -> str:
    where = getattr(request.app.state, "project", None)
    return str(where.path) if where is not None else ""


def page(where: Project, name: str, title: str, prepare: Any = None) -> Any:
    """A page route: `prepare(catalog, request)` checks what the page needs (a run
    that exists) and returns its boot data; a domain error is the error page."""

    def handle(request: Request) -> Response:
        boot: dict[str, Any] = {}
        try:
            with where.catalog() as catalog:
                if prepare is not None:
                    boot = prepare(catalog, request)
        except StoreError as err:
            return error_page(str(where.path), " ".join(str(err).split()), status_of(err))
        label = boot.pop("title", title) if isinstance(boot, dict) else title
        return render(str(where.path), name, label, boot)

    handle.__name__ = f"{name}_page"
    return handle


def _runs(catalog: Any, request: Request) -> dict[str, Any]:
    # A filter in the address that does not parse is said at once, inline, by the page
    # (the API gives the same sentence); it is no reason to refuse the page.
    boot: dict[str, Any] = {}
    for text in request.query_params.getlist("where"):
        try:
            query.parse(text)
        except query.QueryError as err:
            boot["error"] = str(err)
    return boot


def _run(catalog: Any, request: Request) -> dict[str, Any]:
    from onlooker.store.series import series_keys

    rid = run_id(catalog, request.path_params["ref"])
    # the series' keys come with the page, so that its charts are asked for at once
    return {"run": rid, "title": f"Run {rid}", "series": series_keys(catalog, rid)}


def _compare(catalog: Any, request: Request) -> dict[str, Any]:
    refs = [r.strip() for r in (request.query_params.get("runs") or "").split(",")
            if r.strip()]
    ids = list(dict.fromkeys(run_id(catalog, r) for r in refs))
    if not 2 <= len(ids) <= MAX_COMPARE:
        raise _PageError(f"compare needs 2 to {MAX_COMPARE} different runs (runs=1,2,...);"
                         f" {len(ids)} given")
    return {"runs": ids, "title": "Compare " + ", ".join(map(str, ids[:6]))
            + (" …" if len(ids) > 6 else "")}


class _PageError(StoreError):
    """A page asked for in a way it cannot be shown (400)."""


def _lineage(catalog: Any, request: Request) -> dict[str, Any]:
    params = request.query_params
    return {"path": params.get("path") or "", "direction": params.get("direction") or "up"}


async def not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    message = ("there is no such page" if status == 404
               else f"{request.method} is not allowed here")
    if request.url.path.startswith("/api/"):
        return error_json(f"{message}: {request.url.path}", status)
    return error_page(_project_name(request), f"{message}: {request.url.path}", status)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("error serving %s", request.url.path, exc_info=exc)
    message = f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
    if request.url.path.startswith("/api/"):
        return Json({"error": message}, status_code=500)
    return error_page(_project_name(request), message, 500)


def routes(where: Project) -> list[Route]:
    return [
        Route("/", page(where, "runs", "Runs", _runs), methods=["GET"]),
        Route("/runs/{ref}", page(where, "run", "Run", _run), methods=["GET"]),
        Route("/compare", page(where, "compare", "Compare", _compare), methods=["GET"]),
        Route("/pipeline", page(where, "pipeline", "Pipeline"), methods=["GET"]),
        Route("/lineage", page(where, "lineage", "Lineage", _lineage), methods=["GET"]),
    ]
