"""The device agent's command execution: every server command checked against the ACLs.

:class:`CommandExecutor` applies the DM server's Get, Replace, Add, Delete,
Exec, Atomic and Sequence to the agent's tree and answers with Status (and
Results) through the session Channel. ACL rules (OMA DM 1.2 TND):
Get/Replace/Delete/Exec need the right on the node, Add on the parent; a
refusal is 425. Missing node 404, existing node on Add 418, wrong shape 405.

Whole subtrees: Get ``<uri>?list=TNDS+ACL+Format+Value`` returns TNDS
(nodes the server may not Get are left out); ``?list=Struct`` returns one item
per node; ``?prop=X`` a property. Add/Replace with Meta Type
application/vnd.syncml.dmtnds+xml import a TNDS fragment under the target.

Atomic runs its commands on a copy of the tree and swaps it in only when all
succeed (else 507, and 216 for those rolled back). An Exec inside Atomic is
accepted like any other (202) but its operation is deferred: it runs after the
session only if the Atomic committed; a rollback discards it (216). So no
Exec effect ever needs undoing (OMA DM 1.2 lets Atomic hold Exec; a device
that could not roll it back would have to refuse the Atomic).

Exec goes to a handler registered with host.dm.agent.api.register_exec_handler
(the agent's own: host.dm.agent.handlers).
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable

from host.dm.agent.api import (  # noqa: F401 - the Exec handler API, also importable from here
    RESULT_TYPE,
    Agent,
    AlertReport,
    ExecHandler,
    ExecOutcome,
    ExecRequest,
    exec_handler_for,
    register_exec_handler,
)
from host.dm.session import Channel, item_format, item_type
from host.errors import SimvaultError, TreeError
from host.syncml import model as m
from host.syncml.codec import serialize_element
from host.syncml.status import StatusCode, SyncMLStatusError
from host.tree.model import DMTree, NodeExists, NodeNotFound, NotAllowed
from host.tree.tnds import TNDS_MIME_XML, export_tnds, import_tnds, parse_list_query
from host.tree.uri import InvalidUri, normalize_uri, parent_uri, split_query

log = logging.getLogger(__name__)


class _Rollback(Exception):
    pass


@dataclass
class CommandExecutor:
    agent: Agent
    channel: Channel
    server_id: str
    deferred: list[tuple[str, str | None, Callable[[], AlertReport]]] = field(default_factory=list)
    changed: bool = False  # a change outside BaR/DMAcc (for the on-change policy)

    @property
    def tree(self) -> DMTree:
        return self.agent.tree.tree

    # ------------------------------------------------------------ dispatch
    def execute(self, msg_id: int, cmd: m.Command, in_atomic: bool = False) -> int:
        """Run one command; queue its Status (and Results); return the status code."""
        try:
            if isinstance(cmd, m.Atomic):
                code = self._atomic(msg_id, cmd)
            elif isinstance(cmd, m.Sequence):
                for child in cmd.commands:
                    self.execute(msg_id, child, in_atomic)
                code = StatusCode.OK
            elif isinstance(cmd, m.Exec):
                code = self._exec(cmd)  # its work is deferred: an Atomic rollback drops it
            elif isinstance(cmd, m.Get):
                code = self._get(msg_id, cmd)
            elif isinstance(cmd, (m.Replace, m.Add)):
                code = self._write(cmd)
            elif isinstance(cmd, m.Delete):
                code = self._delete(cmd)
            elif isinstance(cmd, m.Alert):
                # 1225: the server dropped a large object of ours it did not finish (DM 1.2)
                code = StatusCode.OK if cmd.data in (1222, 1223, 1225) else StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
            else:
                code = StatusCode.COMMAND_NOT_ALLOWED
        except SyncMLStatusError as exc:
            code = exc.status
        except (NodeNotFound, NodeExists, NotAllowed, InvalidUri) as exc:
            code = exc.dm_status
        except TreeError as exc:
            log.info("%s refused: %s", cmd.name, exc)
            code = StatusCode.COMMAND_FAILED
        except SimvaultError as exc:
            log.warning("%s failed: %s", cmd.name, exc)
            code = StatusCode.COMMAND_FAILED
        if not cmd.no_resp or code >= 300:
            self.channel.add_status(msg_id, cmd, code)
        return code

    def _allowed(self, uri: str, command: str) -> None:
        if not self.tree.acl_allows(uri, self.server_id, command):
            raise SyncMLStatusError(f"{command} on {uri} not allowed for {self.server_id}",
                                    StatusCode.PERMISSION_DENIED)

    def _note_change(self, uri: str) -> None:
        from host.dm.agent.tree import BAR, DMACC
        if not (uri.startswith(BAR) or uri.startswith(DMACC)):
            self.changed = True

    # ------------------------------------------------------------ Get
    def _get(self, msg_id: int, cmd: m.Get) -> int:
        items: list[m.Item] = []
        with self.agent.tree.lock:
            for item in cmd.items:
                if item.target is None:
                    raise SyncMLStatusError("Get without Target", StatusCode.BAD_REQUEST)
                path, query = split_query(item.target.loc_uri)
                uri = normalize_uri(path)
                node = self.tree.get(uri)
                self._allowed(uri, "Get")
                items.extend(self._get_items(uri, node, item.target.loc_uri, query))
        for out in items:
            self.channel.send(m.Results(cmd_id=1, msg_ref=msg_id, cmd_ref=cmd.cmd_id,
                                        target_refs=[], source_refs=[], items=[out]))
        return StatusCode.OK

    def _get_items(self, uri: str, node, asked: str, query: str | None) -> list[m.Item]:  # type: ignore[no-untyped-def]
        if query is None:
            if node.interior:
                return [m.Item(source=m.Source(asked), meta=m.Meta(format="node"),
                               data="/".join(node.children))]
            fmt = node.effective_format
            data = node.value if node.value is not None else ""
            if isinstance(data, bytes) or fmt == "b64":
                data = node.data
                fmt = "b64"
            return [m.Item(source=m.Source(asked), meta=m.Meta(format=fmt, type=node.type), data=data)]
        if query.startswith("list=TNDS") or query.startswith("TNDS"):
            props, values = parse_list_query(query)
            visible = self._readable_copy(uri)
            xml = export_tnds(visible, uri, values=values, props=props, indent="")
            return [m.Item(source=m.Source(asked), meta=m.Meta(format="xml", type=TNDS_MIME_XML),
                           data=xml.decode("utf-8"))]
        if query == "list=Struct":
            return [m.Item(source=m.Source(u), meta=m.Meta(format=n.effective_format))
                    for u, n in self.tree.walk(uri) if self.tree.acl_allows(u, self.server_id, "Get")]
        if query.startswith("prop="):
            value = self.tree.get_property(uri, query[5:])
            return [m.Item(source=m.Source(asked), meta=m.Meta(format="chr"), data=value or "")]
        raise SyncMLStatusError(f"unsupported Get query {query[:40]}", StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)

    def _readable_copy(self, uri: str) -> DMTree:
        """The tree without the subtrees under ``uri`` the server may not Get."""
        copy = self.tree.copy()
        hidden = [u for u, _ in self.tree.walk(uri) if not self.tree.acl_allows(u, self.server_id, "Get")]
        for u in sorted(hidden, key=len):
            if copy.find(u) is not None:
                copy.delete(u)
        return copy

    # ------------------------------------------------------------ Add / Replace / Delete
    def _write(self, cmd: m.Replace | m.Add) -> int:
        add = isinstance(cmd, m.Add)
        pending = False
        for item in cmd.items:
            if item.target is None:
                raise SyncMLStatusError(f"{cmd.name} without Target", StatusCode.BAD_REQUEST)
            whole = self.channel.feed_item(item)
            if whole is None:
                pending = True
                continue
            self._write_item(add, whole, cmd.meta)
        return StatusCode.CHUNKED_ITEM_ACCEPTED if pending else StatusCode.OK

    def _write_item(self, add: bool, item: m.Item, cmd_meta: m.Meta | None) -> None:
        from host.dm.agent.tree import is_volatile
        assert item.target is not None
        path, query = split_query(item.target.loc_uri)
        uri = normalize_uri(path)
        fmt = item_format(item, cmd_meta)
        mime = item_type(item, cmd_meta)
        data = item.data
        with self.agent.tree.lock:
            if mime == TNDS_MIME_XML:
                self._allowed(uri, "Add" if add else "Replace")
                # WBXML nests TNDS as a document of its own (xml2wbxml's way): it decodes to an element
                text = serialize_element(data) if isinstance(data, ET.Element) else data
                if not isinstance(text, (str, bytes)):
                    raise SyncMLStatusError("TNDS item without data", StatusCode.BAD_REQUEST)
                import_tnds(self.tree, uri, text, mode="add" if add else "replace")
                self._note_change(uri)
                return
            if query is not None:
                if not query.startswith("prop=") or add:
                    raise SyncMLStatusError("unsupported query", StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
                self._allowed(parent_uri(uri) if uri != "." else uri, "Replace")
                self.tree.set_property(uri, query[5:], data if isinstance(data, str) else "")
                self._note_change(uri)
                return
            if isinstance(data, bytes) and fmt == "b64" and not is_volatile(uri):
                from base64 import b64encode
                data = b64encode(data).decode("ascii")  # keep b64 leaves as their text
            if add:
                node = self.tree.find(uri)
                if node is not None:
                    raise NodeExists(f"{uri} exists")
                self._allowed(parent_uri(uri), "Add")
                if self.tree.find(parent_uri(uri)) is None:
                    raise NodeNotFound(f"parent of {uri} missing")
                if fmt == "node":
                    self.tree.add(uri, None, format="node")
                else:
                    self.tree.add(uri, data if data is not None else "", format=fmt or "chr", type=mime)
            else:
                if is_volatile(uri) and self.tree.find(uri) is None and self.tree.find(parent_uri(uri)):
                    self._allowed(parent_uri(uri), "Replace")
                    self.tree.add(uri, b"", format="bin", type=mime)  # Staging/Archive exists on demand
                node = self.tree.get(uri)
                self._allowed(uri, "Replace")
                if node.interior:
                    raise NotAllowed(f"{uri} is interior")
                if is_volatile(uri) and not isinstance(data, bytes):
                    raise SyncMLStatusError("an archive travels with Format b64", StatusCode.UNSUPPORTED_MEDIA_TYPE)
                if is_volatile(uri):
                    fmt = "bin"  # an archive is kept as raw bytes (it travelled as b64)
                self.tree.replace(uri, data if data is not None else "", format=fmt or node.format,
                                  type=mime or node.type)
            self._note_change(uri)

    def _delete(self, cmd: m.Delete) -> int:
        with self.agent.tree.lock:
            for item in cmd.items:
                if item.target is None:
                    raise SyncMLStatusError("Delete without Target", StatusCode.BAD_REQUEST)
                uri = normalize_uri(item.target.loc_uri)
                self.tree.get(uri)
                self._allowed(uri, "Delete")
                self.tree.delete(uri)
                self._note_change(uri)
        return StatusCode.OK

    # ------------------------------------------------------------ Atomic / Exec
    def _atomic(self, msg_id: int, cmd: m.Atomic) -> int:
        holder = self.agent.tree
        with holder.lock:
            snapshot = holder.tree.copy()
            changed_before = self.changed
            first_status = len(self.channel.statuses)
            first_queued = len(self.channel.queue)
            first_deferred = len(self.deferred)
            codes = [self.execute(msg_id, child, in_atomic=True) for child in cmd.commands]
            if all(200 <= c < 300 for c in codes):
                return StatusCode.OK
            holder.tree.replace_contents(snapshot)
            self.changed = changed_before
            # children that had succeeded are reported as rolled back; their Results dropped
            for st in self.channel.statuses[first_status:]:
                if 200 <= st.data < 300:
                    st.data = StatusCode.ATOMIC_ROLLBACK_OK
            while len(self.channel.queue) > first_queued:
                self.channel.queue.pop()
            del self.deferred[first_deferred:]  # accepted Execs of the Atomic never run
            return StatusCode.ATOMIC_FAILED

    def _exec(self, cmd: m.Exec) -> int:
        if cmd.item.target is None:
            raise SyncMLStatusError("Exec without Target", StatusCode.BAD_REQUEST)
        uri = normalize_uri(cmd.item.target.loc_uri)
        with self.agent.tree.lock:
            self.tree.get(uri)
            self._allowed(uri, "Exec")
        handler = exec_handler_for(uri)
        if handler is None:
            return StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
        data = cmd.item.data if isinstance(cmd.item.data, str) else ""
        outcome = handler(ExecRequest(self.agent, uri, data, cmd.correlator, self.server_id))
        if outcome.work is not None:
            self.deferred.append((uri, cmd.correlator, outcome.work))
        return outcome.status

