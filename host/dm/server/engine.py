"""The OMA DM 1.2 server's session engine: one SyncML message in, one out.

:meth:`DMServer.handle_message` is transport-free (the aiohttp layer in
host.dm.http calls it from a worker thread): it decodes the message, finds or
opens the session (SessionID + MsgID checks), authenticates the device, gives
every command a Status, routes Status/Results/Generic Alerts to the plugins,
lets the plugins queue commands once the device's package is complete, and
builds the reply within the device's MaxMsgSize.

Authentication (md5, hmac, basic): host.dm.server.auth. The server authenticates to
the device too: a Cred (md5 of the server password with the device's nonce) in its
first reply to an md5 or basic device, or x-syncml-hmac on every reply to an hmac one;
the device's Status for our SyncHdr gives the next nonce.

Sessions: a device's SessionID + MsgID pick its open session. A package with MsgID 1
and a session-start Alert (1200/1201) opens a new session even when its SessionID is
that of an open one (libdmclient starts every session with SessionID 1): the old one is
closed as failed, with its reason and an audit line.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from host.dm import dmauth
from host.dm.server.auth import ACCEPTED, DeviceAuth
from host.dm.server.db import Device, Store
from host.dm.server.jobs import JobsMixin
from host.dm.server.plugin import Notifier, ServerPlugin, SessionContext
from host.dm.session import (ALERT_CLIENT_INITIATED, ALERT_GENERIC, ALERT_NEXT_MESSAGE, ALERT_NO_END_OF_DATA,
                             ALERT_SERVER_INITIATED, ALERT_SESSION_ABORT, DEFAULT_MAX_MSG_SIZE,
                             DM_CONTENT_TYPES, MIN_MAX_MSG_SIZE, WIRE_XML, Channel, Wire, next_message_alert,
                             wire_for)
from host.errors import SimvaultError, SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.auth import AUTH_MD5, HMAC_HEADER
from host.syncml.status import StatusCode, SyncMLStatusError

log = logging.getLogger(__name__)

MAX_AUTH_FAILURES = 3
MAX_MESSAGES_PER_SESSION = 2000
SESSION_IDLE_TIMEOUT = 120.0
CONTENT_TYPE = codec.CONTENT_TYPE_DM_XML
WIRE_WBXML_TYPE = "application/vnd.syncml.dm+wbxml"
CONTENT_TYPES = tuple(DM_CONTENT_TYPES)  # the .dm+ types and the plain SyncML ones stock clients send
SESSION_START = (ALERT_SERVER_INITIATED, ALERT_CLIENT_INITIATED)
NOTIFY_TYPE = "urn:simvault:agent:notify:1.0"


@dataclass
class Reply:
    """What the transport sends back: HTTP status, body and headers."""

    http_status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # a one-line reason for non-200 replies
    # who it was for (the access log): the SyncHdr's Source, SessionID and MsgID once decoded
    device_id: str | None = None
    session_id: str | None = None
    msg_id: int | None = None


@dataclass
class ServerSession:
    device_id: str
    channel: Channel
    row_id: int
    initiator: str
    authenticated: bool = False
    failures: int = 0
    server_cred_sent: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    contexts: dict[str, SessionContext] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    client_nonce: str | None = None  # the device's latest NextNonce for us (also written to the db)
    # the device row, read at the session's first message and kept while it authenticates: its
    # nonces only change through this session (we track them), so later messages skip the SELECT
    device: Device | None = None


class DMServer(JobsMixin):
    """Transport-free DM server core; see module doc."""

    def __init__(self, store: Store, *, server_id: str = "simvault-dms", server_uri: str = "http://127.0.0.1/dm",
                 plugins: list[ServerPlugin] | None = None, notifier: Notifier | None = None,
                 max_msg_size: int = DEFAULT_MAX_MSG_SIZE, max_obj_size: int = 64 * 1024 * 1024,
                 running_timeout: float = 900.0, notified_timeout: float = 300.0,
                 renotify_after: float = 30.0, notify_workers: int = 16, max_active_devices: int = 32,
                 allow_basic_over_http: bool = False, min_password_length: int = 8) -> None:
        self.store = store
        self.server_id = server_id
        self.server_uri = server_uri
        self.auth = DeviceAuth(store, allow_basic_over_http=allow_basic_over_http)
        self.min_password_length = min_password_length  # registry.register_device's policy
        self.plugins: list[ServerPlugin] = list(plugins or [])
        self.notifier = notifier
        self.max_msg_size = max_msg_size
        self.max_obj_size = max_obj_size
        self.running_timeout = running_timeout
        self.notified_timeout = notified_timeout
        self.renotify_after = renotify_after
        self._sessions: dict[tuple[str, str], ServerSession] = {}
        self._lock = threading.Lock()
        self._device_locks: dict[str, threading.Lock] = {}
        self._notify_backoff: dict[str, float] = {}  # device -> monotonic time of the next attempt
        # device -> when a Package 0 went out that the device has not answered with a session yet:
        # a second one would reuse the same nonce, be refused as a replay and trigger the backoff
        self._notified_at: dict[str, float] = {}
        # the ticker wakes at most this many devices at a time (in session or notified, not yet in
        # session): jobs are served oldest first instead of all at once at a crawl
        self.max_active_devices = max_active_devices
        self._notify_locks: dict[str, threading.Lock] = {}  # the ticker and create_job_checked may race
        # Package 0 deliveries overlap (a gateway or a device is slow to answer; one at a time,
        # 200 devices took 20 s here)
        self._notify_pool = ThreadPoolExecutor(max_workers=notify_workers, thread_name_prefix="dm-notify")

    @property
    def tls(self) -> bool:
        """Set by the web front (DMWebServer) when it serves https."""
        return self.auth.tls

    @tls.setter
    def tls(self, value: bool) -> None:
        self.auth.tls = value

    # ------------------------------------------------------------ entry point
    @property
    def max_request_bytes(self) -> int:
        """A request larger than this is refused with HTTP 413 before parsing."""
        return self.max_msg_size + 4096

    def handle_message(self, body: bytes, headers: dict[str, str] | None = None, *,
                       local_uri: str | None = None) -> Reply:
        """One message in (XML or WBXML, by its Content-Type; XML when none), one out in the same.
        ``local_uri``: the server's URI as this device addressed it (the path it posted to);
        default server_uri."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        wire = wire_for(headers["content-type"]) if "content-type" in headers else WIRE_XML
        if wire is None:
            return Reply(415, text=f"expected {' or '.join(CONTENT_TYPES)}")
        if len(body) > self.max_request_bytes:
            self.store.audit("message.refused", None, f"{len(body)} bytes > {self.max_request_bytes}")
            return Reply(413, text=f"message of {len(body)} bytes exceeds MaxMsgSize {self.max_msg_size}")
        try:
            msg = wire.decode(body)
        except SyncMLError as exc:
            self.store.audit("message.malformed", None, str(exc)[:300])
            if getattr(exc, "status", None) == StatusCode.UNSUPPORTED_MEDIA_TYPE:  # e.g. a WBXML charset
                return Reply(415, text=f"unsupported SyncML encoding: {exc}")
            return Reply(400, text=f"malformed SyncML: {exc}")
        hdr = msg.header
        if hdr.ver_proto != m.PROTO_DM:
            return Reply(400, text=f"VerProto {hdr.ver_proto} is not DM/1.2")
        reply = self._handle_decoded(msg, body, headers, wire, local_uri or self.server_uri)
        reply.device_id, reply.session_id, reply.msg_id = hdr.source.loc_uri, hdr.session_id, hdr.msg_id
        return reply

    def _handle_decoded(self, msg: m.SyncMLMessage, body: bytes, headers: dict[str, str], wire: Wire,
                        local: str) -> Reply:
        device_id = msg.header.source.loc_uri
        device = self._session_device(device_id, msg.header.session_id) or self.store.device(device_id)
        if device is None:
            self.store.audit("auth.unknown_device", None, device_id[:128])
            return self._reject(msg, StatusCode.INVALID_CREDENTIALS, AUTH_MD5, wire, local)
        with self._device_lock(device_id):
            return self._handle_device_message(msg, device, body, headers, wire, local)

    def _session_device(self, device_id: str, session_id: str) -> Device | None:
        with self._lock:
            sess = self._sessions.get((device_id, session_id))
            return sess.device if sess is not None and not sess.closed else None

    def _device_lock(self, device_id: str) -> threading.Lock:
        with self._lock:
            return self._device_locks.setdefault(device_id, threading.Lock())

    def _reject(self, msg: m.SyncMLMessage, code: int, auth_type: str, wire: Wire, local: str) -> Reply:
        """A one-message answer outside any session (unknown device or session)."""
        ch = Channel(msg.header.session_id, m.Source(local), msg.header.source)
        ch.last_sent_msg_id = 0
        chal = m.Chal(meta=m.Meta(type=auth_type, format="b64",
                                  next_nonce=dmauth.b64(dmauth.fresh_nonce())))
        ch.add_status(msg.header.msg_id, None, code, chal=chal if code in (401, 407) else None)
        return Reply(200, wire.encode(ch.build()), {"Content-Type": wire.content_type})

    # ------------------------------------------------------------ session
    def _session_for(self, msg: m.SyncMLMessage, device: Device, local: str) -> ServerSession | None:
        hdr = msg.header
        key = (device.id, hdr.session_id)
        with self._lock:
            self._expire_idle_locked()
            sess = self._sessions.get(key)
            starts = hdr.msg_id == 1 and any(isinstance(c, m.Alert) and c.data in SESSION_START
                                             for c in msg.commands)
            if sess is not None and not sess.closed:
                if starts:  # the device began anew with the same SessionID: the old session is over
                    del self._sessions[key]
                    self._end(sess, "failed", "superseded: the device started a new session with "
                                              "the same SessionID (MsgID 1, session-start Alert)")
                    self.store.audit("session.superseded", device.id,
                                     f"session {hdr.session_id[:32]} after msg {sess.channel.last_received_msg_id}")
                elif hdr.msg_id != sess.channel.last_received_msg_id + 1:
                    return None
                else:
                    return sess
            if hdr.msg_id != 1:
                return None  # a continuation of a session we do not know (e.g. before a restart)
            initiator = "server" if any(isinstance(c, m.Alert) and c.data == ALERT_SERVER_INITIATED
                                        for c in msg.commands) else "client"
            channel = Channel(hdr.session_id, m.Source(local), m.Target(hdr.source.loc_uri,
                              hdr.source.loc_name), own_max_msg_size=self.max_msg_size,
                              max_obj_size=self.max_obj_size)
            row_id = self.store.open_session(device.id, hdr.session_id, initiator)
            self._notified_at.pop(device.id, None)
            self._notify_backoff.pop(device.id, None)  # its nonces moved on: notifications work again
            sess = ServerSession(device.id, channel, row_id, initiator)
            self._sessions[key] = sess
            return sess

    def _expire_idle_locked(self) -> None:
        now = time.monotonic()
        for key, sess in list(self._sessions.items()):
            if sess.closed or now - sess.last_activity > SESSION_IDLE_TIMEOUT:
                del self._sessions[key]
                self._end(sess, "failed", "idle timeout")

    def _end(self, sess: ServerSession, state: str, reason: str | None = None) -> None:
        if not sess.closed:
            sess.closed = True
            self._notify_backoff.pop(sess.device_id, None)  # a Package 0 refused mid-session: retry now
            self.store.close_session(sess.row_id, state, sess.channel.last_received_msg_id, reason)
            for plugin in self.plugins:
                hook = getattr(plugin, "on_session_end", None)
                if hook is not None:
                    try:
                        hook(self._ctx(sess, plugin), state)
                    except Exception as exc:  # noqa: BLE001 - see _process_commands
                        log.warning("plugin %s failed in on_session_end: %s", plugin.name, exc)

    def _handle_device_message(self, msg: m.SyncMLMessage, device: Device, body: bytes,
                               headers: dict[str, str], wire: Wire, local: str) -> Reply:
        sess = self._session_for(msg, device, local)
        if sess is None:
            self.store.audit("session.unknown", device.id,
                             f"session {msg.header.session_id[:32]} msg {msg.header.msg_id}")
            return self._reject(msg, StatusCode.REQUEST_TIMEOUT, AUTH_MD5, wire, local)
        ch = sess.channel
        ch.last_received_msg_id = msg.header.msg_id
        sess.last_activity = time.monotonic()
        if msg.header.meta is not None and msg.header.meta.max_msg_size:
            ch.peer_max_msg_size = max(MIN_MAX_MSG_SIZE, min(msg.header.meta.max_msg_size, 16 * 1024 * 1024))
        if msg.header.meta is not None and msg.header.meta.max_obj_size:
            ch.peer_max_obj_size = msg.header.meta.max_obj_size  # what agentless restore may Replace
        if ch.last_received_msg_id > MAX_MESSAGES_PER_SESSION:
            self._end(sess, "failed", "too many messages")
            return Reply(429, text="too many messages in one session")

        code, chal, new_nonce = self.auth.check(device, sess.authenticated, msg, body, headers)
        ch.add_status(msg.header.msg_id, None, code, chal=chal)
        if code not in ACCEPTED:
            sess.device = None  # read it again: the nonce may have moved under us (a replay)
            sess.failures += 1
            _refuse_commands(ch, msg, code, chal)
            self.store.audit("auth.failed", device.id, f"status {code} session {msg.header.session_id[:32]}")
            if sess.failures >= MAX_AUTH_FAILURES:
                self._end(sess, "failed", "authentication failed")
            reply = ch.build()
            return self._reply(reply, device, sess, wire, sign=False)
        if code == StatusCode.AUTHENTICATION_ACCEPTED:
            sess.authenticated = True  # (last_seen was set with the nonce, in one statement)
        if new_nonce is not None:
            device.server_nonce = dmauth.b64(new_nonce)  # what the compare-and-set just stored
        sess.device = device

        self._process_commands(sess, device, msg)
        if sess.closed:  # the device aborted (1223): answer its commands, send nothing new
            return self._reply(ch.build(), device, sess, wire, sign=device.auth_type == "hmac")
        if not msg.final:
            ch.statuses.append(next_message_alert(ch))  # type: ignore[arg-type]
        elif not ch.has_pending:
            for plugin in self.plugins:
                try:
                    plugin.on_session(self._ctx(sess, plugin))
                except Exception as exc:  # noqa: BLE001 - see _process_commands
                    log.warning("plugin %s failed in on_session: %s", plugin.name, exc)
                    self.store.audit("plugin.error", device.id, f"{plugin.name}: {exc}")
        cred = None
        if not sess.server_cred_sent and device.auth_type in ("md5", "basic"):
            cred = m.Cred(data=dmauth.md5_from_secret(device.server_secret, dmauth.unb64(device.client_nonce)),
                          meta=m.Meta(type=AUTH_MD5, format="b64"))
            sess.server_cred_sent = True
        reply = ch.build(cred=cred)
        if reply.final and not any(not isinstance(c, m.Status) for c in reply.commands):
            self._end(sess, "ended")
        return self._reply(reply, device, sess, wire, sign=device.auth_type == "hmac")

    def _reply(self, reply: m.SyncMLMessage, device: Device, sess: ServerSession, wire: Wire,
               sign: bool) -> Reply:
        data = wire.encode(reply)
        headers = {"Content-Type": wire.content_type}
        if sign:
            nonce = dmauth.unb64(sess.client_nonce if sess.client_nonce is not None else device.client_nonce)
            headers[HMAC_HEADER] = dmauth.hmac_header_from_secret(self.server_id, device.server_secret,
                                                                  nonce, data)
        return Reply(200, data, headers)

    def _ctx(self, sess: ServerSession, plugin: ServerPlugin) -> SessionContext:
        ctx = sess.contexts.get(plugin.name)
        if ctx is None:
            ctx = SessionContext(device_id=sess.device_id, session_id=sess.channel.session_id,
                                 initiator=sess.initiator, store=self.store, channel=sess.channel,
                                 plugin_name=plugin.name, server_id=self.server_id, tls=self.tls)
            sess.contexts[plugin.name] = ctx
        return ctx

    # ------------------------------------------------------------ commands
    def _process_commands(self, sess: ServerSession, device: Device, msg: m.SyncMLMessage) -> None:
        ch = sess.channel
        msg_id = msg.header.msg_id
        for cmd in msg.commands:
            try:
                if isinstance(cmd, m.Status):
                    self._on_status(sess, device, cmd)
                elif isinstance(cmd, m.Results):
                    ch.add_status(msg_id, cmd, self._on_results(sess, cmd, msg_id))
                elif isinstance(cmd, m.Alert):
                    ch.add_status(msg_id, cmd, self._on_alert(sess, cmd))
                elif isinstance(cmd, m.Replace):
                    self._on_devinfo(device, cmd)
                    ch.add_status(msg_id, cmd, StatusCode.OK)
                else:
                    ch.add_status(msg_id, cmd, StatusCode.COMMAND_NOT_ALLOWED)
            except SyncMLStatusError as exc:
                ch.add_status(msg_id, cmd, exc.status)
            except Exception as exc:  # noqa: BLE001 - a plugin bug answers 500, never kills the session
                if not isinstance(exc, SimvaultError):
                    log.exception("handling %s from %s failed", cmd.name, device.id)
                log.warning("command %s from %s failed: %s", cmd.name, device.id, exc)
                self.store.audit("command.failed", device.id, f"{cmd.name}: {exc}")
                if not isinstance(cmd, m.Status):
                    ch.add_status(msg_id, cmd, StatusCode.COMMAND_FAILED)

    def _plugin_for(self, sess: ServerSession, tag: object) -> tuple[ServerPlugin, object] | None:
        if not isinstance(tag, tuple) or len(tag) != 2:
            return None
        for plugin in self.plugins:
            if plugin.name == tag[0]:
                return plugin, tag[1]
        return None

    def _on_status(self, sess: ServerSession, device: Device, st: m.Status) -> None:
        if st.cmd == "SyncHdr":
            if st.data in (StatusCode.INVALID_CREDENTIALS, StatusCode.MISSING_CREDENTIALS):
                self.store.audit("auth.server_rejected", device.id, f"device answered {st.data}")
            if st.chal is not None and st.chal.meta.next_nonce:
                try:
                    dmauth.unb64(st.chal.meta.next_nonce)
                except ValueError:
                    raise SyncMLStatusError("NextNonce is not base64", StatusCode.BAD_REQUEST) from None
                self.store.update_device(device.id, client_nonce=st.chal.meta.next_nonce)
                sess.client_nonce = st.chal.meta.next_nonce
            return
        routed = sess.channel.tag_for(st.msg_ref, st.cmd_ref)
        if routed is None:
            return
        found = self._plugin_for(sess, routed[1])
        if found is not None:
            plugin, tag = found
            plugin.on_status(self._ctx(sess, plugin), tag, st)

    def _on_results(self, sess: ServerSession, res: m.Results, msg_id: int) -> int:
        chunked = False
        for item in res.items:
            whole = sess.channel.feed_item(item)
            if whole is None:
                chunked = True
                continue
            routed = sess.channel.tag_for(res.msg_ref or sess.channel.last_sent_msg_id, res.cmd_ref)
            found = self._plugin_for(sess, routed[1]) if routed else None
            if found is not None:
                plugin, tag = found
                plugin.on_results(self._ctx(sess, plugin), tag, res, whole)
        return StatusCode.CHUNKED_ITEM_ACCEPTED if chunked else StatusCode.OK

    def _on_alert(self, sess: ServerSession, alert: m.Alert) -> int:
        code = alert.data
        if code in (ALERT_SERVER_INITIATED, ALERT_CLIENT_INITIATED, ALERT_NEXT_MESSAGE):
            return StatusCode.OK
        if code == ALERT_SESSION_ABORT:
            self._end(sess, "failed", "aborted by the device")
            return StatusCode.OK
        if code == ALERT_NO_END_OF_DATA:  # the device dropped a large object we did not finish
            self.store.audit("large_object.interrupted", sess.device_id, _alert_locations(alert))
            return StatusCode.OK
        if code != ALERT_GENERIC:
            return StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
        answer = StatusCode.OK
        for item in alert.items:
            if item.meta is not None and item.meta.type == NOTIFY_TYPE:
                answer = self._on_notify_address(sess, item)
                continue
            for plugin in self.plugins:
                got = plugin.on_generic_alert(self._ctx(sess, plugin), alert, item)
                if got is not None:
                    answer = got if answer == StatusCode.OK else answer
                    break
            else:
                kind = item.meta.type if item.meta else None
                self.store.audit("alert.unhandled", sess.device_id, f"{kind}")
        return answer

    def _on_notify_address(self, sess: ServerSession, item: m.Item) -> int:
        """The device tells where its Package 0 listener is (stands in for its MSISDN)."""
        text = item.data if isinstance(item.data, str) else ""
        url = text[4:] if text.startswith("url=") else ""
        if not (url.startswith("http://") or url.startswith("https://")) or len(url) > 500:
            return StatusCode.BAD_REQUEST
        self.store.update_device(sess.device_id, notify_url=url)
        return StatusCode.OK

    def _on_devinfo(self, device: Device, cmd: m.Replace) -> None:
        info = dict(device.devinfo or {})
        for item in cmd.items:
            uri = item.target.loc_uri if item.target else item.source.loc_uri if item.source else None
            if uri and uri.startswith("./DevInfo/") and isinstance(item.data, str) and len(item.data) < 256:
                info[uri[len("./DevInfo/"):]] = item.data
        if info != (device.devinfo or {}):  # the same DevInfo every session: no write
            self.store.update_device(device.id, devinfo=info)
            device.devinfo = info


def _alert_locations(alert: m.Alert) -> str:
    return " ".join((i.target.loc_uri if i.target else "") or (i.source.loc_uri if i.source else "")
                    for i in alert.items)[:200]


def _refuse_commands(ch: Channel, msg: m.SyncMLMessage, code: int, chal: m.Chal | None) -> None:
    """OMA DM 1.2 Protocol 9.4 (authentication failure): the reply holds only Status commands,
    one for every command received, here the SyncHdr's code (401 or 407, with its Chal); a
    client such as libdmclient resends the commands answered so, with the credentials."""
    def walk(commands: list[m.Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, m.Status):
                continue  # a Status is never answered
            ch.add_status(msg.header.msg_id, cmd, code, chal=chal)
            if isinstance(cmd, (m.Atomic, m.Sequence)):
                walk(cmd.commands)
    walk(msg.commands)
