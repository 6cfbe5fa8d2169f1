"""A standard OMA DM 1.2 client over HTTP for tests and bench: no simvault BaR MO.

It runs the agent's command execution (host.dm.agent.commands.CommandExecutor: ACLs,
Get ?list=TNDS / ?prop=, Add/Replace/Delete, Atomic) on a plain tree, without the
agent around it, and can be configured to look like other stock clients:
``tnds=False`` answers ?list=TNDS with 406, ``structdata=True`` answers
?list=StructData, ``atomic="refuse"`` answers Atomic with 406, ``atomic="ignore"``
runs an Atomic's commands without a Status for it (libdmclient's way), ``tnds_limit``
answers 413 to a TNDS longer than that,
``fault`` rewrites each outgoing message (bad-input tests), ``stop_after`` stops
answering after that many messages (a client that dies mid-walk).

Authentication: syncml:auth-md5 with the nonce the server gave (the first
message of the first session is challenged once). The server's Cred is not
checked: this is a test peer.
"""
from __future__ import annotations

import base64
import secrets
import threading
import urllib.request
from types import SimpleNamespace
from typing import Callable

from host.dm import dmauth
from host.dm.agent.commands import CommandExecutor
from host.dm.session import WIRE_WBXML, WIRE_XML, Channel, next_message_alert
from host.syncml import model as m
from host.syncml.auth import AUTH_MD5
from host.syncml.status import StatusCode, SyncMLStatusError
from host.tree.model import DMTree
from host.tree.uri import split_query

OPEN_ACL = "Add=*&Delete=*&Exec=*&Get=*&Replace=*"


