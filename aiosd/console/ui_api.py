"""GET /ui: the dashboard's static files, shipped in the package (aiosd/console/ui/), no build step.

The page asks for a user token and sends it as a bearer header on every API call (no cookies), so a
page of another site cannot act for the user; the API also refuses cross-origin writes (api/auth.py).
The Content-Security-Policy allows only this origin's scripts: no inline script runs.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from aiosd.api.routes import ApiProblem, Route

UI_DIR = Path(__file__).with_name("ui")
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                                      "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                      "base-uri 'none'; form-action 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def ui_routes() -> list[Route]:
    files = {p.name: (p.read_bytes(), TYPES[p.suffix]) for p in sorted(UI_DIR.iterdir()) if p.suffix in TYPES}

    def answer(name: str) -> web.Response:
        if name not in files:
            raise ApiProblem(404, "not_found", f"no dashboard file {name!r}", "name")
        body, ctype = files[name]
        return web.Response(body=body, content_type=ctype, headers=HEADERS)

    async def h_root(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def h_index(_: web.Request) -> web.StreamResponse:
        return answer("index.html")

    async def h_file(request: web.Request) -> web.StreamResponse:
        return answer(request.match_info["name"])

    return [
        Route("GET", "/ui", h_root, "the dashboard (redirects to /ui/)", tag="console", role="viewer"),
        Route("GET", "/ui/", h_index, "the dashboard page (static; logs in with a user token)", tag="console",
              role="viewer"),
        Route("GET", "/ui/{name}", h_file, "the dashboard's static files", tag="console", role="viewer"),
    ]


__all__ = ["UI_DIR", "ui_routes"]
