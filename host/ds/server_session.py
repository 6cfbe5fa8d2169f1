"""One SyncML DS 1.2 session on the server side: a message in, a message out.

Phases follow the packages (see host.ds.client): ``init`` (pkg1 -> pkg2),
``sync`` (pkg3 -> pkg4), ``map`` (pkg5 -> pkg6). Nothing reaches the database
before the session's last package: the client's items, the anchor and the
maps are committed together (host.ds.store.DsStore.commit), so an
interrupted session leaves the datastore as it was.
"""
from __future__ import annotations

import dataclasses
import hmac
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from host.ds.errors import DsError
from host.ds.largeobj import TolerantAssembler, no_end_of_data_alert
from host.ds.state import new_anchor
from host.ds.store import DsStore, SyncCommit
from host.syncml import auth, devinf
from host.syncml import model as m
from host.syncml.packing import pack
from host.syncml.reply import header_status, status_with_refs
from host.syncml.status import AlertCode, StatusCode, SyncMLStatusError

log = logging.getLogger(__name__)
NS_METINF = "syncml:metinf"
STATUS_RESERVE = 1500
DEFAULT_CLIENT_MAX_MSG = 64 * 1024
MAX_AUTH_FAILURES = 3
CONTENT_TYPES = ("text/plain", "text/x-vcard", "text/vcard", "text/calendar", "text/x-vcalendar")


class SessionOver(Exception):
    """The session must end now (too many auth failures, protocol error): answer, then forget it."""


@dataclass
class _DatastoreSync:
    name: str  # server datastore (client's Alert Target)
    client_uri: str  # client's datastore (Alert Source)
    mode: int
    client_next: str
    server_next: str
    server_last: str | None
    items_in: dict[str, tuple[str, str]] = field(default_factory=dict)  # LUID -> (type, data)
    deletes: list[str] = field(default_factory=list)
    maps: list[tuple[str, str]] = field(default_factory=list)  # (GUID, LUID)
    items_out: int = 0
    failed: int | None = None
    known_luids: set[str] | None = None  # this device's mapped LUIDs, read once when first needed


