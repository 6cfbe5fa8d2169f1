"""The console's request handlers (see the package doc for the pages).

Every page but the login needs a session (auth.Sessions); every POST is checked for its origin and
CSRF token before anything else is read from it. Jobs are created by the API's own
``create_job_checked``, with the API's errors and status codes; database work and archive
verification run in the web server's worker pool.
"""
from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from host.dm.server.console import fleet
from host.dm.server.console.auth import (COOKIE, ConsoleSession, Sessions, add_security_headers, clear_session_cookie,
                                         csrf_refusal, origin_refusal, same_secret, set_session_cookie)
from host.dm.server.console.diff import ServerKeys, backup_diff, mark_kept_by_restore
from host.errors import SimvaultError, UsageError

HERE = Path(__file__).parent
log = logging.getLogger(__name__)
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
LOGIN_FAILURE_DELAY = 0.3   # seconds: slows token guessing, the failure is audited too
Handler = Callable[[web.Request], Any]
SESSION = web.RequestKey("console_session", ConsoleSession)
FORM = web.RequestKey("console_form", Any)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _safe_next(target: str | None) -> str:
    """Only a path of this console (no open redirect to another site)."""
    if target and target.startswith("/console/") and "//" not in target and "\\" not in target:
        return target
    return "/console/"