class _Executor(CommandExecutor):
    def __init__(self, client: "StockClient", channel: Channel, server_id: str) -> None:
        super().__init__(SimpleNamespace(tree=SimpleNamespace(tree=client.tree, lock=client.lock)),
                         channel, server_id)
        self.client = client

    def _get_items(self, uri, node, asked, query):  # type: ignore[no-untyped-def]
        if query is not None and query.startswith("list=TNDS") and not self.client.tnds:
            raise SyncMLStatusError("no TNDS", StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
        if query == "list=StructData":
            if not self.client.structdata:
                raise SyncMLStatusError("no StructData", StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
            out = []
            for u, n in self.tree.walk(uri):
                if not self.tree.acl_allows(u, self.server_id, "Get"):
                    continue
                if n.interior:
                    out.append(m.Item(source=m.Source(u), meta=m.Meta(format="node")))
                else:
                    data = n.data if n.format in ("b64", "bin") else (n.value or "")
                    out.append(m.Item(source=m.Source(u), meta=m.Meta(format="b64" if n.format == "bin"
                                                                      else n.effective_format, type=n.type),
                                      data=data))
            return out
        items = super()._get_items(uri, node, asked, query)
        if query is not None and query.startswith("list=TNDS") and self.client.tnds_limit is not None \
                and len(items[0].data) > self.client.tnds_limit:
            raise SyncMLStatusError("TNDS too large to send", StatusCode.REQUEST_ENTITY_TOO_LARGE)
        if query is None and self.client.no_format:  # some clients leave Meta Format out
            items = [i if i.meta is None or i.meta.format == "b64" else
                     m.Item(source=i.source, meta=m.Meta(type=i.meta.type), data=i.data) for i in items]
        return items

    def _atomic(self, msg_id: int, cmd: m.Atomic) -> int:
        if self.client.atomic == "refuse":
            return StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
        if self.client.atomic == "ignore":
            for child in cmd.commands:
                self.execute(msg_id, child)
            raise _NoStatus
        return super()._atomic(msg_id, cmd)

    def execute(self, msg_id: int, cmd: m.Command, in_atomic: bool = False) -> int:
        try:
            return super().execute(msg_id, cmd, in_atomic)
        except _NoStatus:
            return StatusCode.OK


class _NoStatus(Exception):
    """An Atomic answered by its commands only (no Status of its own)."""


class StockClient:
    def __init__(self, url: str, device_id: str, password: str, tree: DMTree, *, server_id: str = "simvault-dms",
                 user: str | None = None, tnds: bool = True, structdata: bool = False, atomic: str = "yes",
                 no_format: bool = False, max_msg_size: int = 16 * 1024, wbxml: bool = False,
                 tnds_limit: int | None = None, max_obj_size: int = 4 * 1024 * 1024,
                 fault: Callable[[m.SyncMLMessage], m.SyncMLMessage | bytes] | None = None,
                 stop_after: int | None = None) -> None:
        self.url, self.device_id, self.password, self.tree = url, device_id, password, tree
        self.server_id, self.user = server_id, user or device_id
        self.tnds, self.structdata, self.atomic, self.no_format = tnds, structdata, atomic, no_format
        self.tnds_limit = tnds_limit  # a TNDS longer than this is answered 413
        self.max_obj_size = max_obj_size  # announced in every SyncHdr (MaxObjSize)
        self.max_msg_size, self.wire = max_msg_size, WIRE_WBXML if wbxml else WIRE_XML
        self.fault, self.stop_after = fault, stop_after
        self.lock = threading.RLock()
        self.nonce = b""
        self.bytes_sent = self.bytes_received = self.messages = 0

    def _post(self, body: bytes) -> bytes:
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": self.wire.content_type})
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback test server
            data = resp.read()
        self.bytes_sent += len(body)
        self.bytes_received += len(data)
        self.messages += 1
        return data

    def session(self) -> int:
        """One client-initiated session (Alert 1201) to its end; the number of messages sent."""
        ch = Channel(f"{secrets.randbelow(0xFFFE) + 1:X}", m.Source(self.device_id, self.user), m.Target(self.url),
                     peer_max_msg_size=self.max_msg_size, own_max_msg_size=self.max_msg_size,
                     max_obj_size=self.max_obj_size)
        ch.send(m.Alert(cmd_id=1, data=1201))
        devinfo = [m.Item(source=m.Source(u), meta=m.Meta(format="chr"), data=n.value)
                   for u, n in self.tree.walk("./DevInfo") if not n.interior] if self.tree.find("./DevInfo") else []
        if devinfo:
            ch.send(m.Replace(cmd_id=1, items=devinfo))
        first = list(ch.queue)
        executor = _Executor(self, ch, self.server_id)
        send_cred, sent = True, 0
        for _ in range(5000):
            cred = m.Cred(data=dmauth.md5_from_secret(dmauth.secret_of(self.user, self.password), self.nonce),
                          meta=m.Meta(type=AUTH_MD5, format="b64")) if send_cred else None
            msg = ch.build(cred=cred)
            out = self.fault(msg) if self.fault else msg
            if self.stop_after is not None and sent >= self.stop_after:
                return sent  # gone: no more messages
            reply = self.wire.decode(self._post(out if isinstance(out, bytes) else self.wire.encode(out)))
            sent += 1
            hdr = next((c for c in reply.commands if isinstance(c, m.Status) and c.cmd == "SyncHdr"), None)
            if hdr is not None and hdr.chal is not None and hdr.chal.meta.next_nonce:
                self.nonce = base64.b64decode(hdr.chal.meta.next_nonce)
            if hdr is None or hdr.data in (401, 407):
                if hdr is None or not send_cred or sent > 2:
                    raise AssertionError(f"the server refused the client: {hdr and hdr.data}")
                ch.queue.clear()
                ch.statuses.clear()
                for o in first:
                    ch.send(o.cmd, o.tag)
                continue
            send_cred = False
            if reply.header.meta is not None and reply.header.meta.max_msg_size:
                ch.peer_max_msg_size = reply.header.meta.max_msg_size
            commands = [c for c in reply.commands if not isinstance(c, m.Status)]
            for cmd in commands:
                executor.execute(reply.header.msg_id, cmd)
            if reply.final and not commands and not ch.has_pending:
                return sent
            if not reply.final:
                ch.statuses.append(next_message_alert(ch))  # type: ignore[arg-type]
            ch.add_status(reply.header.msg_id, None, StatusCode.OK)
        raise AssertionError("session did not end")


def open_tree(tree: DMTree) -> DMTree:
    """The tree with a root ACL granting every command to every server (a test device's)."""
    tree.root.acl = OPEN_ACL
    return tree


__all__ = ["OPEN_ACL", "StockClient", "open_tree", "split_query"]
