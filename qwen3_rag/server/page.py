"""The web page at ``/``: search, read a document, chat, look at an index (docs/server.md, "The web page").

Plain HTML, CSS and JavaScript from ``static/``, served as they are (no build step). The page itself holds no
data and answers without the API key; it calls the JSON routes with the key the user gives it. A Content Security
Policy lets only these files run, so document text that slipped into the page as markup still could not execute.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from qwen3_rag.server.errors import APIError

__all__ = ["ASSETS", "router"]

router = APIRouter()

#: The page's files and their media types: the only files served (a name is looked up here, never used as a path).
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> Response:
    data = (files("qwen3_rag.server") / "static" / name).read_bytes()
    return Response(data, media_type=ASSETS[name], headers=_HEADERS)


@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The search page."""
    return _asset("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """The page's script and style sheet."""
    if name not in ASSETS:
        raise APIError(404, f"no file {name!r} here; the page's files are {', '.join(ASSETS)}", "not_found")
    return _asset(name)
