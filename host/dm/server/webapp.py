"""The DM server over HTTP (aiohttp): the DM endpoint, the admin JSON API, the job ticker.

Routes
    POST /dm                 application/vnd.syncml.dm+xml or +wbxml (or the plain SyncML types
                             application/vnd.syncml+xml / +wbxml stock clients send), answered in the
                             same (x-syncml-hmac honoured); more paths with paths=[...] (dm server --path)
    GET  /api/devices        GET /api/backups[?device=ID][&location=all]   GET /api/jobs[?device=ID&state=S]
                             (location=all: server, card and DS backups, host.dm.server.backup_index)
    DELETE /api/devices/<id>[?purge=1]   remove a device (its server backups kept unless purge)
    GET  /api/jobs/<id>      (with its results)
    POST /api/jobs           {"device": ID, "kind": "backup"|"restore"|"delete"|..., "target": ...,
                              "scope": "./A ./B", "backup_id": HEX, "params": {...}}
                             backup/restore target server: params {"mode": "auto"|"agent"|"standard"},
                              restore {"dry_run": true} (agentless: docs/DM.md "Devices without simvault")
                             firmware_update: {"device": ID, "kind": "firmware_update",
                              "params": {"node": "./FUMO/x"}} (target "device"; default node ./FUMO/FwUpdate)
    POST /api/devices        {"device": ID, "password": P, "server_password": SP, "auth": "hmac"|"md5"|"basic",
                              "user": NAME (default ID), "public_key_pem": PEM, "enc_key_pem": PEM,
                              "notify_url": URL}
    PUT  /api/devices/<id>/enc-key  {"enc_key_pem": PEM}   register or replace the device's encryption
                             key: the DS credentials of its DS jobs are sealed to it (host.backup.sealed)
    GET  /api/ds-accounts    POST /api/ds-accounts {"name", "url", "user", "password", "datastore"?, "auth"?}
                             (DS credentials for BackupViaDS jobs, whose params name account=NAME; encrypted at rest)
                             a DS job may give params {"account": NAME[, "mode": "refresh"]} instead of "data":
                             the server fills url/user/datastore from the account (restore: newest DS backup
                             unless backup_id)
    GET  /api/health
    GET  /metrics            Prometheus text format: devices, sessions, jobs by kind and state, stored
                             backups and their bytes, auth failures (host.dm.server.metrics)

The admin API needs ``Authorization: Bearer <token>`` (--admin-token or
SIMVAULT_DM_ADMIN_TOKEN); without a configured token it answers 403. The
session engine and the database run in a thread pool (one worker for SQLite,
whose writers serialise anyway), so the event loop only moves bytes.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from host.dm.server.console import add_console_routes
from host.dm.server import access_log
from host.dm.server.auth import warn_basic_at_start
from host.dm.server.db import Store
from host.dm.server.notifier import HttpNotifier  # noqa: F401 - importable from here as before
from host.dm.server.registry import register_device, set_enc_key
from host.dm.server.engine import CONTENT_TYPES, DMServer, Reply
from host.errors import SimvaultError, UsageError

log = logging.getLogger(__name__)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, default=str, sort_keys=True),
                        content_type="application/json")


class DMWebServer:
    """aiohttp application around a DMServer; ``start()``/``stop()`` inside a running loop."""

    def __init__(self, server: DMServer, *, host: str = "127.0.0.1", port: int = 0,
                 admin_token: str | None = None, tick_interval: float = 1.0,
                 workers: int | None = None, body_timeout: float = 30.0, shutdown_timeout: float = 0.5,
                 ssl_context: ssl.SSLContext | None = None, paths: list[str] | tuple[str, ...] = ("/dm",)) -> None:
        self.server = server
        self.paths = check_paths(paths)
        self.ssl_context = ssl_context  # host.tls.server_context: https for /dm and /api
        server.tls = ssl_context is not None
        self.body_timeout = body_timeout  # a client that trickles its body is cut off (408)
        # how long stop() lets requests in flight finish: a device whose message is cut off sends it
        # again in a new session; 5 s here kept the server up that long after SIGTERM for one slow client
        self.shutdown_timeout = shutdown_timeout
        self.host, self.port = host, port
        self.admin_token = admin_token
        self.tick_interval = tick_interval
        sqlite = server.store.dialect == "sqlite"
        self.pool = ThreadPoolExecutor(max_workers=workers or (2 if sqlite else 4),
                                       thread_name_prefix="dm-worker")
        self.app = web.Application(client_max_size=server.max_request_bytes)
        self.app.add_routes([web.post(path, self.handle_dm) for path in self.paths] + [
            web.get("/api/health", self.health),
            web.get("/metrics", self.metrics),
            web.get("/api/devices", self.api_devices),
            web.post("/api/devices", self.api_add_device),
            web.delete("/api/devices/{device_id}", self.api_remove_device),
            web.put("/api/devices/{device_id}/enc-key", self.api_set_enc_key),
            web.get("/api/backups", self.api_backups),
            web.get("/api/ds-accounts", self.api_ds_accounts),
            web.post("/api/ds-accounts", self.api_set_ds_account),
            web.get("/api/jobs", self.api_jobs),
            web.get("/api/jobs/{job_id}", self.api_job),
            web.post("/api/jobs", self.api_create_job),
        ])
        self.console = add_console_routes(self.app, self, create_job_checked)  # /console (its own package)
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.server.server_uri = f"{self.url}{self.paths[0]}"
        warn_basic_at_start(self.server.auth)
        self._ticker = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
        if self._runner:
            await self._runner.cleanup()
        # queued work is dropped; what runs (a message, a tick) finishes so the database stays whole
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.pool.shutdown(wait=True,
                                                                                          cancel_futures=True))
        self.server.close()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self.pool, self.server.tick)
            except Exception as exc:  # noqa: BLE001 - the ticker must survive a bad tick
                log.warning("tick failed: %s", exc)
            await asyncio.sleep(self.tick_interval)

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # ------------------------------------------------------------ DM endpoint
    async def handle_dm(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response, reply, size = await self._dm_reply(request)
        out = len(response.body) if isinstance(response.body, (bytes, bytearray)) else 0
        access_log.record(request.path, response.status, size, out, started,
                          **({"device_id": reply.device_id, "session_id": reply.session_id,
                              "msg_id": reply.msg_id} if reply is not None else {}))
        return response

    async def _dm_reply(self, request: web.Request) -> tuple[web.Response, Reply | None, int]:
        """(response, the engine's reply when it ran, bytes received)."""
        ctype = (request.content_type or "").lower()
        size = request.content_length or 0
        if ctype not in CONTENT_TYPES:
            text = f"expected {' or '.join(CONTENT_TYPES)}, got {ctype or 'nothing'}"
            return web.Response(status=415, text=text), None, size
        if size > self.server.max_request_bytes:
            return web.Response(status=413, text="message exceeds the server's MaxMsgSize"), None, size
        try:
            body = await asyncio.wait_for(request.read(), timeout=self.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="message exceeds the server's MaxMsgSize"), None, size
        except asyncio.TimeoutError:
            log.info("a DM client sent its body too slowly; dropped after %.0f s", self.body_timeout)
            return web.Response(status=408, text=f"request body not received within {self.body_timeout:.0f} s",
                                headers={"Connection": "close"}), None, size
        headers = {k: v for k, v in request.headers.items()}
        try:
            reply = await self._run(lambda: self.server.handle_message(body, headers,
                                                                       local_uri=self.url + request.path))
        except SimvaultError as exc:
            return web.Response(status=400, text=str(exc)), None, len(body)
        except Exception:  # noqa: BLE001 - never a traceback to the device
            log.exception("DM message handling failed")
            return web.Response(status=500, text="internal error"), None, len(body)
        if reply.http_status != 200:
            return web.Response(status=reply.http_status, text=reply.text or ""), reply, len(body)
        return web.Response(status=200, body=reply.body, headers=reply.headers), reply, len(body)

    # ------------------------------------------------------------ admin API
    def _authorised(self, request: web.Request) -> web.Response | None:
        if not self.admin_token:
            return _json({"error": "admin API disabled: start the server with --admin-token"}, 403)
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.admin_token.encode()):
            return _json({"error": "missing or wrong admin token"}, 401)
        return None

    async def health(self, request: web.Request) -> web.Response:
        return _json({"ok": True, "db": self.server.store.dialect,
                      "open_sessions": self.server.open_sessions()})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format (host.dm.server.metrics); the admin token as a Bearer token."""
        from host.dm.server import metrics
        denied = self._authorised(request)
        if denied:
            return denied
        body = await self._run(metrics.render, self.server.store, self.server.open_sessions())
        return web.Response(text=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def api_devices(self, request: web.Request) -> web.Response:
        return self._authorised(request) or _json(await self._run(self.server.store.devices))

    async def api_add_device(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        try:
            body = await request.json()
            row = await self._run(lambda: register_device(
                self.server.store, self.server.server_id, body["device"], body["password"],
                body["server_password"], auth_type=body.get("auth", "hmac"), username=body.get("user"),
                min_password_length=self.server.min_password_length,
                public_key_pem=(body.get("public_key_pem") or "").encode() or None,
                enc_key_pem=(body.get("enc_key_pem") or "").encode() or None,
                notify_url=body.get("notify_url")))
        except (KeyError, ValueError, TypeError) as exc:
            return _json({"error": f"bad request: {exc}"}, 400)
        except SimvaultError as exc:
            return _json({"error": str(exc)}, 409)
        return _json(row, 201)

    async def api_set_enc_key(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        device_id = request.match_info["device_id"]
        try:
            pem = str((await request.json())["enc_key_pem"]).encode()
        except (KeyError, ValueError, TypeError) as exc:
            return _json({"error": f"bad request: {exc}"}, 400)
        if await self._run(self.server.store.device, device_id) is None:
            return _json({"error": f"device {device_id[:128]} is not registered"}, 404)
        try:
            row = await self._run(set_enc_key, self.server.store, device_id, pem)
        except SimvaultError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(row)

    async def api_remove_device(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        purge = request.query.get("purge", "") in ("1", "true", "yes")
        try:
            out = await self._run(lambda: self.server.remove_device(request.match_info["device_id"], purge=purge))
        except SimvaultError as exc:
            return _json({"error": str(exc)}, 404)
        return _json(out)

    async def api_ds_accounts(self, request: web.Request) -> web.Response:
        from host.dm.server.ds_accounts import ds_accounts
        return self._authorised(request) or _json(await self._run(ds_accounts, self.server.store))

    async def api_set_ds_account(self, request: web.Request) -> web.Response:
        """{"name", "url", "user", "password", "datastore"?, "auth"?}: the password is stored encrypted."""
        from host.dm.server.ds_accounts import set_ds_account
        denied = self._authorised(request)
        if denied:
            return denied
        try:
            body = await request.json()
            row = await self._run(lambda: set_ds_account(
                self.server.store, body["name"], body["url"], body["user"], body["password"],
                datastore=body.get("datastore", "backup"), auth=body.get("auth", "md5")))
        except (KeyError, ValueError, TypeError) as exc:
            return _json({"error": f"bad request: missing or bad {type(exc).__name__}"}, 400)  # never echo the body
        except SimvaultError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(row, 201)

    async def api_backups(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        if request.query.get("location") == "all":
            from host.dm.server.backup_index import all_backups
            return _json(await self._run(all_backups, self.server.store, request.query.get("device")))
        return _json(await self._run(self.server.store.backups, request.query.get("device")))

    async def api_jobs(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        states = tuple(s for s in request.query.get("state", "").split(",") if s) or None
        return _json(await self._run(lambda: self.server.store.jobs(request.query.get("device"), states)))

    async def api_job(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        try:
            job_id = int(request.match_info["job_id"])
        except ValueError:
            return _json({"error": "job id must be an integer"}, 400)
        job = await self._run(self.server.store.job, job_id)
        if job is None:
            return _json({"error": f"job {job_id} not found"}, 404)
        job["results"] = await self._run(self.server.store.results, job_id)
        return _json(job)

    async def api_create_job(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        try:
            body = await request.json()
            job = await self._run(lambda: create_job_checked(
                self.server, body["device"], body["kind"], body.get("target", "server"),
                scope=body.get("scope"), backup_id=body.get("backup_id"), params=body.get("params")))
        except (KeyError, ValueError, TypeError) as exc:
            return _json({"error": f"bad request: {exc}"}, 400)
        except UsageError as exc:
            return _json({"error": str(exc)}, 400)
        except SimvaultError as exc:
            return _json({"error": str(exc)}, 404)
        return _json(job, 201)


def _kv_keys(data: str) -> set[str]:
    from host.dm.session import parse_kv
    try:
        return set(parse_kv(data))
    except SimvaultError:
        return {"password"}  # unparsable: refuse rather than store what might be a secret


def create_job_checked(server: DMServer, device_id: str, kind: str, target: str, *,
                       scope: str | None = None, backup_id: str | None = None,
                       params: dict | None = None, notify: bool = True) -> dict[str, Any]:
    """Create a job after the checks an admin front end needs, then notify the device.

    A restore or delete from the server needs a backup of *this* device: another
    device's backup id is refused here (and the agent would refuse it too).
    """
    store = server.store
    if kind in ("backup_via_ds", "restore_via_ds") and (params or {}).get("account") and not (params or {}).get("data"):
        from host.dm.server.ds_jobs import ds_job_params  # a job that names a stored DS account
        params, backup_id = ds_job_params(store, kind, device_id, str(params["account"]), backup_id,
                                          mode=str(params.get("mode") or "two-way"))
        target = "ds"
    if kind in ("backup_via_ds", "restore_via_ds"):
        from host.dm.server.ds_jobs import check_ds_job_device
        check_ds_job_device(server, device_id)
    secret_keys = {"password", "sealed"} & _kv_keys(str((params or {}).get("data", "")))
    if kind in ("backup_via_ds", "restore_via_ds") and secret_keys:
        raise UsageError("a DS job names a DS account (account=NAME), never a password: the jobs table "
                         "is not for secrets (host.dm.server.ds_jobs.command_backup_via_ds stores it encrypted)")
    if kind == "firmware_update":
        from host.dm.server.backup_plugin import fumo_node
        params = {**(params or {}), "node": fumo_node(params)}
        target = "device"
    if kind in ("restore", "delete") and not backup_id:
        raise UsageError(f"a {kind} job needs a backup id (--id)")
    if kind in ("backup", "restore") and target == "server":  # params.mode, dry_run (agentless)
        from host.dm.server.agentless.plugin import check_job_params
        params = check_job_params(store, kind, device_id, backup_id, params, scope)
    if kind == "restore" and target == "server" and backup_id:
        if not any(b["backup_id"] == backup_id for b in store.backups(device_id)):  # no archive read
            owners = store.backup_owner(backup_id)
            if owners:
                raise UsageError(f"backup {backup_id} belongs to another device, not {device_id}; "
                                 "a device restores only its own backups")
            raise UsageError(f"backup {backup_id} of {device_id} is not stored on the server")
    job = store.create_job(device_id, kind, target, scope=scope, backup_id=backup_id, params=params)
    return server.submit_job(job) if notify else job


class ServerThread:
    """Run a DMWebServer in a background thread with its own event loop (tests, demos, bench)."""

    def __init__(self, web_server: DMWebServer) -> None:
        self.web = web_server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dm-server", daemon=True)

    def start(self) -> "ServerThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.web.start(), self.loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.web.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @property
    def url(self) -> str:
        return self.web.url


def check_paths(paths: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The DM endpoint's paths (dm server --path): absolute, distinct, clear of /api."""
    out: list[str] = []
    for path in paths or ("/dm",):
        if not path.startswith("/") or path.startswith("/api") or any(c in path for c in "?#{} ") or path in out:
            raise UsageError(f"--path {path!r}: give an absolute path such as /dm or /funambol/dm, once, "
                             "outside /api, without ? # { } or spaces")
        out.append(path)
    return tuple(out)


