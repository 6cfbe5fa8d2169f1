"""simvault's embedded SyncML DS 1.2 server (aiohttp + SQLAlchemy 2).

    store = DsStore("sqlite:////tmp/ds.db"); store.add_user("alice", "pw")
    server = DsServer(store)
    url = await server.start("127.0.0.1", 0)        # http://127.0.0.1:PORT/sync
    ...; await server.stop()

or from a synchronous program (tests, the demo): ``with run_server_in_thread(store) as url: ...``.

The first message of a session is POSTed to /sync; the answer's RespURI
(/sync?sessionid=<random token>) carries the rest. Sessions live in memory and
expire after ``session_timeout`` idle seconds without commit. Malformed SyncML
gets HTTP 400, an unknown session 404, a foreign content type 415.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Iterator

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from host.ds.errors import DsError
from host.ds.loopthread import service_thread
from host.ds.server_session import ServerSession, SessionOver
from host.ds.store import DsStore
from host.ds.transport import CONTENT_TYPE_WBXML, CONTENT_TYPE_XML
from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.auth import AUTH_BASIC, AUTH_MD5

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 4 * 1024 * 1024
SYNC_PATH = "/sync"


def _wbxml():  # imported lazily: the WBXML codec is optional for the XML path
    from host.syncml import wbxml
    return wbxml


class DsServer:
    def __init__(self, store: DsStore, *, auth: str = "any", max_msg_size: int = 1024 * 1024,
                 max_obj_size: int = 32 * 1024 * 1024, session_timeout: float = 300.0,
                 server_uri: str = "simvault-ds", ssl_context: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.ssl_context = ssl_context  # host.tls.server_context: https
        self.auth_types = {"any": (AUTH_BASIC, AUTH_MD5), "basic": (AUTH_BASIC,), "md5": (AUTH_MD5,)}[auth]
        self.max_msg_size = max_msg_size
        self.max_obj_size = max_obj_size
        self.session_timeout = session_timeout
        self.server_uri = server_uri
        self.sessions: dict[str, ServerSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post(SYNC_PATH, self._post)
        app.router.add_get(SYNC_PATH, self._get)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=5.0)  # bounded stop
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]  # the real port when port=0
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://{host}:{sock.getsockname()[1]}{SYNC_PATH}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for session in self.sessions.values():
            session.abandon("server stopped")
        self.sessions.clear()

    async def _get(self, request: web.Request) -> web.Response:
        return web.Response(text="simvault SyncML DS 1.2 server: POST application/vnd.syncml+xml here\n")

    def _expire(self) -> None:
        now = time.monotonic()
        for token, session in list(self.sessions.items()):
            if now - session.touched > self.session_timeout:
                session.abandon("session timed out")
                self.sessions.pop(token, None)
                self._locks.pop(token, None)

    async def _post(self, request: web.Request) -> web.Response:
        self._expire()
        ctype = (request.content_type or "").lower()
        if ctype not in (CONTENT_TYPE_XML, CONTENT_TYPE_WBXML):
            return web.Response(status=415, text=f"expected {CONTENT_TYPE_XML}\n")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="message too large\n")
        try:
            msg = _wbxml().decode_wbxml(body, b64_chunks_as_text=True) if ctype == CONTENT_TYPE_WBXML \
                else codec.decode(body, b64_chunks_as_text=True)  # b64 chunks joined, then decoded
        except SyncMLError as exc:
            log.info("malformed SyncML from %s: %s", request.remote, exc)
            if getattr(exc, "status", None) == 415:  # e.g. a WBXML charset we cannot read
                return web.Response(status=415, text=f"unsupported SyncML encoding: {exc}\n")
            return web.Response(status=400, text=f"malformed SyncML: {exc}\n")
        token = request.query.get("sessionid")
        if token is None:
            token = secrets.token_urlsafe(16)
            resp_uri = str(request.url.with_query({"sessionid": token}))
            session = ServerSession(self.store, token, resp_uri, self.server_uri, self.auth_types,
                                    self.max_msg_size, self.max_obj_size)
            self.sessions[token] = session
        elif token in self.sessions:
            session = self.sessions[token]
        else:
            return web.Response(status=404, text="unknown or finished DS session: start a new one\n")
        lock = self._locks.setdefault(token, asyncio.Lock())
        async with lock:
            try:
                if session.last_in is not None and session.last_in == (msg.header.msg_id, body) and session.last_out:
                    answer = session.last_out  # a resend of the last message: same answer
                else:
                    answer = await asyncio.to_thread(session.handle, msg, len(body))
                    session.last_in = (msg.header.msg_id, body)
            except (SessionOver, DsError, SyncMLError) as exc:
                session.abandon(f"protocol error: {exc}")
                self.sessions.pop(token, None)
                self._locks.pop(token, None)
                return web.Response(status=400, text=f"DS session aborted: {exc}\n")
            except SQLAlchemyError as exc:
                log.error("DS database failure: %s", type(exc).__name__)
                session.abandon("database failure")
                self.sessions.pop(token, None)
                self._locks.pop(token, None)
                return web.Response(status=503, text="DS database failure: retry later\n")
            out = _wbxml().encode_wbxml(answer) if ctype == CONTENT_TYPE_WBXML else codec.encode(answer)
            session.bytes_out += len(out)
            if session.done:
                self.sessions.pop(token, None)
                self._locks.pop(token, None)
        return web.Response(body=out, content_type=ctype)


@contextlib.contextmanager
def run_server_in_thread(store: DsStore, host: str = "127.0.0.1", port: int = 0,
                         **kwargs: object) -> Iterator[DsServer]:
    """Run a DsServer on its own event loop thread; yields the server (``server.url`` is set)."""
    server = DsServer(store, **kwargs)  # type: ignore[arg-type]
    with service_thread(lambda: server.start(host, port), server.stop, name="ds-server",
                        failure=f"DS server could not listen on {host}:{port}"):
        yield server


def message_summary(msg: m.SyncMLMessage) -> str:
    """One line for logs: the commands of a message, never their data."""
    return " ".join(c.name for c in msg.commands) + (" Final" if msg.final else "")
