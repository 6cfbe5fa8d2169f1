"""The operator's web console at /console, served by the DM server (same port, same TLS).

Server-rendered Jinja2 templates (autoescaped) and one vendored script, htmx (static/, 0BSD),
which only polls a running job's state; every page works without it. Log in with the admin token.

    add_console_routes(app, web, create_job)  # host.dm.server.webapp registers it in one line
    web.console.use_server_key(DIR)           # dm server --server-key DIR: diffs of archives it opens

Pages (GET unless said): /console/ the fleet, /console/device?id=ID, /console/diff?device=&a=&b=,
/console/restore?device=&backup=&source= (preview, then POST confirms), POST /console/backup,
/console/jobs/N (live), /console/audit, /console/login (GET, POST), POST /console/logout.
"""
from __future__ import annotations

from typing import Any, Callable

from aiohttp import web


def add_console_routes(app: web.Application, web_server: Any, create_job: Callable[..., dict]) -> Any:
    """Add the console to the DM server's app; ``create_job`` is the API's checked job creation
    (host.dm.server.webapp.create_job_checked), so bad input gets the same errors on both."""
    from host.dm.server.console.views import Console
    console = Console(web_server, create_job)
    app.add_routes(console.routes())
    app.on_response_prepare.append(console.headers_hook)
    return console