def build_server(db_url: str, *, host: str = "127.0.0.1", port: int = 0, admin_token: str | None = None,
                 server_id: str = "simvault-dms", notifier: Any = None, tick_interval: float = 1.0,
                 max_msg_size: int | None = None, running_timeout: float = 900.0,
                 plugins: list | None = None, ssl_context: ssl.SSLContext | None = None,
                 paths: list[str] | tuple[str, ...] = ("/dm",), allow_basic_over_http: bool = False,
                 min_password_length: int = 8, agentless: Any = None,
                 blob_store: str | None = None) -> DMWebServer:
    """The standard DM server: Store + DMServer + AgentlessPlugin and BackupPlugin + HttpNotifier +
    web app. ``agentless``: a host.dm.server.agentless.config.AgentlessConfig (server key, caps);
    ``blob_store``: where backup chunks live, 'db' (default) or 'dir:PATH' (host.dm.server.blobs)."""
    from host.dm.server.agentless.plugin import AgentlessPlugin
    from host.dm.server.backup_plugin import BackupPlugin
    from host.dm.server.engine import DEFAULT_MAX_MSG_SIZE
    if min_password_length < 1:
        raise UsageError(f"--min-password-length {min_password_length}: give at least 1 (default 8)")
    paths = check_paths(paths)
    store = Store(db_url, blobs=blob_store)
    if plugins is None:
        standard = AgentlessPlugin(agentless)
        plugins = [standard, BackupPlugin(handover=standard)]
        try:
            from host.dm.server.ds_jobs import DsBackupRecorder
            plugins.insert(0, DsBackupRecorder())  # records where DS backups live, then BackupPlugin
            from host.dm.server.ds_accounts import server_key
            server_key(store)  # created 0600 on first start: it encrypts the DS account passwords
        except ImportError as exc:
            log.info("DS backup records unavailable: %s", exc)
    core = DMServer(store, server_id=server_id, plugins=plugins,
                    notifier=notifier if notifier is not None else HttpNotifier(),
                    max_msg_size=max_msg_size or DEFAULT_MAX_MSG_SIZE, running_timeout=running_timeout,
                    allow_basic_over_http=allow_basic_over_http, min_password_length=min_password_length)
    return DMWebServer(core, host=host, port=port, admin_token=admin_token, tick_interval=tick_interval,
                       ssl_context=ssl_context, paths=paths)