class Console:
    def __init__(self, web_server: Any, create_job: Callable[..., dict]) -> None:
        self.web = web_server
        self.create_job = create_job
        self.sessions = Sessions()
        self.keys = ServerKeys()
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=StrictUndefined)
        self.headers_hook = add_security_headers

    def use_server_key(self, directory: Path, name: str = "device") -> list[str]:
        """Decrypt archives wrapped for this key pair (``dm server --server-key DIR``); its key ids."""
        self.keys = ServerKeys.load(directory, name)
        return self.keys.key_ids

    @property
    def secure(self) -> bool:
        return self.web.ssl_context is not None

    @property
    def store(self) -> Any:
        return self.web.server.store

    def routes(self) -> list[web.AbstractRouteDef]:
        g, p = self._session_get, self._session_post
        return [web.get("/console", self.home_redirect), web.get("/console/login", self.login_page),
                web.post("/console/login", self.login), web.post("/console/logout", p(self.logout)),
                web.get("/console/", g(self.fleet_page)), web.get("/console/device", g(self.device_page)),
                web.get("/console/diff", g(self.diff_page)), web.get("/console/restore", g(self.restore_page)),
                web.post("/console/restore", p(self.restore_start)),
                web.post("/console/backup", p(self.backup_start)),
                web.get("/console/jobs/{job_id}", g(self.job_page)),
                web.get("/console/jobs/{job_id}/state", g(self.job_state)),
                web.get("/console/audit", g(self.audit_page)),
                web.static("/console/static", HERE / "static", show_index=False)]

    # ------------------------------------------------------------ plumbing
    async def _run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.web.pool, lambda: fn(*args, **kwargs))

    def page(self, request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
        session = request.get(SESSION)
        html = self.env.get_template(template).render(csrf=session.csrf if session else "",
                                                      logged_in=session is not None, **ctx)
        return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")

    def message(self, request: web.Request, status: int, title: str, text: str,
                back: str | None = None) -> web.Response:
        return self.page(request, "message.html", status=status, title=title, message=text, back=back)

    def _session_get(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                if request.headers.get("HX-Request"):
                    return web.Response(status=401, text="the console session ended: log in again")
                return _see_other("/console/login?next=" + quote(request.path_qs, safe=""))
            request[SESSION] = session
            return await handler(request)
        return guarded

    def _session_post(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = self.sessions.get(request.cookies.get(COOKIE))
            refusal, status = origin_refusal(request), 403
            if refusal is None and session is None:
                refusal, status = "you are not logged in (or the session ended): log in again", 401
            form = await request.post() if refusal is None else {}
            if refusal is None:
                refusal = csrf_refusal(session, str(form.get("csrf") or ""))  # type: ignore[arg-type]
            if refusal is not None:
                await self._run(self.store.audit, "console.refused", None, f"POST {request.path}: {refusal}")
                return self.message(request, status, "Refused", refusal, back="/console/")
            request[SESSION], request[FORM] = session, form
            return await handler(request)
        return guarded

    async def _start_job(self, request: web.Request, device_id: str, kind: str, target: str,
                         **kw: Any) -> web.Response:
        """create_job_checked, with the status codes of POST /api/jobs; on success the job's page."""
        back = "/console/device?id=" + quote(device_id, safe="")
        try:
            job = await self._run(self.create_job, self.web.server, device_id, kind, target, **kw)
        except (KeyError, ValueError, TypeError) as exc:
            return self.message(request, 400, "Bad request", f"bad request: {exc}", back)
        except UsageError as exc:
            return self.message(request, 400, "Not started", str(exc), back)
        except SimvaultError as exc:
            return self.message(request, 404, "Not started", str(exc), back)
        except Exception:  # noqa: BLE001 - the operator gets a page that says where to look, not a trace
            log.exception("console: starting a %s job for %s failed", kind, device_id[:128])
            return self.message(request, 500, "Failed", "the server failed while starting the job; "
                                "if it was created it is listed under the device's jobs with its state", back)
        return _see_other(f"/console/jobs/{job['id']}")

    # ------------------------------------------------------------ login
    async def home_redirect(self, request: web.Request) -> web.Response:
        return _see_other("/console/")

    async def login_page(self, request: web.Request) -> web.Response:
        return self.page(request, "login.html", next=_safe_next(request.query.get("next")), error="",
                         enabled=bool(self.web.admin_token))

    async def login(self, request: web.Request) -> web.Response:
        refusal = origin_refusal(request)
        if refusal is not None:
            await self._run(self.store.audit, "console.refused", None, f"POST /console/login: {refusal}")
            return self.message(request, 403, "Refused", refusal, back="/console/login")
        form = await request.post()
        target = _safe_next(str(form.get("next") or ""))
        if not self.web.admin_token:
            return self.page(request, "login.html", status=403, next=target, enabled=False,
                             error="the console is off: start the server with --admin-token "
                                   "(or $SIMVAULT_DM_ADMIN_TOKEN)")
        if not same_secret(str(form.get("token") or ""), self.web.admin_token):
            await self._run(self.store.audit, "console.login_failed", None, f"from {request.remote}")
            await asyncio.sleep(LOGIN_FAILURE_DELAY)
            return self.page(request, "login.html", status=401, next=target, enabled=True,
                             error="wrong admin token: give the token the server was started with "
                                   "(--admin-token or $SIMVAULT_DM_ADMIN_TOKEN)")
        sid, _session = self.sessions.new()
        await self._run(self.store.audit, "console.login", None, f"from {request.remote}")
        response = _see_other(target)
        set_session_cookie(response, sid, secure=self.secure, ttl=self.sessions.ttl)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.drop(request.cookies.get(COOKIE))
        response = _see_other("/console/login")
        clear_session_cookie(response, secure=self.secure)
        return response

    # ------------------------------------------------------------ pages
    async def fleet_page(self, request: web.Request) -> web.Response:
        devices = await self._run(fleet.fleet, self.store)
        return self.page(request, "fleet.html", devices=devices, key_ids=self.keys.key_ids)

    async def _device(self, request: web.Request, device_id: str) -> dict | web.Response:
        if not device_id:
            return self.message(request, 400, "No device", "give a device: /console/device?id=DEVICE",
                                back="/console/")
        dev = await self._run(fleet.device, self.store, device_id)
        if dev is None:
            return self.message(request, 404, "Unknown device", f"device {device_id[:128]} is not registered; "
                                "the fleet page lists the registered ones", back="/console/")
        return dev

    async def device_page(self, request: web.Request) -> web.Response:
        dev = await self._device(request, request.query.get("id", ""))
        if isinstance(dev, web.Response):
            return dev
        ds_accounts = await self._run(_ds_account_names, self.store)
        return self.page(request, "device.html", d=dev, ds_accounts=ds_accounts)

    def _backup_ids(self, request: web.Request, *names: str) -> list[str] | web.Response:
        values = [request.query.get(n, "").strip().lower() for n in names]
        bad = [n for n, v in zip(names, values) if not _HEX.match(v)]
        if bad:
            back = "/console/device?id=" + quote(request.query.get("device", ""), safe="")
            return self.message(request, 400, "Bad backup id", f"{', '.join(bad)}: give a backup id (hex, as "
                                "listed on the device page)", back)
        return values

    async def diff_page(self, request: web.Request) -> web.Response:
        dev = await self._device(request, request.query.get("device", ""))
        if isinstance(dev, web.Response):
            return dev
        ids = self._backup_ids(request, "a", "b")
        if isinstance(ids, web.Response):
            return ids
        result = await self._run(backup_diff, self.store, dev["id"], ids[0], ids[1], self.keys)
        return self.page(request, "diff.html", d=dev, r=result)

    async def restore_page(self, request: web.Request) -> web.Response:
        """The preview: from the device's newest server backup to the one to restore, then a confirm form."""
        dev = await self._device(request, request.query.get("device", ""))
        if isinstance(dev, web.Response):
            return dev
        ids = self._backup_ids(request, "backup")
        if isinstance(ids, web.Response):
            return ids
        source = request.query.get("source", "server")
        if source not in ("server", "card", "ds"):
            return self.message(request, 400, "Bad source", f"source {source[:20]!r}: server, card or ds",
                                back="/console/device?id=" + quote(dev["id"], safe=""))
        newest = max(dev["server_backups"], key=lambda b: b["sequence"] or 0, default=None)
        result = None
        if newest is not None:
            result = await self._run(backup_diff, self.store, dev["id"], newest["backup_id"], ids[0], self.keys)
            mark_kept_by_restore(result["rows"] or [])
        accounts = await self._run(_ds_accounts_for, self.store, dev, ids[0]) if source == "ds" else []
        return self.page(request, "restore.html", d=dev, backup_id=ids[0], source=source, newest=newest,
                         r=result if source == "server" else None, ds_accounts=accounts)

    async def restore_start(self, request: web.Request) -> web.Response:
        form = request[FORM]
        device_id, backup_id = str(form.get("device") or ""), str(form.get("backup_id") or "").lower()
        if form.get("confirm") != "yes":
            return self.message(request, 400, "Not confirmed", "a restore starts from its preview page: "
                                "open the backup's Restore link and confirm there",
                                back="/console/device?id=" + quote(device_id, safe=""))
        source = str(form.get("source") or "server")
        if source == "ds":
            account = str(form.get("ds_account") or "")
            if not account:
                return self.message(request, 400, "Not started", "a restore from DS needs the DS account that "
                                    "reaches the backup: choose one on the preview page",
                                    back="/console/device?id=" + quote(device_id, safe=""))
            return await self._start_job(request, device_id, "restore_via_ds", "ds", backup_id=backup_id or None,
                                         params={"account": account})
        return await self._start_job(request, device_id, "restore", source, backup_id=backup_id or None)

    async def backup_start(self, request: web.Request) -> web.Response:
        form = request[FORM]
        device_id, target = str(form.get("device") or ""), str(form.get("target") or "server")
        scope = str(form.get("scope") or "").strip() or None
        account = str(form.get("ds_account") or "")
        if target == "ds":
            return await self._start_job(request, device_id, "backup_via_ds", "ds", scope=scope,
                                         params={"account": account} if account else None)
        return await self._start_job(request, device_id, "backup", target, scope=scope)

    async def _job(self, request: web.Request) -> dict | web.Response:
        try:
            job_id = int(request.match_info["job_id"])
        except ValueError:
            return self.message(request, 400, "Bad job", "a job number is an integer", back="/console/")
        core = self.web.server
        job = await self._run(fleet.job, self.store, job_id, renotify_after=core.renotify_after,
                              notified_timeout=core.notified_timeout, running_timeout=core.running_timeout)
        if job is None:
            return self.message(request, 404, "Unknown job", f"job {job_id} not found", back="/console/")
        return job

    async def job_page(self, request: web.Request) -> web.Response:
        job = await self._job(request)
        return job if isinstance(job, web.Response) else self.page(request, "job.html", j=job)

    async def job_state(self, request: web.Request) -> web.Response:
        """The fragment htmx polls; once the job is final it has no trigger, so polling stops."""
        job = await self._job(request)
        return job if isinstance(job, web.Response) else self.page(request, "_job_state.html", j=job)

    async def audit_page(self, request: web.Request) -> web.Response:
        device_id = request.query.get("device", "")[:128] or None
        rows = await self._run(fleet.audit, self.store, device_id)
        return self.page(request, "audit.html", rows=rows, device_id=device_id or "")


def _ds_account_names(store: Any) -> list[str]:
    return [a["name"] for a in _ds_accounts(store)]


def _ds_accounts(store: Any) -> list[dict[str, Any]]:
    try:
        from host.dm.server.ds_accounts import ds_accounts
    except ImportError:   # the DS part is optional
        return []
    return ds_accounts(store)


def _ds_accounts_for(store: Any, dev: dict[str, Any], backup_id: str) -> list[str]:
    """Account names, those on the DS server and user the backup was recorded with first."""
    row = next((b for b in dev["backups"] if b["kind"] == "ds" and b["backup_id"] == backup_id), None)
    accounts = _ds_accounts(store)
    def matches(a: dict[str, Any]) -> bool:
        return row is not None and (a["url"], a["username"]) == (row["ds_url"], row["ds_user"])
    return [a["name"] for a in sorted(accounts, key=lambda a: not matches(a))]
