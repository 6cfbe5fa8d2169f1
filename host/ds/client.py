"""SyncML DS 1.2 client: back up an archive (refresh from client, Alert 203) and
restore it (refresh from server, Alert 205, then Map).

Session shape (OMA DS 1.2 packages):

    pkg1 client: SyncHdr(+Cred)  Alert(mode, Anchor Last/Next)  Put ./devinf12   Final
    pkg2 server: Status...  [Put/Get devinf]  Alert(mode, server Next)           Final
    pkg3 client: Status...  [Results devinf]  Sync(Replace archive item...)      Final
    pkg4 server: Status...  Sync(Add items...)   (restore)                       Final
    pkg5 client: Status...  [Map]                                                Final
    pkg6 server: Status...                                                       Final

Every package may span messages (Final absent: the other side asks for more
with Alert 222); items larger than the peer's MaxMsgSize travel as large
objects (MoreData chunks, Size on the first). A 508 on our Alert turns the
session into a slow sync (201). Anchors move only after pkg6: a failed session
changes nothing locally, and a restore hands back the archive only once the
session completed and the item decoded whole.
"""
from __future__ import annotations

import dataclasses
import logging
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from host.ds.client_replies import ReplyHandling, _AuthRetry
from host.ds.errors import (
    DsAuthError,
    DsError,
    DsNoBackupError,
    DsPayloadError,
    DsProtocolError,
    DsStatusError,
)
from host.ds.largeobj import TolerantAssembler
from host.ds.payload import (
    CONTENT_TYPE,
    CONTENT_VERSION,
    ArchiveItem,
    decode_item,
    encode_item,
    is_archive_item,
)
from host.ds.state import AnchorStore, DatastoreState, new_anchor
from host.ds.transport import (
    CONTENT_TYPE_WBXML,
    CONTENT_TYPE_XML,
    HttpTransport,
    Transport,
)
from host.errors import SyncMLError
from host.syncml import auth, codec, devinf, wbxml
from host.syncml import model as m
from host.syncml.packing import pack
from host.syncml.status import AlertCode, SyncMLStatusError, status_name

log = logging.getLogger(__name__)

STATUS_RESERVE = 1500  # room kept in each packed message for the statuses of the reply before it
MAX_MESSAGES = 10_000  # a session never needs more; a looping peer is cut off


@dataclass
class DsAccount:
    """Where and as whom to sync. ``datastore`` is the server's name (Alert Target)."""

    url: str
    username: str
    password: str = field(repr=False)
    datastore: str = "backup"
    device_id: str = "simvault-device"
    local_uri: str = "./simvault-backup"
    # "md5" (default: the password never crosses the wire; the first message carries no credential,
    # the server's Chal brings the nonce) or "basic". A server whose Chal asks for basic gets basic:
    # use TLS (https URL) against servers that cannot do md5.
    auth: str = "md5"
    max_msg_size: int = 64 * 1024  # what we accept per message
    max_obj_size: int = 16 * 1024 * 1024  # the largest object we accept
    wbxml: bool = False  # send application/vnd.syncml+wbxml (host.syncml.wbxml)
    # "two-way" (default): Alert 200, Replace the new archive then Delete the older ones in the same
    # Sync, so a peer that wipes the datastore when a refresh starts (SyncEvolution) never loses the
    # previous one; "refresh": Alert 203, the datastore ends up holding exactly the new archive
    # (safe only on a server that commits at the end, as simvault's does). docs/DS.md "Backup modes".
    backup_mode: str = "two-way"
    # after a backup session cut mid-way, alert Resume (225) first; a server that cannot resume (simvault's
    # keeps nothing of a cut session) answers 509 + the sync type to use (two-way), or 508 -> slow sync
    resume: bool = False
    ca_file: Path | None = None  # an https url: the CA(s) that issued the DS server's certificate (else the system's)


@dataclass
class DsResult:
    """Outcome of one completed session."""

    mode: int  # the sync type finally used (203, 205, or 201 after a 508)
    slow_sync: bool
    items: int  # archive items sent (backup) or received (restore)
    bytes_sent: int
    bytes_received: int
    messages: int
    status: int  # 200
    seconds: float
    server_anchor: str | None = None
    backup_id: str | None = None
    item_statuses: tuple[int, ...] = ()  # backup: 201 item added, 200 an item the server held replaced
    archive: bytes | None = field(default=None, repr=False)  # restore only


