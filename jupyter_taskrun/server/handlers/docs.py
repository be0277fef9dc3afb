"""The API docs page: Swagger UI over the live OpenAPI document, served from the package.

``GET /taskrun/api/docs`` answers a small page (``server/templates/api_docs.html``) that loads
Swagger UI's files from ``/taskrun/api/docs/static/`` (``jupyter_taskrun/static/``: the
``swagger/`` folder is copied from the ``swagger-ui-dist`` npm package at build time by
``labextension/scripts/copy-swagger.mjs``), then reads ``/taskrun/api/openapi.json``. Nothing is
fetched from anywhere else, at build or at run time.

Guarantees:

* both routes are authenticated and authorized like every route (``taskrun`` resource); without
  credentials they answer 403 with the JSON error body, never a login redirect;
* the page's Content-Security-Policy allows scripts, styles and requests from this server only;
* "Try it out" sends the server's XSRF token (``X-XSRFToken``, from the ``_xsrf`` cookie this page
  sets) with the browser's login cookie, so state-changing calls pass jupyter_server's XSRF check;
* without the built Swagger UI files (a source checkout that never ran the build) the page answers
  503 saying how to build them, instead of a blank page.
"""

from __future__ import annotations

import html
import string
from importlib.resources import files
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado import web

from .base import AUTH_RESOURCE, TaskRunHandler, TaskRunHTTPError, log_refusal, scrubbed_summary, write_json_error

#: the package folder served under ``/taskrun/api/docs/static/``
STATIC_DIR = Path(str(files("jupyter_taskrun").joinpath("static")))
#: what the page loads from ``STATIC_DIR`` (the first two are build output)
PAGE_ASSETS = ("swagger/swagger-ui.css", "swagger/swagger-ui-bundle.js", "api-docs.js")
_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "api_docs.html"

#: Swagger UI sets inline styles (React ``style`` attributes) and draws icons as data: images
_PAGE_CSP = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
)


def missing_assets() -> list[str]:
    """The page's files that are not there (empty once the build has copied Swagger UI)."""
    return [name for name in PAGE_ASSETS if not (STATIC_DIR / name).is_file()]


class APIDocsHandler(TaskRunHandler):
    """``/taskrun/api/docs``: the Swagger UI page."""

    @property
    def content_security_policy(self) -> str:
        # JupyterHandler's (frame-ancestors, report-uri; or the user's own header, kept as it is),
        # not APIHandler's "default-src 'none'", which would block the page's own scripts
        base = JupyterHandler.content_security_policy.fget(self)  # type: ignore[attr-defined]
        if "Content-Security-Policy" in self.settings.get("headers", {}):
            return str(base)
        return "; ".join((base, *_PAGE_CSP))

    @web.authenticated
    @authorized
    async def get(self) -> None:
        missing = missing_assets()
        if missing:
            raise TaskRunHTTPError(
                503,
                f"the API docs page needs Swagger UI's files ({', '.join(missing)} missing under {STATIC_DIR}): "
                "build the package (`jlpm build` in labextension/, or `pip install .`); "
                "the OpenAPI document itself is at openapi.json",
                "unavailable",
            )
        api = url_path_join(self.base_url, "taskrun", "api")
        page = string.Template(_TEMPLATE.read_text(encoding="utf-8")).substitute(
            static=html.escape(url_path_join(api, "docs", "static"), quote=True),
            spec_url=html.escape(url_path_join(api, "openapi.json"), quote=True),
            base_url=html.escape(self.base_url, quote=True),
            # reading it sets the _xsrf cookie that "Try it out" sends back as X-XSRFToken
            xsrf_token=html.escape(self.xsrf_token.decode("ascii"), quote=True),
        )
        self.set_header("Cache-Control", "no-store")  # it carries the XSRF token
        self.finish(page, set_content_type="text/html; charset=UTF-8")


class APIDocsStaticHandler(ExtensionHandlerMixin, JupyterHandler, web.StaticFileHandler):
    """``/taskrun/api/docs/static/<file>``: Swagger UI's files and the page's script, behind auth."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, name: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # the folder is fixed here, so the route stays a plain (pattern, handler) pair
        super().initialize(name, *args, path=str(STATIC_DIR), **kwargs)

    def get_login_url(self) -> str:
        # as APIHandler: no login redirect under /taskrun/api, a 403 like every route
        if not self.current_user:
            raise web.HTTPError(403)
        return str(super().get_login_url())

    @web.authenticated
    @authorized
    async def get(self, path: str, include_body: bool = True) -> None:  # type: ignore[override]  # as jupyter_server's
        await web.StaticFileHandler.get(self, path, include_body)

    @web.authenticated
    @authorized
    async def head(self, path: str) -> None:  # type: ignore[override]
        await web.StaticFileHandler.get(self, path, include_body=False)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not write_json_error(self, status_code, kwargs.get("exc_info", (None, None, None))[1]):
            super().write_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if log_refusal(self, value):
            return
        self.log.error("taskrun: uncaught exception %s", scrubbed_summary(self), exc_info=(typ, value, tb))

    def _request_summary(self) -> str:
        return scrubbed_summary(self)


def docs_routes(api: str) -> list[tuple[str, Any]]:
    """The two routes, for ``handlers/__init__.py`` (before its catch-all)."""
    return [(rf"{api}/docs", APIDocsHandler), (rf"{api}/docs/static/(.*)", APIDocsStaticHandler)]
