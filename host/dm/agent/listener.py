"""The agent's loopback listener: Package 0 notifications and local control.

    POST /notify              body = Package 0 (application/vnd.syncml.notification); the digest
                              is verified with the server password and the nonce the agent gave
                              the server, before anything else; 202 accepted, 401 refused
    POST /control/backup-now  ?destination=server|card   (use case 2, user request)
    POST /control/restore     ?id=HEX&source=card
    POST /control/sync        a client-initiated session
    GET  /control/status      JSON: pending reports, last sessions, refused requests

It stands in for WAP push / SMS (OMA DM Notification). It binds to loopback
only; the control routes are for the device's own user interface.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from host.errors import SimvaultError, SyncMLError, UsageError
from host.syncml.package0 import verify_package0

if TYPE_CHECKING:
    from host.dm.agent.api import Agent

log = logging.getLogger(__name__)
MAX_NOTIFICATION = 4096


class AgentListener:
    def __init__(self, agent: "Agent", host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise UsageError("the agent listener binds to loopback only (127.0.0.1)")
        self.agent = agent
        handler = _make_handler(agent)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="dm-agent-listener", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def notify_url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/notify"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def _make_handler(agent: "Agent") -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:  # quiet: debug log only
            log.debug("listener: " + fmt, *args)

        def _answer(self, code: int, payload: object) -> None:
            body = json.dumps(payload, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_NOTIFICATION:
                self._answer(413, {"error": "too large"})
                return
            body = self.rfile.read(length) if length else b""
            try:
                if url.path == "/notify":
                    self._notify(body)
                elif url.path == "/control/backup-now":
                    agent.backup_now(query.get("destination") or None, reason=query.get("reason", "user"))
                    self._answer(202, {"queued": "backup request"})
                elif url.path == "/control/restore":
                    if not query.get("id"):
                        raise UsageError("restore needs ?id=<backup id>")
                    agent.restore_now(query["id"].lower(), query.get("source", "card"))
                    self._answer(202, {"queued": "restore"})
                elif url.path == "/control/sync":
                    agent.sync_now()
                    self._answer(202, {"queued": "session"})
                else:
                    self._answer(404, {"error": "no such route"})
            except SimvaultError as exc:
                self._answer(400, {"error": str(exc)})

        def _notify(self, body: bytes) -> None:
            creds = agent.tree.credentials()
            candidates = [creds.server_nonce]
            prev = getattr(agent, "_prev_server_nonce", None)
            if prev is not None:
                candidates.append(prev)
            # A Package 0 triggers one session: a replay (same nonce, same SessionID, both under the
            # digest) is refused. Keyed by the pair, not the nonce alone: a session in which the server
            # had nothing to send ends after one message, so the device never hands the server a new
            # nonce, and the server's next Package 0 (new SessionID) must still be accepted.
            spent: set[tuple[bytes, int]] = agent.__dict__.setdefault("_spent_package0_nonces", set())
            for nonce in candidates:
                try:
                    note = verify_package0(body, lambda sid: creds.server_password
                                           if sid == creds.server_id else None, nonce)
                except SyncMLError:
                    continue
                if (nonce, note.session_id) in spent:
                    continue
                spent.add((nonce, note.session_id))
                if len(spent) > 64:
                    spent.pop()
                agent.on_notification(note.session_id)
                self._answer(202, {"session": f"{note.session_id:X}"})
                return
            log.warning("Package 0 refused: digest does not verify")
            self._answer(401, {"error": "notification digest does not verify"})

        def do_GET(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/control/status":
                self._answer(404, {"error": "no such route"})
                return
            self._answer(200, {"device": agent.device_id, "pending_reports": len(agent.pending),
                               "sessions": [r.__dict__ for r in agent.history[-10:]],
                               "refused_requests": agent.refusals[-10:]})

    return Handler