@dataclass
class _Sent:
    name: str
    purpose: str  # "hdr", "alert", "devinf", "sync", "item", "map", "results", "next", "status"


class _Session(ReplyHandling):
    def __init__(self, account: DsAccount, transport: Transport, state: DatastoreState, mode: int,
                 outgoing_text: str | None, outgoing_luid: str | None) -> None:
        self.a = account
        self.t = transport
        self.state = state
        self.requested_mode = mode
        resume = account.resume and state.interrupted_mode is not None and mode != AlertCode.REFRESH_FROM_SERVER
        self.mode = AlertCode.RESUME if resume else mode  # a restore has nothing to resume: it starts over
        self.outgoing_text = outgoing_text
        self.outgoing_luid = outgoing_luid
        self.session_id = str(secrets.randbelow(10**9) + 1)
        self.msg_id = 0
        self.url = account.url
        self.next_anchor = new_anchor(state.last_anchor)
        self.server_anchor: str | None = None
        self.server_alerted = False
        self.server_max_msg = 0
        self.server_max_obj: int | None = None
        self.nonce: bytes | None = auth.decode_nonce(state.next_nonce) if state.next_nonce else None
        self.next_nonce_text: str | None = state.next_nonce
        self.authenticated = False
        self.cred_type = account.auth
        self.auth_retries = 0
        self.sent: dict[tuple[int, int], _Sent] = {}
        self.statuses: list[m.Command] = []  # answers to the server's last message
        self.assembler = TolerantAssembler(max_obj_size=account.max_obj_size)
        self.received: list[tuple[str, str]] = []  # (server GUID, item text)
        self.received_luids: list[str] = []
        self.deletes: list[str] = []  # LUIDs of older archives to delete (two-way backup)
        self.map_items: list[m.MapItem] = []
        self.sent_items_ok = 0
        self.item_statuses: list[int] = []  # the server's final Status per archive item sent
        self.bytes_sent = self.bytes_received = self.messages = 0
        self.progress: Callable[[int, int], None] | None = None
        self.slow_sync = False
        self.peer_no_end_of_data = False

    # ------------------------------------------------------------ messages
    def _header(self) -> m.SyncHdr:
        cred = None
        if not self.authenticated:  # md5 without a nonce yet: send none, the server's Chal gives one
            if self.cred_type == "md5" and self.nonce is not None:
                cred = auth.md5_credential(self.a.username, self.a.password, self.nonce)
            elif self.cred_type == "basic":
                cred = auth.basic_credential(self.a.username, self.a.password)
        return m.SyncHdr(session_id=self.session_id, msg_id=self.msg_id + 1, target=m.Target(self.url),
                         source=m.Source(self.a.device_id, self.a.username), ver_proto=m.PROTO_DS, cred=cred,
                         meta=m.Meta(max_msg_size=self.a.max_msg_size, max_obj_size=self.a.max_obj_size))

    def _devinf(self) -> ET.Element:
        ct = devinf.ContentType(CONTENT_TYPE, CONTENT_VERSION)
        store = devinf.DataStore(source_ref=self.a.local_uri, rx_pref=ct, tx_pref=ct, display_name="simvault backup",
                                 max_guid_size=64, sync_types=[1, 2, 3, 4, 5, 6, 7])
        info = devinf.DevInf(dev_id=self.a.device_id, dev_typ="workstation", data_stores=[store], man="simvault",
                             mod="simvault", sw_v="0.1", utc=True, support_large_objs=True,
                             support_number_of_changes=True)
        return devinf.devinf_to_element(info)

    def _exchange(self, msg: m.SyncMLMessage) -> m.SyncMLMessage:
        """Send one message (CmdIDs renumbered), record what we sent, return the decoded reply."""
        if self.messages >= MAX_MESSAGES:
            raise DsProtocolError(f"DS session exceeded {MAX_MESSAGES} messages: the server loops")
        for n, cmd in enumerate(msg.iter_commands(), start=1):
            cmd.cmd_id = n
        self.msg_id = msg.header.msg_id
        for cmd in msg.iter_commands():
            purpose = {"Alert": "alert", "Put": "devinf", "Results": "results", "Sync": "sync", "Map": "map",
                       "Replace": "item", "Add": "item", "Status": "status", "Delete": "delete"}.get(cmd.name, "other")
            if isinstance(cmd, m.Alert) and cmd.data == AlertCode.NEXT_MESSAGE:
                purpose = "next"
            self.sent[(self.msg_id, cmd.cmd_id)] = _Sent(cmd.name, purpose)
        self.sent[(self.msg_id, 0)] = _Sent("SyncHdr", "hdr")
        body = wbxml.encode_wbxml(msg) if self.a.wbxml else codec.encode(msg)
        reply = self.t.post(self.url, body, CONTENT_TYPE_WBXML if self.a.wbxml else CONTENT_TYPE_XML)
        self.messages += 1
        self.bytes_sent += len(body)
        self.bytes_received += len(reply.body)
        if self.progress is not None:
            self.progress(self.bytes_sent, self.bytes_received)
        try:  # a peer may answer in the other encoding: decode by its Content-Type
            answer = wbxml.decode_wbxml(reply.body, b64_chunks_as_text=True) \
                if reply.content_type == CONTENT_TYPE_WBXML else codec.decode(reply.body, b64_chunks_as_text=True)
        except SyncMLError as exc:
            raise DsProtocolError(f"malformed SyncML from the DS server: {exc}") from None
        if answer.header.ver_proto != m.PROTO_DS:
            raise DsProtocolError(f"DS server answered with VerProto {answer.header.ver_proto}, not SyncML/1.2")
        if answer.header.session_id != self.session_id:
            raise DsProtocolError(f"DS server answered for session {answer.header.session_id[:20]!r}, "
                                  f"not ours ({self.session_id})")
        return answer

    def _new_message(self, commands: list[m.Command], final: bool) -> m.SyncMLMessage:
        return m.SyncMLMessage(self._header(), commands, final=final)

    # ------------------------------------------------------------ the session
    def _next_message_alert(self) -> m.Alert:
        return m.Alert(cmd_id=0, data=AlertCode.NEXT_MESSAGE, items=[
            m.Item(target=m.Target(self.a.datastore), source=m.Source(self.a.local_uri))])

    def _drain(self, answer: m.SyncMLMessage) -> m.SyncMLMessage:
        """While the server's package is not final, ask for its next message."""
        while not answer.final:
            answer = self._exchange(self._new_message([*self.statuses, self._next_message_alert()], final=False))
            self._process(answer)
        return answer

    def _init_package(self) -> list[m.Command]:
        anchor = m.Anchor(next=self.next_anchor, last=self.state.last_anchor)
        alert = m.Alert(cmd_id=0, data=self.mode, items=[m.Item(
            target=m.Target(self.a.datastore), source=m.Source(self.a.local_uri), meta=m.Meta(anchor=anchor))])
        put = m.Put(cmd_id=0, meta=m.Meta(type=devinf.DEVINF_TYPE),
                    items=[m.Item(source=m.Source(devinf.DEVINF_URI), data=self._devinf())])
        return [alert, put]

    def run(self) -> None:
        # pkg1 / pkg2, with one retry when the server challenges our credentials
        while True:
            try:
                answer = self._exchange(self._new_message(self._init_package(), final=True))
                self._process(answer)
                break
            except _AuthRetry as exc:
                self.auth_retries += 1
                if self.auth_retries > 1 or (self.cred_type == "md5" and self.nonce is None):
                    raise DsAuthError(f"DS server refused the credentials of {self.a.username!r} "
                                      f"({exc.code} {status_name(exc.code)}): check user and password", exc.code) from None
        answer = self._drain(answer)
        if not self.server_alerted:
            raise DsProtocolError(f"DS server did not alert datastore {self.a.local_uri} back: session aborted")
        # pkg3: our changes, packed into the server's MaxMsgSize
        sync = m.Sync(cmd_id=0, target=m.Target(self.a.datastore), source=m.Source(self.a.local_uri), commands=[])
        if self.outgoing_text is not None and self.mode in (AlertCode.REFRESH_FROM_CLIENT, AlertCode.SLOW_SYNC,
                                                            AlertCode.TWO_WAY, AlertCode.ONE_WAY_FROM_CLIENT):
            size = len(self.outgoing_text.encode("utf-8"))
            if self.server_max_obj is not None and size > self.server_max_obj:
                raise DsStatusError(f"archive item of {size} bytes exceeds the DS server's MaxObjSize "
                                    f"{self.server_max_obj}: raise it on the server", 416)
            sync.number_of_changes = 1
            sync.commands.append(m.Replace(cmd_id=0, meta=m.Meta(type=CONTENT_TYPE), items=[
                m.Item(source=m.Source(self.outgoing_luid or "archive"), data=self.outgoing_text)]))
            if self.mode == AlertCode.TWO_WAY:  # only once the new archive is in: never zero backups
                sync.commands.extend(m.Delete(cmd_id=0, items=[m.Item(source=m.Source(luid))])
                                     for luid in self.deletes)
                sync.number_of_changes = len(sync.commands)
        limit = min(self.server_max_msg or self.a.max_msg_size, 1024 * 1024)
        self._number_for_packing(sync)
        messages = pack(self._header(), [sync], max(limit - STATUS_RESERVE, 2048))
        for i, msg in enumerate(messages):
            msg.commands[:0] = self.statuses
            msg.header = self._header()
            answer = self._exchange(msg)
            self._process(answer)
            if i < len(messages) - 1 and answer.final:
                raise DsProtocolError("DS server ended its package while our Sync package was still incomplete")
        answer = self._drain(answer)  # pkg4
        try:
            self.assembler.finish()
        except SyncMLStatusError as exc:
            raise DsProtocolError(f"DS server's package ended inside a large object: {exc}", exc.status) from None
        if not self.map_items and all(isinstance(c, m.Status) for c in answer.commands):
            return  # nothing to map or acknowledge: pkg4 ended the session (SyncEvolution closes it here)
        # pkg5: statuses and Map; pkg6: the server's last statuses
        map_cmds: list[m.Command] = []
        if self.map_items:
            map_cmds.append(m.Map(cmd_id=0, target=m.Target(self.a.datastore), source=m.Source(self.a.local_uri),
                                  map_items=self.map_items))
        answer = self._exchange(self._new_message([*self.statuses, *map_cmds], final=True))
        self._process(answer)
        answer = self._drain(answer)
        if any(not isinstance(c, m.Status) for c in answer.commands):
            # the server still had commands: answer them once, then the session is over for us
            self._exchange(self._new_message(list(self.statuses), final=True))

    def _number_for_packing(self, sync: m.Sync) -> None:
        n = len(self.statuses) + 1
        sync.cmd_id = n
        for op in sync.commands:
            n += 1
            op.cmd_id = n


