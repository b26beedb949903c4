"""The console's web pages: overview, request explorer, keys, pipeline, at ``/-/dashboard``.

No build step: plain HTML, CSS and one JavaScript module shipped as package data
(``hookgate/plugins/data/console/``). Every page is the same shell; the script renders the
page its path names and fetches its numbers from the admin API, again every
``dashboard_refresh_s`` while the tab is visible (live updates without reload).

Who sees what:

* a page (``/-/dashboard``, ``/-/dashboard/requests``, ``/-/dashboard/keys``,
  ``/-/dashboard/pipeline``) calls :func:`hookgate.web.require_admin` like every admin route:
  an admin session cookie (or an admin key) gets the page; no credential gets a 401 with the
  login form; a non-admin key gets a 403. The login form posts the admin key to the
  ``api_keys`` plugin's ``POST /-/api/session``, which sets the HttpOnly, SameSite=Strict
  session cookie (docs/console.md has the security model);
* the static assets (``/-/dashboard/assets/…``) are code without data and are public;
* pages and assets are sent with a strict Content-Security-Policy (scripts and styles from this
  origin only, no inline script, no framing), so a model name or a key's metadata, which clients
  and admins choose, can never run as script: the script also only ever writes them as text.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib.resources import files
from typing import Mapping

from aiohttp import web

from hookgate import AuthenticationFailed, GatewayError, PermissionDenied
from hookgate.web import require_admin

__all__ = ["Dashboard", "PAGES", "ASSETS", "SECURITY_HEADERS"]

PAGES = ("", "/requests", "/keys", "/pipeline")
"""The dashboard's pages, under ``/-/dashboard``."""
ASSETS: Mapping[str, str] = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
"""The shipped assets and their content types (served from ``/-/dashboard/assets/``)."""
BASE = "/-/dashboard"
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class _Assets:
    shell: str
    files: Mapping[str, bytes]


class Dashboard:
    """Serves the shell page and the assets; the data comes from the admin API."""

    def __init__(self, *, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self._assets: _Assets | None = None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for page in PAGES:
            router.add_get(BASE + page, self.page)
        for name in ASSETS:
            router.add_get(f"{BASE}/assets/{name}", self.asset)

    async def load(self) -> None:
        """Read the shipped files (off the event loop, once per pipeline)."""
        self._assets = await asyncio.to_thread(_read_assets)

    async def page(self, request: web.Request) -> web.Response:
        """A page for an admin; the login form (401) or a refusal (403) for anyone else."""
        view = "app"
        status, headers = 200, {}
        try:
            await require_admin(request)
        except AuthenticationFailed as refused:
            view, status, headers = "login", 401, dict(refused.headers)
        except PermissionDenied:
            view, status = "denied", 403
        except GatewayError as problem:  # e.g. the key store is unreachable: say so, do not 500
            view, status = "unavailable", problem.status
        html = self._loaded().shell.replace("{{view}}", view).replace("{{refresh_ms}}", str(int(self.refresh_s * 1000)))
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers={**SECURITY_HEADERS, **headers})

    async def asset(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        body = self._loaded().files[name]  # only the names in ASSETS have routes
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return web.Response(body=body, content_type=ASSETS[name], headers=headers)

    def _loaded(self) -> _Assets:
        if self._assets is None:
            raise GatewayError("The dashboard is still starting.", status=503, code="dashboard_starting")
        return self._assets


def _read_assets() -> _Assets:
    folder = files("hookgate.plugins").joinpath("data", "console")
    return _Assets(
        shell=folder.joinpath("index.html").read_text(encoding="utf-8"),
        files={name: folder.joinpath(name).read_bytes() for name in ASSETS},
    )
