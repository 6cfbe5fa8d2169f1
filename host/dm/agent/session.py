"""One DM session of the device agent: package 1, then message after message over HTTP.

Package 1 is Alert 1200 (after a Package 0) or 1201 (client-initiated), the
DevInfo Replace, the Generic Alerts waiting for delivery (results of
asynchronous Exec, a backup request, the notification address), and the
device's Cred (syncml:auth-md5) or an x-syncml-hmac header.

For every server message the agent first authenticates the *server* (its Cred
in the first reply, or x-syncml-hmac on each one, computed with the nonce the
agent gave it), then handles the server's Status for our header (401/407 +
Chal: resend package 1 with the new nonce, at most twice), routes the Status
of its own commands, executes the server's commands (host.dm.agent.commands) and
answers with a fresh NextNonce for the server in the Status for SyncHdr. The
session ends when the server sends a final message with no command.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import logging
import secrets
import urllib.error
import urllib.request
from pathlib import Path

from host.dm import dmauth
from host.tls import context_for, untrusted
from host.dm.agent.api import SessionRecord
from host.dm.agent.commands import CommandExecutor
from host.dm.session import (ALERT_CLIENT_INITIATED, ALERT_GENERIC, ALERT_SERVER_INITIATED,
                             ALERT_SESSION_ABORT, WIRE_WBXML, WIRE_XML, Channel, Wire, next_message_alert,
                             wire_for)
from host.errors import SyncMLError
from host.syncml import model as m
from host.syncml.auth import AUTH_MAC, AUTH_MD5
from host.syncml.status import StatusCode

log = logging.getLogger(__name__)

HMAC_HEADER = "x-syncml-hmac"
NOTIFY_TYPE = "urn:simvault:agent:notify:1.0"
REQUEST_TYPE = "urn:simvault:bar:request:1.0"
BACKUP_OP = "./Vendor/simvault/BaR/Operations/Backup"
MAX_MESSAGES = 1000
DEVINFO_LEAVES = ("DevId", "Man", "Mod", "DmV", "Lang")


class ServerGone(Exception):
    """The server could not be reached, or its reply was cut short or too large."""


class _Http:
    def __init__(self, url: str, timeout: float, max_reply: int, ca_file: Path | None = None) -> None:
        self.url, self.timeout, self.max_reply = url, timeout, max_reply
        self.context = context_for(url, ca_file)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """(HTTP status, body, headers); ServerGone for a lost connection, a cut or an oversized reply."""
        req = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout,  # noqa: S310 - the configured DM server
                                        context=self.context) as resp:
                rheaders = {k.lower(): v for k, v in resp.headers.items()}
                declared = rheaders.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_reply:
                    raise ServerGone(f"the server's reply exceeds our MaxMsgSize ({self.max_reply} bytes)")
                data = resp.read(self.max_reply + 1)  # never more than our MaxMsgSize (+ slack) in memory
                if len(data) > self.max_reply:
                    raise ServerGone(f"the server's reply exceeds our MaxMsgSize ({self.max_reply} bytes)")
                if declared.isdigit() and len(data) != int(declared):
                    raise ServerGone(f"connection lost: the reply was cut short ({len(data)} of {declared} bytes)")
                return resp.status, data, rheaders
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, exc.read(300), {}
            except (OSError, http.client.HTTPException):
                return exc.code, b"", {}
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, IncompleteRead...
            why = untrusted(exc)
            if why:
                raise ServerGone(f"the DM server's certificate is not trusted ({why}): "
                                 "give the agent the CA that issued it (--ca-file)") from None
            raise ServerGone(f"server unreachable or connection lost: {type(exc).__name__}: {exc}") from None


def _package1(agent, ch: Channel, initiator: str, request: tuple[str, str | None] | None,  # type: ignore[no-untyped-def]
              reports: list) -> None:
    ch.send(m.Alert(cmd_id=1, data=ALERT_SERVER_INITIATED if initiator == "server" else ALERT_CLIENT_INITIATED))
    items = []
    for leaf in DEVINFO_LEAVES:
        value = agent.tree.value(f"./DevInfo/{leaf}")
        if value is not None:
            items.append(m.Item(source=m.Source(f"./DevInfo/{leaf}"), meta=m.Meta(format="chr"), data=value))
    if items:
        ch.send(m.Replace(cmd_id=1, items=items))
    for rep in reports:
        ch.send(m.Alert(cmd_id=1, data=ALERT_GENERIC, correlator=rep.correlator,
                        items=[m.Item(source=m.Source(rep.source_uri),
                                      meta=m.Meta(type=rep.type, format=rep.format, mark=rep.mark),
                                      data=rep.data)]),
                ("report", rep))
    if request is not None:
        reason, destination = request
        data = f"reason={reason}" + (f";destination={destination}" if destination else "")
        ch.send(m.Alert(cmd_id=1, data=ALERT_GENERIC,
                        items=[m.Item(source=m.Source(BACKUP_OP), meta=m.Meta(type=REQUEST_TYPE, format="chr"),
                                      data=data)]), ("request", reason))
    if agent.notify_url and not agent._notify_reported:
        ch.send(m.Alert(cmd_id=1, data=ALERT_GENERIC,
                        items=[m.Item(source=m.Source("./DevInfo/DevId"), meta=m.Meta(type=NOTIFY_TYPE, format="chr"),
                                      data=f"url={agent.notify_url}")]), ("notify", None))


def run_session(agent, initiator: str, session_id: str | None,  # type: ignore[no-untyped-def]
                request: tuple[str, str | None] | None = None):
    """Run one session to its end; returns a SessionRecord (never raises for protocol trouble)."""
    cfg = agent.config
    creds = agent.tree.credentials()
    wire: Wire = WIRE_WBXML if getattr(cfg, "wbxml", False) else WIRE_XML
    # a reply may exceed our MaxMsgSize by the Status block the server must add; anything far above is hostile
    http = _Http(cfg.server_url, cfg.http_timeout, max_reply=cfg.max_msg_size + 8192,
                 ca_file=getattr(cfg, "ca_file", None))
    ch = Channel(session_id or f"{secrets.randbelow(0xFFFE) + 1:X}",
                 m.Source(agent.device_id, creds.username), m.Target(cfg.server_url),
                 peer_max_msg_size=cfg.max_msg_size,  # until the server states its own
                 own_max_msg_size=cfg.max_msg_size, max_obj_size=64 * 1024 * 1024)
    reports = agent.take_reports()
    _package1(agent, ch, initiator, request, reports)
    first_package = list(ch.queue)
    executor = CommandExecutor(agent, ch, creds.server_id)
    delivered: list = []
    send_cred = creds.auth_type == "md5"
    auth_retries = 0
    server_verified = False
    messages = 0
    prev_server_nonce = getattr(agent, "_prev_server_nonce", None)
    try:
        while messages < MAX_MESSAGES:
            creds = agent.tree.credentials()
            cred = None
            if send_cred:
                cred = m.Cred(data=dmauth.md5_from_secret(dmauth.secret_of(creds.username, creds.password),
                                                          creds.client_nonce),
                              meta=m.Meta(type=AUTH_MD5, format="b64"))
            msg = ch.build(cred=cred)
            body = wire.encode(msg)
            headers = {"Content-Type": wire.content_type, "Accept": wire.content_type}
            if creds.auth_type == "hmac":
                headers[HMAC_HEADER] = dmauth.hmac_header_from_secret(
                    creds.username, dmauth.secret_of(creds.username, creds.password), creds.client_nonce, body)
            try:
                status, data, rheaders = http.post(body, headers)
            except ServerGone as exc:
                return SessionRecord(False, str(exc), messages)
            messages += 1
            if status != 200:
                return SessionRecord(False, f"HTTP {status}: {data[:120]!r}", messages)
            try:
                reply = _decode_reply(data, rheaders, wire, ch)
            except SyncMLError as exc:
                return SessionRecord(False, f"malformed reply: {exc}", messages)

            if reply.header.meta is not None and reply.header.meta.max_msg_size:
                ch.peer_max_msg_size = max(2048, reply.header.meta.max_msg_size)
            # 1. the server's Status for our SyncHdr (our authentication)
            hdr_status = next((c for c in reply.commands if isinstance(c, m.Status) and c.cmd == "SyncHdr"), None)
            if hdr_status is not None and hdr_status.chal is not None and hdr_status.chal.meta.next_nonce:
                agent.tree.set_nonce("client", base64.b64decode(hdr_status.chal.meta.next_nonce))
            if hdr_status is None or hdr_status.data in (StatusCode.INVALID_CREDENTIALS,
                                                         StatusCode.MISSING_CREDENTIALS):
                if hdr_status is None or auth_retries >= 2:
                    agent.tree.save()
                    return SessionRecord(False, "the server refused our credentials", messages)
                auth_retries += 1
                if (creds.auth_type == "md5" and hdr_status.chal is not None
                        and hdr_status.chal.meta.type == AUTH_MAC):
                    # the server asks for HMAC (per-message integrity): upgrade, never the other way
                    agent.tree.set_auth_type("hmac")
                    creds = agent.tree.credentials()
                send_cred = creds.auth_type == "md5"
                ch.queue.clear()
                ch.statuses.clear()
                for out in first_package:
                    ch.send(out.cmd, out.tag)
                continue
            if not 200 <= hdr_status.data < 300:
                agent.tree.save()
                return SessionRecord(False, f"the server answered {hdr_status.data} to our header", messages)
            send_cred = False

            # 2. authenticate the server
            creds = agent.tree.credentials()
            server_secret = dmauth.secret_of(creds.server_id, creds.server_password)
            nonces = [creds.server_nonce] + ([prev_server_nonce] if prev_server_nonce is not None else [])
            if creds.auth_type == "hmac":
                ok = _server_hmac_ok(rheaders.get(HMAC_HEADER), creds.server_id, server_secret, nonces, data)
            elif not server_verified:
                sc = reply.header.cred
                ok = sc is not None and sc.meta.type == AUTH_MD5 and any(
                    dmauth.equal(sc.data.strip(), dmauth.md5_from_secret(server_secret, n)) for n in nonces)
            else:
                ok = True
            if not ok:
                _abort_with_challenge(agent, ch, http, reply, creds, wire)
                return SessionRecord(False, "the server failed authentication", messages)
            server_verified = True

            # 3. Status of our commands, then the server's commands
            has_commands = False
            for cmd in reply.commands:
                if isinstance(cmd, m.Status):
                    if cmd.cmd != "SyncHdr":
                        _route_status(agent, ch, cmd, delivered)
                    continue
                has_commands = True
                executor.execute(reply.header.msg_id, cmd)
            if reply.final and not has_commands and not ch.has_pending:
                break
            if not reply.final:
                ch.statuses.append(next_message_alert(ch))  # type: ignore[arg-type]
            # 4. our Status for the server's header, with the nonce it must use next
            fresh = dmauth.fresh_nonce()
            prev_server_nonce = creds.server_nonce
            agent._prev_server_nonce = prev_server_nonce
            agent.tree.set_nonce("server", fresh)
            ch.add_status(reply.header.msg_id, None, StatusCode.AUTHENTICATION_ACCEPTED if messages == 1
                          else StatusCode.OK,
                          chal=m.Chal(meta=m.Meta(type=("syncml:auth-MAC" if creds.auth_type == "hmac"
                                                        else AUTH_MD5), format="b64",
                                                  next_nonce=dmauth.b64(fresh))))
        else:
            return SessionRecord(False, "too many messages", messages)
    finally:
        if executor.changed:
            agent.tree.generation += 1
        agent.tree.save()
        agent.reports_delivered(delivered)
        agent.run_deferred(executor.deferred)
    return SessionRecord(True, "", messages)


def _decode_reply(data: bytes, headers: dict[str, str], wire: Wire, ch: Channel) -> m.SyncMLMessage:
    """Decode a server message (in the representation it declares) and check it belongs to this
    session: SessionID, our device as Target, the next MsgID, a Status for our header's MsgID.
    Anything else is SyncMLError (the session ends, the tree untouched)."""
    declared = headers.get("content-type")
    use = wire_for(declared) if declared else wire
    if use is None:
        raise SyncMLError(f"reply Content-Type {declared[:60]!r} is not a SyncML DM type")
    try:
        reply = use.decode(data)
    except (ValueError, binascii.Error) as exc:
        raise SyncMLError(f"{type(exc).__name__}") from None
    hdr = reply.header
    if hdr.ver_proto != m.PROTO_DM:
        raise SyncMLError(f"VerProto {hdr.ver_proto[:20]!r} is not DM/1.2")
    if hdr.session_id != ch.session_id or hdr.target.loc_uri != ch.local.loc_uri:
        raise SyncMLError("the reply belongs to another session or device")
    for cmd in reply.commands:
        if isinstance(cmd, m.Status) and cmd.chal is not None and cmd.chal.meta.next_nonce:
            try:
                base64.b64decode(cmd.chal.meta.next_nonce, validate=True)
            except (ValueError, binascii.Error):
                raise SyncMLError("a Chal NextNonce is not base64") from None
    return reply


def _server_hmac_ok(value: str | None, server_id: str, secret: str, nonces: list[bytes], body: bytes) -> bool:
    if not value:
        return False
    try:
        hdr = dmauth.parse_hmac_header(value)
    except SyncMLError:
        return False
    return hdr.username == server_id and any(
        dmauth.equal(hdr.mac, dmauth.hmac_from_secret(secret, n, body)) for n in nonces)


def _route_status(agent, ch: Channel, st: m.Status, delivered: list) -> None:  # type: ignore[no-untyped-def]
    routed = ch.tag_for(st.msg_ref, st.cmd_ref)
    if routed is None or not isinstance(routed[1], tuple):
        return
    what, value = routed[1]
    if what == "report" and (200 <= st.data < 300 or st.data == StatusCode.NOT_FOUND):
        delivered.append(value)
    elif what == "request" and not 200 <= st.data < 300:
        agent.refusals.append(f"{value}:{st.data}")
    elif what == "notify" and 200 <= st.data < 300:
        agent._notify_reported = True


def _abort_with_challenge(agent, ch: Channel, http: _Http, reply: m.SyncMLMessage, creds,  # type: ignore[no-untyped-def]
                          wire: Wire) -> None:
    """Tell the server its credentials failed, with a fresh nonce to use next, and stop.

    The server stores the nonce even from a rejected exchange, so a nonce that
    got out of step (a lost message) heals at the next session."""
    fresh = dmauth.fresh_nonce()
    agent.tree.set_nonce("server", fresh)
    ch.queue.clear()
    ch.statuses.clear()
    ch.add_status(reply.header.msg_id, None, StatusCode.INVALID_CREDENTIALS,
                  chal=m.Chal(meta=m.Meta(type=AUTH_MD5, format="b64", next_nonce=dmauth.b64(fresh))))
    ch.send(m.Alert(cmd_id=1, data=ALERT_SESSION_ABORT))
    body = wire.encode(ch.build())
    headers = {"Content-Type": wire.content_type}
    if creds.auth_type == "hmac":
        headers[HMAC_HEADER] = dmauth.hmac_header_from_secret(
            creds.username, dmauth.secret_of(creds.username, creds.password), creds.client_nonce, body)
    try:
        http.post(body, headers)
    except ServerGone:
        pass
    log.warning("DM server failed authentication; sent a new challenge and ended the session")