class DsClient:
    """Back up and restore simvault archives through a SyncML DS 1.2 server.

    ``state`` keeps anchors (and the md5 nonce) between sessions; pass
    ``AnchorStore(path)`` to keep them in a file.
    """

    def __init__(self, account: DsAccount, state: AnchorStore | None = None,
                 transport: Transport | None = None, *,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """progress(bytes sent, bytes received) is called after each message of a session."""
        self.account = account
        self.progress = progress
        self.store = state if state is not None else AnchorStore(None)
        self.transport = transport if transport is not None else HttpTransport(ca_file=account.ca_file)
        self.key = AnchorStore.key(account.url, account.username, account.datastore)

    def _run(self, mode: int, text: str | None, luid: str | None, deletes: list[str] | None = None) -> _Session:
        session = _Session(self.account, self.transport, self.store.get(self.key), mode, text, luid)
        session.deletes = list(deletes or [])
        session.progress = self.progress
        try:
            try:
                session.run()
            except BaseException:
                if session.server_alerted:  # a session was under way: the next one may alert Resume
                    self.store.put(self.key, dataclasses.replace(self.store.get(self.key), interrupted_mode=mode))
                raise
        except SyncMLStatusError as exc:
            raise DsProtocolError(str(exc), exc.status) from None
        except DsError:
            raise
        except SyncMLError as exc:  # codec or auth errors from host.syncml: keep them one line, typed
            raise DsProtocolError(f"DS session failed: {exc}") from None
        return session

    def _commit(self, session: _Session, backup_id: str | None, luids: list[str] | None = None) -> None:
        state = self.store.get(self.key)
        if luids is not None:
            state.luids = list(dict.fromkeys(luids))
        state.last_anchor = session.next_anchor
        state.server_anchor = session.server_anchor
        state.next_nonce = session.next_nonce_text
        state.interrupted_mode = None
        if backup_id is not None:
            state.last_backup_id = backup_id
        self.store.put(self.key, state)

    def backup(self, archive: bytes, backup_id: str) -> DsResult:
        """Store this archive in the datastore.

        ``backup_mode`` "refresh" (Alert 203): the datastore then holds exactly this archive.
        "two-way" (Alert 200): Replace it, then Delete the archives of earlier backups in the
        same Sync; a session cut mid-way leaves the previous archive in place."""
        started = time.monotonic()
        if self.account.backup_mode not in ("refresh", "two-way"):
            raise DsError(f"backup_mode {self.account.backup_mode!r}: use refresh or two-way", 400)
        text = encode_item(backup_id, archive)
        luid = f"sv-{backup_id}"[:64]
        older = [x for x in (self.store.get(self.key).luids or []) if x != luid]
        if self.account.backup_mode == "two-way":
            session = self._run(AlertCode.TWO_WAY, text, luid, older)
        else:
            session = self._run(AlertCode.REFRESH_FROM_CLIENT, text, luid)
            older = []
        if session.peer_no_end_of_data:
            raise DsStatusError("DS server reported No End of Data (223) for the archive: back up again", 223)
        if session.sent_items_ok != 1:
            raise DsStatusError("DS session ended without the server confirming the archive item: back up again", 500)
        kept = older if session.mode == AlertCode.SLOW_SYNC else []  # slow sync sends no Delete: next time
        self._commit(session, backup_id, [luid, *session.received_luids, *kept])
        return DsResult(mode=session.mode, slow_sync=session.slow_sync, items=1, bytes_sent=session.bytes_sent,
                        bytes_received=session.bytes_received, messages=session.messages, status=200,
                        seconds=time.monotonic() - started, server_anchor=session.server_anchor,
                        backup_id=backup_id, item_statuses=tuple(session.item_statuses))

    def restore(self, backup_id: str | None = None) -> DsResult:
        """Refresh-from-server: fetch the datastore, return the archive (whole and checked) in ``archive``.

        With ``backup_id`` None: the archive of this client's last backup (anchor state) when the
        datastore holds it, else the datastore must hold exactly one archive.
        """
        started = time.monotonic()
        own_last = self.store.get(self.key).last_backup_id  # our last backup: the default pick among several
        session = self._run(AlertCode.REFRESH_FROM_SERVER, None, None)
        self._commit(session, None, session.received_luids)  # the sync completed, whatever we pick below
        items: list[ArchiveItem] = []
        broken: list[DsPayloadError] = []
        for guid, text in session.received:
            if not is_archive_item(text):
                log.info("DS item %s is not a simvault archive; ignored", guid)
                continue
            try:
                items.append(decode_item(text))
            except DsPayloadError as exc:  # truncated or altered: never handed back
                broken.append(exc)
        if broken and (backup_id is None or not any(i.backup_id == backup_id for i in items)):
            raise broken[0]
        if backup_id is not None:
            chosen = [i for i in items if i.backup_id == backup_id]
            if not chosen:
                raise DsNoBackupError(f"DS datastore {self.account.datastore!r} has no backup {backup_id} "
                                      f"({len(items)} other archive(s)): check id=")
        else:
            chosen = items
            if len(items) > 1 and own_last and any(i.backup_id == own_last for i in items):
                chosen = [i for i in items if i.backup_id == own_last]  # two-way left an older one beside it
            if len(chosen) != 1:
                raise DsNoBackupError(f"DS datastore {self.account.datastore!r} holds {len(items)} archives: "
                                      "name one with id=" if items else
                                      f"DS datastore {self.account.datastore!r} holds no backup: back up first")
        item = chosen[-1]
        return DsResult(mode=session.mode, slow_sync=session.slow_sync, items=len(session.received),
                        bytes_sent=session.bytes_sent, bytes_received=session.bytes_received,
                        messages=session.messages, status=200, seconds=time.monotonic() - started,
                        server_anchor=session.server_anchor, backup_id=item.backup_id, archive=item.archive)


def replace_anchor(store: AnchorStore, account: DsAccount, last_anchor: str | None) -> None:
    """Force our Last anchor (tests and recovery: a wrong anchor provokes a 508 slow sync)."""
    key = AnchorStore.key(account.url, account.username, account.datastore)
    store.put(key, dataclasses.replace(store.get(key), last_anchor=last_anchor))
