"""The Starlette application: routes, the read-only catalog of each request, errors."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from onlooker.store.catalog import STORE_DIR, Catalog
from onlooker.store.errors import NoSuchRun, StoreError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class ApiError(Exception):
    """A request the API refuses: `status` and one sentence."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def status_of(err: BaseException) -> int:
    """The HTTP status for a domain error: a run, path or key that is not there is 404,
    any other sentence of the store (a bad filter, an ambiguous key) 400."""
    from onlooker.store.lineage import NotInCatalog

    if isinstance(err, ApiError):
        return err.status
    if isinstance(err, (NoSuchRun, NotInCatalog)):
        return 404
    return 400


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class Json(JSONResponse):
    """JSON as the CLI's `--json` writes it (unknown types as text); a non-finite float,
    which JSON cannot hold, becomes null rather than failing the response."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, default=str, allow_nan=False,
                              separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, default=str,
                              separators=(",", ":"))
        return text.encode("utf-8")


def error_json(message: str, status: int) -> Json:
    return Json({"error": message}, status_code=status)


class Project:
    """The project the server shows; `catalog()` opens its catalog read-only."""

    def __init__(self, project: Path) -> None:
        self.path = Path(project).resolve()
        self.store_dir = self.path / STORE_DIR

    @contextmanager
    def catalog(self) -> Iterator[Catalog]:
        # One connection per request: nothing is shared between threads, and each
        # request reads the newest commit of the agent writing beside us (WAL).
        cat = Catalog(self.store_dir, project=self.path, readonly=True)
        try:
            yield cat
        finally:
            cat.close()


def create_app(project: Path, *, allowed_hosts: list[str] | None = None) -> Starlette:
    """The dashboard of `project` (its `.onlooker/` must exist). `allowed_hosts`: the
    Host headers served (default: localhost only, so that no other web page can read
    the catalog through a DNS name pointed at 127.0.0.1); ["*"] for any."""
    from onlooker.cli.web import api, pages

    where = Project(project)
    with where.catalog():  # fails now, with the store's sentence, if it cannot be read
        pass
    routes = [
        *api.routes(where),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        *pages.routes(where),
    ]
    hosts = allowed_hosts or [*LOCAL_HOSTS]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
        exception_handlers={404: pages.not_found, 405: pages.not_found,
                            Exception: pages.internal_error},
    )
    app.state.project = where
    return app


def bounded_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within [lo, hi], or a 400 saying what it must be."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(f"{name} must be a whole number, not '{text}'") from None
    if not lo <= value <= hi:
        raise ApiError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def run_id(catalog: Catalog, ref: str) -> int:
    """A run reference (`12`, `last`, `-2`, a tag) -> its id, or NoSuchRun (404)."""
    try:
        return int(catalog.resolve_run(ref))
    except NoSuchRun:
        raise
    except StoreError as err:  # a word that is no tag either
        raise NoSuchRun(str(err)) from err
