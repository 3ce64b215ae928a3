"""The pages a browser loads: the dashboard, its static files, and the interactive API docs.

Every page is served under a Content-Security-Policy without inline script. The docs
use Swagger UI from the installed ``swagger-ui-bundle-v2`` package (never a CDN); only
their route allows inline styles and ``data:`` images, which Swagger UI needs to draw.
"""

from __future__ import annotations

from importlib import resources as package
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from .edge import error

router = APIRouter(include_in_schema=False)

DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                 "connect-src 'self'; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'")
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
_STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css",
           "util.js": "text/javascript", "charts.js": "text/javascript",
           "detail.js": "text/javascript", "schedules.js": "text/javascript",
           "docs.js": "text/javascript"}
_SWAGGER = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>raytasks API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<script src="/docs/swagger-ui-bundle.js" defer></script>
<script src="/static/docs.js" defer></script>
</head>
<body>
<p id="docs-note"></p>
<div id="swagger-ui"></div>
</body>
</html>
"""


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def _file(name: str) -> bytes:
    return package.files("raytasks.server").joinpath("static", name).read_bytes()


@router.get("/", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    html = package.files("raytasks.server").joinpath("dashboard.html").read_text()
    return HTMLResponse(html, headers={"Content-Security-Policy": DASHBOARD_CSP})


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:  # a fixed set of files: no name reaches the file system
        return error(404, "NotFound", "no such file")
    return Response(_file(name), media_type=_STATIC[name],
                    headers={"Cache-Control": "no-cache"})


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> Response:
    """Swagger UI over ``/openapi.json`` (signed in on the dashboard, or with a token)."""
    if _swagger_dir() is None:
        return error(404, "NotFound", "the API docs need the swagger-ui-bundle-v2 package")
    return HTMLResponse(_DOCS_PAGE, headers={"Content-Security-Policy": DOCS_CSP})


@router.get("/docs/{name}")
async def docs_asset(name: str) -> Response:
    root = _swagger_dir()
    if root is None or name not in _SWAGGER:  # a fixed set of files, as above
        return error(404, "NotFound", "no such file")
    return Response((root / name).read_bytes(), media_type=_SWAGGER[name],
                    headers={"Cache-Control": "max-age=3600"})