class ServerSession:
    def __init__(self, store: DsStore, token: str, resp_uri: str, server_uri: str,
                 auth_types: tuple[str, ...] = (auth.AUTH_BASIC, auth.AUTH_MD5),
                 max_msg_size: int = 1024 * 1024, max_obj_size: int = 32 * 1024 * 1024) -> None:
        self.store = store
        self.token = token
        self.resp_uri = resp_uri
        self.server_uri = server_uri
        self.auth_types = auth_types
        self.max_msg_size = max_msg_size
        self.max_obj_size = max_obj_size
        self.session_id: str | None = None
        self.device_id = ""
        self.user: str | None = None
        self.auth_failures = 0
        self.phase = "init"
        self.client_max_msg = DEFAULT_CLIENT_MAX_MSG
        self.msg_id = 0
        self.last_in: tuple[int, bytes] | None = None
        self.last_out: m.SyncMLMessage | None = None
        self.sent: dict[tuple[int, int], str] = {}
        self.stores: dict[str, _DatastoreSync] = {}
        self.assembler = TolerantAssembler(max_obj_size)
        self.no_end_alerts: list[m.Alert] = []
        self.queue: list[m.SyncMLMessage] = []  # rest of our package, after the first message
        self.started = time.time()
        self.touched = time.monotonic()
        self.bytes_in = self.bytes_out = 0
        self.done = False

    # ------------------------------------------------------------------ helpers
    def _status(self, hdr: m.SyncHdr, cmd: m.Command, code: int, target: str | None = None,
                source: str | None = None, items: list[m.Item] | None = None, chal: m.Chal | None = None) -> m.Status:
        return status_with_refs(cmd, hdr.msg_id, 0, code, target, source, items, chal)

    def _header(self) -> m.SyncHdr:
        return m.SyncHdr(session_id=self.session_id or "0", msg_id=self.msg_id + 1, target=m.Target(self.device_id),
                         source=m.Source(self.server_uri), ver_proto=m.PROTO_DS, resp_uri=self.resp_uri,
                         meta=m.Meta(max_msg_size=self.max_msg_size, max_obj_size=self.max_obj_size))

    def _finish_message(self, msg: m.SyncMLMessage) -> m.SyncMLMessage:
        msg.header = self._header()
        self.msg_id = msg.header.msg_id
        for n, cmd in enumerate(msg.iter_commands(), start=1):
            cmd.cmd_id = n
            self.sent[(self.msg_id, n)] = cmd.name
        self.last_out = msg
        return msg

    def _devinf(self) -> ET.Element:
        ct = devinf.ContentType("text/plain", "1.0")
        names = self.store.datastores(self.user) if self.user else []
        stores = [devinf.DataStore(source_ref=n, rx_pref=ct, tx_pref=ct, sync_types=[1, 2, 3, 4, 5, 6, 7],
                                   display_name=n, max_guid_size=32) for n in (names or ["backup"])]
        return devinf.devinf_to_element(devinf.DevInf(
            dev_id=self.server_uri, dev_typ="server", data_stores=stores, man="simvault", mod="simvault DS server",
            sw_v="0.1", utc=True, support_large_objs=True, support_number_of_changes=True))

    # ------------------------------------------------------------------ authentication
    def _authenticate(self, hdr: m.SyncHdr) -> m.Status:
        """Status for the SyncHdr: 212 with a fresh md5 Chal, or 401/407 with one."""
        nonce = auth.new_nonce()
        chal = auth.challenge(auth.AUTH_MD5 if auth.AUTH_MD5 in self.auth_types else auth.AUTH_BASIC, nonce)
        status = header_status(hdr, cmd_id=0, code=StatusCode.OK, chal=chal)
        user = self._check_cred(hdr)
        if user is None:
            self.auth_failures += 1
            status.data = StatusCode.MISSING_CREDENTIALS if hdr.cred is None else StatusCode.INVALID_CREDENTIALS
        else:
            self.user = user
            status.data = StatusCode.AUTHENTICATION_ACCEPTED
        name = user or (hdr.source.loc_name or "")
        if name and chal.meta.next_nonce:
            self.store.set_nonce(name, self.device_id, chal.meta.next_nonce)
        return status

    def _check_cred(self, hdr: m.SyncHdr) -> str | None:
        cred = hdr.cred
        if cred is None:
            return None
        ctype = cred.meta.type or auth.AUTH_BASIC
        if ctype not in self.auth_types:
            return None
        if ctype == auth.AUTH_BASIC:
            parsed = auth.parse_basic_credential(cred.data)
            return parsed[0] if parsed and self.store.check_basic(*parsed) else None
        name = hdr.source.loc_name or ""
        nonce_text = self.store.nonce(name, self.device_id) if name else None
        secret = self.store.user_secret(name) if name else None
        if not nonce_text or secret is None:
            return None
        nonce = auth.decode_nonce(nonce_text)
        want = auth.md5_digest_from_secret(secret.encode(), nonce)
        return name if hmac.compare_digest(cred.data.strip().encode(), want.encode()) else None

    # ------------------------------------------------------------------ the message loop
    def handle(self, msg: m.SyncMLMessage, raw_len: int) -> m.SyncMLMessage:
        """Process one client message and return the answer (raises SessionOver after answering badly)."""
        self.touched = time.monotonic()
        self.bytes_in += raw_len
        hdr = msg.header
        if hdr.ver_proto != m.PROTO_DS:
            raise DsError(f"VerProto {hdr.ver_proto} is not SyncML/1.2", 513)
        if self.session_id is None:
            self.session_id, self.device_id = hdr.session_id, hdr.source.loc_uri
        elif hdr.session_id != self.session_id or hdr.source.loc_uri != self.device_id:
            raise DsError("message belongs to another session or device", 400)
        if hdr.meta is not None and hdr.meta.max_msg_size:
            self.client_max_msg = max(2048, min(hdr.meta.max_msg_size, self.max_msg_size))
        out: list[m.Command] = []
        if self.user is None:
            st = self._authenticate(hdr)
            out.append(st)
            if self.user is None:
                if self.auth_failures >= MAX_AUTH_FAILURES:
                    self.done = True
                self.phase = "init"
                return self._finish_message(m.SyncMLMessage(self._header(), out, final=True))
        else:
            out.append(header_status(hdr, cmd_id=0, code=StatusCode.OK))
        wants_next = False
        for cmd in msg.commands:
            if isinstance(cmd, m.Alert) and cmd.data == AlertCode.NEXT_MESSAGE:
                wants_next = True
                out.append(self._status(hdr, cmd, StatusCode.OK))
            else:
                out.extend(self._command(hdr, cmd))
        out = [c for c in out if not (isinstance(c, m.Status) and any(
            x.no_resp and x.cmd_id == c.cmd_ref for x in msg.commands))]
        if not msg.final:
            if self.queue and wants_next and self.phase == "map":
                return self._send_queued(out)
            return self._finish_message(m.SyncMLMessage(self._header(), out, final=False))
        if self.queue:
            return self._send_queued(out)
        if self.phase == "init":
            return self._end_init(out)
        if self.phase == "sync":
            return self._end_sync(out)
        self._commit()
        return self._finish_message(m.SyncMLMessage(self._header(), out, final=True))

    def _send_queued(self, statuses: list[m.Command]) -> m.SyncMLMessage:
        nxt = self.queue.pop(0)
        nxt.commands[:0] = statuses
        return self._finish_message(nxt)

    def _command(self, hdr: m.SyncHdr, cmd: m.Command) -> list[m.Command]:
        if isinstance(cmd, m.Status):
            if cmd.data >= 300 and self.sent.get((cmd.msg_ref, cmd.cmd_ref)) in ("Add", "Replace", "Sync"):
                for st in self.stores.values():
                    st.failed = cmd.data
            return []
        if isinstance(cmd, m.Alert):
            return self._alert(hdr, cmd)
        if isinstance(cmd, m.Put):
            return [self._status(hdr, cmd, StatusCode.OK, source=devinf.DEVINF_URI)]
        if isinstance(cmd, m.Get):
            target = cmd.items[0].target.loc_uri if cmd.items and cmd.items[0].target else ""
            if target != devinf.DEVINF_URI:
                return [self._status(hdr, cmd, StatusCode.NOT_FOUND, target=target)]
            return [self._status(hdr, cmd, StatusCode.OK, target=target),
                    m.Results(cmd_id=0, msg_ref=hdr.msg_id, cmd_ref=cmd.cmd_id, meta=m.Meta(type=devinf.DEVINF_TYPE),
                              source_refs=[devinf.DEVINF_URI],
                              items=[m.Item(source=m.Source(devinf.DEVINF_URI), data=self._devinf())])]
        if isinstance(cmd, m.Results):
            return [self._status(hdr, cmd, StatusCode.OK)]
        if isinstance(cmd, m.Sync):
            return self._sync(hdr, cmd)
        if isinstance(cmd, m.Map):
            return self._map(hdr, cmd)
        return [self._status(hdr, cmd, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)]

    def _alert(self, hdr: m.SyncHdr, cmd: m.Alert) -> list[m.Command]:
        code = cmd.data or 0
        if code == AlertCode.NO_END_OF_DATA:  # the client dropped one of our large objects
            log.info("DS client %s reported No End of Data (223) for one of our objects", self.device_id[:40])
            for st in self.stores.values():
                st.failed = StatusCode.SIZE_MISMATCH
            return [self._status(hdr, cmd, StatusCode.OK)]
        # Resume (225): nothing of a cut session is kept (it committed nothing before its end), so it cannot
        # be resumed. As libsynthesis answers: 509 + Alert 200 (a normal two-way sync in this same session)
        # when the anchors agree, else 508 Refresh required + Alert 201 (slow sync). docs/DS.md "Resume".
        resume = code == AlertCode.RESUME and self.phase == "init"
        if resume:
            code = AlertCode.TWO_WAY
        if self.phase != "init" or code not in range(200, 206):
            return [self._status(hdr, cmd, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)]
        item = cmd.items[0] if cmd.items else None
        name = _norm(item.target.loc_uri) if item and item.target else ""
        client_uri = item.source.loc_uri if item and item.source else ""
        anchor = item.meta.anchor if item and item.meta else None
        if not name or not client_uri or anchor is None:
            return [self._status(hdr, cmd, StatusCode.BAD_REQUEST, target=name, source=client_uri)]
        assert self.user is not None
        exists = self.store.has_datastore(self.user, name)
        if code in (AlertCode.ONE_WAY_FROM_SERVER, AlertCode.REFRESH_FROM_SERVER) and not exists:
            return [self._status(hdr, cmd, StatusCode.NOT_FOUND, target=name, source=client_uri)]
        stored = self.store.anchor(self.user, name, self.device_id) if exists else None
        status_code, mode = StatusCode.OK, code
        if code == AlertCode.TWO_WAY:  # two-way needs both sides' anchors to agree, else slow sync
            anchors_disagree = stored is None or anchor.last is None or anchor.last != stored[0]
        else:
            anchors_disagree = (code != AlertCode.SLOW_SYNC and anchor.last is not None and stored is not None
                                and anchor.last != stored[0])
        if anchors_disagree:
            status_code, mode = StatusCode.REFRESH_REQUIRED, AlertCode.SLOW_SYNC
        elif resume:
            status_code = StatusCode.RESUME_NOT_POSSIBLE
        if resume:
            log.info("DS client %s asked to resume %s (225): not resumable, %d -> sync type %d",
                     self.device_id[:40], name, status_code, mode)
        server_last = stored[1] if stored else None
        sync = _DatastoreSync(name=name, client_uri=client_uri, mode=mode, client_next=anchor.next,
                              server_next=new_anchor(server_last), server_last=server_last)
        self.stores[name] = sync
        echo = ET.Element(f"{{{NS_METINF}}}Anchor")
        ET.SubElement(echo, f"{{{NS_METINF}}}Next").text = anchor.next
        back = m.Alert(cmd_id=0, data=mode, items=[m.Item(
            target=m.Target(client_uri), source=m.Source(name),
            meta=m.Meta(anchor=m.Anchor(next=sync.server_next, last=server_last), max_obj_size=self.max_obj_size))])
        return [self._status(hdr, cmd, status_code, target=name, source=client_uri, items=[m.Item(data=echo)]), back]

    def _sync(self, hdr: m.SyncHdr, cmd: m.Sync) -> list[m.Command]:
        name = _norm(cmd.target.loc_uri) if cmd.target else ""
        st = self.stores.get(name)
        if st is None or self.phase != "sync":
            return [self._status(hdr, cmd, StatusCode.NOT_FOUND if st is None else StatusCode.COMMAND_NOT_ALLOWED,
                                 target=name)]
        out: list[m.Command] = [self._status(hdr, cmd, StatusCode.OK, target=name,
                                             source=cmd.source.loc_uri if cmd.source else None)]
        for op in cmd.commands:
            if st.mode in (AlertCode.REFRESH_FROM_SERVER, AlertCode.ONE_WAY_FROM_SERVER):
                out.append(self._status(hdr, op, StatusCode.COMMAND_NOT_ALLOWED))
            elif isinstance(op, (m.Add, m.Replace)):
                for item in op.items:
                    out.append(self._incoming_item(hdr, op, st, item))
                    out.extend(self.no_end_alerts)  # Alert 223 for an object cut off by this one
                    self.no_end_alerts = []
            elif isinstance(op, m.Delete):
                for item in op.items:
                    if item.source:
                        st.deletes.append(item.source.loc_uri)
                out.append(self._status(hdr, op, StatusCode.OK))
            else:
                out.append(self._status(hdr, op, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED))
        return out

    def _incoming_item(self, hdr: m.SyncHdr, op: m.Command, st: _DatastoreSync, item: m.Item) -> m.Status:
        luid = item.source.loc_uri if item.source else ""
        try:
            whole = self.assembler.feed(item)
        except SyncMLStatusError as exc:
            st.failed = exc.status
            return self._status(hdr, op, exc.status, source=luid)
        finally:
            self.no_end_alerts.extend(no_end_of_data_alert(x) for x in self.assembler.take_abandoned())
        if whole is None:
            return self._status(hdr, op, StatusCode.CHUNKED_ITEM_ACCEPTED, source=luid)
        meta = whole.meta or (op.meta if isinstance(op, m.ItemCommand) else None)
        ctype = (meta.type if meta and meta.type else "text/plain")
        if isinstance(whole.data, bytes) and ctype in CONTENT_TYPES:  # text sent as Format b64
            try:
                whole = dataclasses.replace(whole, data=whole.data.decode("utf-8"))
            except UnicodeDecodeError:
                pass  # refused below as unsupported
        if not luid or not isinstance(whole.data, str) or ctype not in CONTENT_TYPES:
            st.failed = StatusCode.UNSUPPORTED_MEDIA_TYPE
            return self._status(hdr, op, StatusCode.UNSUPPORTED_MEDIA_TYPE, source=luid)
        st.items_in[luid] = (ctype, whole.data)
        # SyncML DS 1.2 representation protocol: 200 for a Replace of an item the server holds, 201 for new
        replaced = isinstance(op, m.Replace) and st.mode != AlertCode.REFRESH_FROM_CLIENT and luid in self._known(st)
        return self._status(hdr, op, StatusCode.OK if replaced else StatusCode.ITEM_ADDED, source=luid)

    def _known(self, st: _DatastoreSync) -> set[str]:
        if st.known_luids is None:
            assert self.user is not None
            st.known_luids = set(self.store.mapped_luids(self.user, st.name, self.device_id))
        return st.known_luids

    def _map(self, hdr: m.SyncHdr, cmd: m.Map) -> list[m.Command]:
        st = self.stores.get(_norm(cmd.target.loc_uri))
        if st is None:
            return [self._status(hdr, cmd, StatusCode.NOT_FOUND)]
        st.maps.extend((mi.target.loc_uri, mi.source.loc_uri) for mi in cmd.map_items)
        return [self._status(hdr, cmd, StatusCode.OK, target=cmd.target.loc_uri, source=cmd.source.loc_uri)]

    def _end_init(self, out: list[m.Command]) -> m.SyncMLMessage:
        if not self.stores:  # every Alert was refused (404, 400...): answer the statuses and end
            self.done = True
            self._log(404, "no datastore alerted")
            return self._finish_message(m.SyncMLMessage(self._header(), out, final=True))
        self.phase = "sync"
        return self._finish_message(m.SyncMLMessage(self._header(), out, final=True))

    def _end_sync(self, out: list[m.Command]) -> m.SyncMLMessage:
        """The client's changes are all in: answer with ours (pkg4)."""
        try:
            self.assembler.finish()
        except SyncMLStatusError as exc:
            for st in self.stores.values():
                st.failed = exc.status
        commands: list[m.Command] = list(out)
        for st in self.stores.values():
            if st.failed is None and st.mode not in (AlertCode.REFRESH_FROM_CLIENT, AlertCode.ONE_WAY_FROM_CLIENT):
                commands.append(self._outgoing_sync(st))  # from-client modes get no Sync back (as SyncEvolution)
        failed = [st for st in self.stores.values() if st.failed is not None]
        self.phase = "map"
        if failed:
            self.done = True
            self._log(failed[0].failed or 500, "client items refused")
            return self._finish_message(m.SyncMLMessage(self._header(), commands, final=True))
        expects_answer = any(not isinstance(c, m.Status) for c in commands)  # then pkg5 closes the session
        messages = pack(self._header(), commands, max(2048, self.client_max_msg - STATUS_RESERVE))
        self.queue = messages[1:]
        if not expects_answer:
            self._commit()
        return self._finish_message(messages[0])

    def _outgoing_sync(self, st: _DatastoreSync) -> m.Sync:
        sync = m.Sync(cmd_id=0, target=m.Target(st.client_uri), source=m.Source(st.name), commands=[])
        if st.mode not in (AlertCode.REFRESH_FROM_SERVER, AlertCode.SLOW_SYNC):
            return sync
        assert self.user is not None
        known = set(self.store.mapped_luids(self.user, st.name, self.device_id).values()) \
            if st.mode == AlertCode.SLOW_SYNC else set()
        sent_by_client = set(st.items_in)
        for item in self.store.items(self.user, st.name):
            if st.mode == AlertCode.SLOW_SYNC and item.guid in known and sent_by_client:
                continue  # the client already holds it
            sync.commands.append(m.Add(cmd_id=0, meta=m.Meta(type=item.content_type),
                                       items=[m.Item(source=m.Source(item.guid), data=item.data)]))
            st.items_out += 1
        sync.number_of_changes = len(sync.commands)
        return sync

    def _commit(self) -> None:
        assert self.user is not None
        for st in self.stores.values():
            self.store.commit(SyncCommit(
                user=self.user, datastore=st.name, device_id=self.device_id, client_anchor=st.client_next,
                server_anchor=st.server_next, refresh_from_client=st.mode == AlertCode.REFRESH_FROM_CLIENT,
                upserts=[(luid, ct, data) for luid, (ct, data) in st.items_in.items()], deletes=st.deletes,
                maps=st.maps))
        self._log(200, "ok")
        self.done = True

    def _log(self, status: int, message: str) -> None:
        first = next(iter(self.stores.values()), None)
        self.store.log_session(
            user_name=self.user, device_id=self.device_id, datastore=first.name if first else None,
            mode=first.mode if first else None, status=status,
            items_in=sum(len(s.items_in) for s in self.stores.values()),
            items_out=sum(s.items_out for s in self.stores.values()), bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, started=self.started, finished=time.time(), message=message[:255])

    def abandon(self, reason: str) -> None:
        """The session ends without commit (timeout, protocol error): log it."""
        if not self.done:
            self.done = True
            try:
                self._log(500, reason)
            except Exception as exc:  # noqa: BLE001 - logging must not hide the original failure
                log.warning("could not log abandoned DS session: %s", type(exc).__name__)


def _norm(uri: str) -> str:
    return uri.removeprefix("./")

