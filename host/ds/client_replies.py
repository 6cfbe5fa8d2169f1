"""The DS client session's handling of the server's answers (Status, Alert, Sync, Put/Get).

A mixin of host.ds.client._Session (its state: what was sent, the statuses owed,
the assembler of large objects, the anchors), apart so that client.py stays the
session's message flow and the public DsClient.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from host.ds.errors import DsAuthError, DsNoBackupError, DsProtocolError, DsStatusError
from host.ds.largeobj import no_end_of_data_alert
from host.ds.payload import archive_item_id
from host.syncml import auth, devinf
from host.syncml import model as m
from host.syncml.reply import header_status, status_with_refs
from host.syncml.status import AlertCode, StatusCode, SyncMLStatusError, status_name

log = logging.getLogger("host.ds.client")

NS_METINF = "syncml:metinf"


class _AuthRetry(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _norm(uri: str) -> str:
    return uri.removeprefix("./")


class ReplyHandling:
    # ------------------------------------------------------------ processing the server's messages
    def _status_for(self, hdr: m.SyncHdr, cmd: m.Command, code: int, target: str | None = None,
                    source: str | None = None, items: list[m.Item] | None = None) -> None:
        self.statuses.append(status_with_refs(cmd, hdr.msg_id, 0, code, target, source, items))

    def _process(self, answer: m.SyncMLMessage) -> None:
        hdr = answer.header
        self.statuses = [header_status(hdr, cmd_id=0, code=StatusCode.OK)]
        if hdr.resp_uri:
            self.url = hdr.resp_uri
        if hdr.meta is not None:
            if hdr.meta.max_msg_size:
                self.server_max_msg = hdr.meta.max_msg_size
            if hdr.meta.max_obj_size:
                self.server_max_obj = hdr.meta.max_obj_size
        for cmd in answer.commands:
            if isinstance(cmd, m.Status):
                self._on_status(cmd)
            elif isinstance(cmd, m.Alert):
                self._on_alert(hdr, cmd)
            elif isinstance(cmd, m.Put):
                self._status_for(hdr, cmd, StatusCode.OK, source=devinf.DEVINF_URI)
            elif isinstance(cmd, m.Get):
                target = cmd.items[0].target.loc_uri if cmd.items and cmd.items[0].target else ""
                if target != devinf.DEVINF_URI:
                    self._status_for(hdr, cmd, StatusCode.NOT_FOUND, target=target)
                    continue
                self._status_for(hdr, cmd, StatusCode.OK, target=target)
                self.statuses.append(m.Results(cmd_id=0, msg_ref=hdr.msg_id, cmd_ref=cmd.cmd_id,
                                               meta=m.Meta(type=devinf.DEVINF_TYPE), target_refs=[],
                                               source_refs=[devinf.DEVINF_URI],
                                               items=[m.Item(source=m.Source(devinf.DEVINF_URI), data=self._devinf())]))
            elif isinstance(cmd, m.Sync):
                self._on_sync(hdr, cmd)
            elif isinstance(cmd, m.Results):
                self._status_for(hdr, cmd, StatusCode.OK)
            else:
                self._status_for(hdr, cmd, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
        for cmd in answer.commands:
            if cmd.no_resp:
                self.statuses = [s for s in self.statuses if not (isinstance(s, m.Status) and s.cmd_ref == cmd.cmd_id)]

    def _on_status(self, st: m.Status) -> None:
        sent = self.sent.get((st.msg_ref, st.cmd_ref))
        if sent is None:
            raise DsProtocolError(f"DS server sent Status {st.data} for a command we never sent "
                                  f"(MsgRef {st.msg_ref}, CmdRef {st.cmd_ref})")
        code = st.data
        if sent.purpose == "hdr":
            if st.chal is not None and st.chal.meta.next_nonce:
                self.nonce = auth.nonce_from_chal(st.chal)
                self.next_nonce_text = st.chal.meta.next_nonce
            if code in (StatusCode.INVALID_CREDENTIALS, StatusCode.MISSING_CREDENTIALS):
                chal_type = st.chal.meta.type if st.chal is not None else None
                if chal_type == auth.AUTH_MD5 and self.nonce is not None:
                    self.cred_type = "md5"
                elif chal_type == auth.AUTH_BASIC:
                    self.cred_type = "basic"
                raise _AuthRetry(code)
            if code in (StatusCode.AUTHENTICATION_ACCEPTED, StatusCode.OK):
                self.authenticated = True
                return
            raise DsStatusError(f"DS server refused the session: {code} {status_name(code)}", code)
        if sent.purpose == "alert":
            if code == StatusCode.REFRESH_REQUIRED:
                self.slow_sync = True
                self.mode = AlertCode.SLOW_SYNC
                return
            if code == StatusCode.RESUME_NOT_POSSIBLE and self.mode == AlertCode.RESUME:
                return  # the server cannot resume: its Alert names the sync type of this session
            if code == StatusCode.NOT_FOUND:
                raise DsNoBackupError(f"DS server has no datastore {self.a.datastore!r} for user "
                                      f"{self.a.username!r}: back up first or fix datastore=")
            if code in (StatusCode.INVALID_CREDENTIALS, StatusCode.FORBIDDEN):
                raise DsAuthError(f"DS server denies user {self.a.username!r} access to datastore "
                                  f"{self.a.datastore!r} ({code})", code)
            if code != StatusCode.OK:
                raise DsStatusError(f"DS server refused sync of {self.a.datastore!r}: {code} {status_name(code)}", code)
            return
        if sent.purpose == "item":
            if code == StatusCode.CHUNKED_ITEM_ACCEPTED:
                return
            if code in (StatusCode.OK, StatusCode.ITEM_ADDED, 202, 418):
                self.sent_items_ok += 1
                self.item_statuses.append(code)
                return
            raise DsStatusError(f"DS server did not store the archive item: {code} {status_name(code)}", code)
        if sent.purpose == "delete" and not (200 <= code < 300 or code == StatusCode.NOT_FOUND):
            log.info("DS server answered %s to the Delete of an older archive; it stays", code)
        if sent.purpose in ("sync", "map") and code != StatusCode.OK:
            raise DsStatusError(f"DS server failed our {sent.name}: {code} {status_name(code)}", code)
        if sent.purpose == "devinf" and code != StatusCode.OK:
            log.info("DS server answered %s to our DevInf Put", code)

    def _on_alert(self, hdr: m.SyncHdr, cmd: m.Alert) -> None:
        code = cmd.data or 0
        if code == AlertCode.NEXT_MESSAGE:
            self._status_for(hdr, cmd, StatusCode.OK)
            return
        if code == AlertCode.NO_END_OF_DATA:  # the server dropped our large object: it is not stored
            self._status_for(hdr, cmd, StatusCode.OK)
            self.peer_no_end_of_data = True
            return
        if not 200 <= code <= 210:
            self._status_for(hdr, cmd, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
            return
        item = cmd.items[0] if cmd.items else None
        target = item.target.loc_uri if item and item.target else ""
        source = item.source.loc_uri if item and item.source else ""
        if _norm(target) != _norm(self.a.local_uri):
            self._status_for(hdr, cmd, StatusCode.NOT_FOUND, target=target, source=source)
            return
        anchor = item.meta.anchor if item and item.meta else None
        self.server_anchor = anchor.next if anchor else None
        self.server_alerted = True
        if code == AlertCode.SLOW_SYNC:
            self.slow_sync = True
            self.mode = code
        elif self.mode == AlertCode.RESUME:  # the server resumed (our sync type) or named another one
            self.mode = code
        elif code != self.mode:
            raise DsProtocolError(f"DS server alerted sync type {code}, we asked for {self.mode}")
        echo = None
        if anchor is not None:
            echo = ET.Element(f"{{{NS_METINF}}}Anchor")
            ET.SubElement(echo, f"{{{NS_METINF}}}Next").text = anchor.next
        self._status_for(hdr, cmd, StatusCode.OK, target=target, source=source,
                         items=[m.Item(data=echo)] if echo is not None else [])

    def _on_sync(self, hdr: m.SyncHdr, sync: m.Sync) -> None:
        target = sync.target.loc_uri if sync.target else ""
        self._status_for(hdr, sync, StatusCode.OK, target=target,
                         source=sync.source.loc_uri if sync.source else None)
        for op in sync.commands:
            if isinstance(op, (m.Add, m.Replace)):
                for item in op.items:
                    guid = item.source.loc_uri if item.source else ""
                    try:
                        whole = self.assembler.feed(item)
                    except SyncMLStatusError as exc:
                        raise DsProtocolError(f"large object from the DS server refused: {exc}", exc.status) from None
                    for first in self.assembler.take_abandoned():  # cut off by this new object: Alert 223
                        self.statuses.append(no_end_of_data_alert(first))
                        log.info("DS server started a new object before the last chunk of %s: Alert 223",
                                 first.source.loc_uri[:64] if first.source else "?")
                    if whole is None:
                        self._status_for(hdr, op, StatusCode.CHUNKED_ITEM_ACCEPTED, source=guid)
                        continue
                    text = whole.data if isinstance(whole.data, str) else (
                        whole.data.decode("utf-8", "replace") if isinstance(whole.data, bytes) else "")
                    self.received.append((guid, text))
                    # an archive keeps the LUID its backup used (sv-<id>), so a later two-way backup of the same
                    # id Replaces it rather than Deleting it under a second name; anything else: r-<GUID>
                    bid = archive_item_id(text)
                    luid = f"sv-{bid}"[:64] if bid else f"r-{guid}"[:64]
                    if luid in self.received_luids:
                        luid = f"r-{guid}"[:64]
                    self.received_luids.append(luid)
                    self.map_items.append(m.MapItem(m.Target(guid), m.Source(luid)))
                    self._status_for(hdr, op, StatusCode.ITEM_ADDED, source=guid)
            elif isinstance(op, m.Delete):
                self._status_for(hdr, op, StatusCode.OK)
            else:
                self._status_for(hdr, op, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
