"""`onlooker ui`: the dashboard, a JSON API over store/ and the pages that draw it.

- `app.create_app(project)`: the Starlette application (api.py: the JSON API,
  mirroring the CLI's `--json`; pages.py: the HTML pages, one shell each, drawn by the
  scripts under static/).
- `server.Dashboard`: binds the socket (a port in use is one sentence) and serves
  with uvicorn, in the foreground (the command) or in a thread (tests, benchmarks).

Every request opens the catalog read-only for itself (about a millisecond), so the
server never writes, never holds a transaction between requests, and each request
sees the newest commit of an agent writing beside it.
"""

from __future__ import annotations
