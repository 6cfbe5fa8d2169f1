"""OMA DM 1.2 session plumbing shared by the DM server and the device agent.

A :class:`Channel` is one side of a DM session: it numbers messages and
commands, collects the Status commands owed to the peer, queues the commands
to send, and builds each outgoing message so that it fits the peer's
MaxMsgSize. A queued item command whose data does not fit is cut into a large
object (OMA DM 1.2 LrgObj: chunks with MoreData, Meta Size on the first) by
host.syncml.packing; the chunks go out one message at a time, each answered
by the peer with Status 213 and Alert 1222 until the last.

Every sent command is remembered under (MsgID, CmdID) with an opaque ``tag``,
so a Status or Results that comes back can be routed to whoever asked
(``Channel.tag_for``). The chunks of one large object share the tag of the
command they were cut from; the commands inside an Atomic or Sequence share
its tag (their Status names them: ``Status.cmd``, ``cmd_ref``).
"""
from __future__ import annotations

import dataclasses
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import unquote_to_bytes

from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.packing import LargeObjectAssembler, pack
from host.syncml.wbxml import CONTENT_TYPE_DM_WBXML, CONTENT_TYPE_DS_WBXML, decode_wbxml, encode_wbxml

DEFAULT_MAX_MSG_SIZE = 64 * 1024
MIN_MAX_MSG_SIZE = 2048  # below this, a Status block alone may not fit
# room kept free for the Status commands of a later message when a large object is cut
STATUS_MARGIN = 768
ALERT_NEXT_MESSAGE = 1222
ALERT_SERVER_INITIATED = 1200
ALERT_CLIENT_INITIATED = 1201
ALERT_SESSION_ABORT = 1223
ALERT_GENERIC = 1226
ALERT_NO_END_OF_DATA = 1225  # DM 1.2 large objects: a new object arrived before the last chunk


@dataclass(frozen=True)
class Wire:
    """A SyncML DM representation on the wire: XML or WBXML (OMA DM 1.2 allows both)."""

    content_type: str
    encode: Callable[[m.SyncMLMessage], bytes]
    decode: Callable[[bytes], m.SyncMLMessage]


WIRE_XML = Wire(codec.CONTENT_TYPE_DM_XML, codec.encode, codec.decode)
WIRE_WBXML = Wire(CONTENT_TYPE_DM_WBXML, encode_wbxml, decode_wbxml)


# Stock DM clients (libdmclient, Funambol's) label DM messages with the plain SyncML types;
# OMA DM 1.2 names the .dm+ ones. Both are DM here, answered under the label the client used.
DM_WIRES = {w.content_type: w for w in (
    WIRE_XML, WIRE_WBXML,
    Wire(codec.CONTENT_TYPE_DS_XML, codec.encode, codec.decode),
    Wire(CONTENT_TYPE_DS_WBXML, encode_wbxml, decode_wbxml))}
DM_CONTENT_TYPES = tuple(DM_WIRES)


def wire_for(content_type: str | None) -> Wire | None:
    """The Wire of an HTTP Content-Type (parameters ignored); None when it is no DM type."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return DM_WIRES.get(base)


def command_size(cmd: m.Command) -> int:
    return len(codec.encode_command(cmd).encode("utf-8"))


def _splittable(cmd: m.Command) -> bool:
    if isinstance(cmd, (m.ItemCommand, m.Results)) and len(cmd.items) == 1:
        item = cmd.items[0]
        return isinstance(item.data, (str, bytes)) and bool(item.data) and not item.more_data
    return False


@dataclass
class Outgoing:
    """A queued command and the tag its Status/Results will be routed with."""

    cmd: m.Command
    tag: object = None


def _item_key(item: m.Item) -> tuple[str | None, str | None]:
    return (item.target.loc_uri if item.target else None, item.source.loc_uri if item.source else None)


@dataclass
class Channel:
    """One side of a DM session (see module doc)."""

    session_id: str
    local: m.Location
    remote: m.Location
    peer_max_msg_size: int = DEFAULT_MAX_MSG_SIZE
    own_max_msg_size: int = DEFAULT_MAX_MSG_SIZE
    max_obj_size: int | None = None
    peer_max_obj_size: int | None = None  # the peer's SyncHdr MaxObjSize, once it stated one
    last_sent_msg_id: int = 0
    last_received_msg_id: int = 0
    statuses: list[m.Status] = field(default_factory=list)
    queue: deque[Outgoing] = field(default_factory=deque)
    sent: dict[tuple[int, int], tuple[str, object]] = field(default_factory=dict)
    _next_cmd_id: int = 1

    def __post_init__(self) -> None:
        self.assembler = LargeObjectAssembler(self.max_obj_size)
        self._chunked_first: m.Item | None = None  # first chunk of the large object being received

    def feed_item(self, item: m.Item, cmd_meta: m.Meta | None = None) -> m.Item | None:
        """Large-object reassembly (None while chunks are pending) with OMA DM 1.2's rule for an
        interrupted object: when a new object arrives before the last chunk, the partial one is
        dropped and Alert 1225 (End of Data for chunked object not received), naming its
        Source/Target, is queued for the peer; the new object is then handled as any other."""
        pending = self._chunked_first
        if pending is not None and _item_key(item) != _item_key(pending):
            self.assembler.reset()
            self._chunked_first = None
            self.send(m.Alert(cmd_id=1, data=ALERT_NO_END_OF_DATA,
                              items=[m.Item(target=pending.target, source=pending.source)]))
            pending = None
        try:
            whole = self.assembler.feed(item, cmd_meta)
        except SyncMLError:
            self._chunked_first = None  # the assembler dropped the object too
            raise
        self._chunked_first = (pending or item) if whole is None else None
        return whole

    # ------------------------------------------------------------ numbering
    def new_cmd_id(self) -> int:
        """CmdIDs grow over the whole session, so they are unique in every message."""
        self._next_cmd_id += 1
        return self._next_cmd_id - 1

    def send(self, cmd: m.Command, tag: object = None) -> m.Command:
        """Queue ``cmd`` (its CmdID is replaced by a fresh one)."""
        cmd = self._renumber(cmd)
        self.queue.append(Outgoing(cmd, tag))
        return cmd

    def _renumber(self, cmd: m.Command) -> m.Command:
        """Fresh CmdIDs for cmd and, inside Atomic/Sequence/Sync, for every nested command."""
        new_id = self.new_cmd_id()
        if isinstance(cmd, (m.Atomic, m.Sequence, m.Sync)):
            return dataclasses.replace(cmd, cmd_id=new_id, commands=[self._renumber(c) for c in cmd.commands])
        return dataclasses.replace(cmd, cmd_id=new_id)

    def tag_for(self, msg_ref: int, cmd_ref: int) -> tuple[str, object] | None:
        """(command name, tag) of the command a Status/Results refers to."""
        return self.sent.get((msg_ref, cmd_ref))

    # ------------------------------------------------------------ statuses
    def add_status(self, msg_ref: int, cmd: m.Command | None, code: int, *,
                   chal: m.Chal | None = None, items: list[m.Item] | None = None) -> m.Status:
        """Owe the peer a Status: for ``cmd`` or, when None, for its SyncHdr."""
        if cmd is None:
            st = m.Status(cmd_id=self.new_cmd_id(), msg_ref=msg_ref, cmd_ref=0, cmd="SyncHdr",
                          data=code, target_refs=[self.local.loc_uri],
                          source_refs=[self.remote.loc_uri], chal=chal)
            self.statuses.insert(0, st)
            return st
        targets: list[str] = []
        sources: list[str] = []
        for item in getattr(cmd, "items", []) or ([cmd.item] if isinstance(cmd, m.Exec) else []):
            if item.target is not None:
                targets.append(item.target.loc_uri)
            if item.source is not None:
                sources.append(item.source.loc_uri)
        st = m.Status(cmd_id=self.new_cmd_id(), msg_ref=msg_ref, cmd_ref=cmd.cmd_id, cmd=cmd.name,
                      data=code, target_refs=targets[:1], source_refs=sources[:1], chal=chal,
                      items=items or [])
        self.statuses.append(st)
        return st

    @property
    def has_pending(self) -> bool:
        return bool(self.queue)

    # ------------------------------------------------------------ building
    def header(self, msg_id: int, *, cred: m.Cred | None = None, meta: m.Meta | None = None,
               resp_uri: str | None = None) -> m.SyncHdr:
        return m.SyncHdr(session_id=self.session_id, msg_id=msg_id, target=m.Target(self.remote.loc_uri,
                         self.remote.loc_name), source=m.Source(self.local.loc_uri, self.local.loc_name),
                         cred=cred, meta=meta, resp_uri=resp_uri)

    def build(self, *, cred: m.Cred | None = None, extra: list[m.Command] | None = None,
              resp_uri: str | None = None) -> m.SyncMLMessage:
        """The next message: owed statuses, ``extra`` commands, then as much of the queue as fits.

        ``Final`` is set when the queue is empty afterwards; otherwise the peer
        must answer (Alert 1222) to get the rest.
        """
        self.last_sent_msg_id += 1
        msg_id = self.last_sent_msg_id
        header = self.header(msg_id, cred=cred, resp_uri=resp_uri,
                             meta=m.Meta(max_msg_size=self.own_max_msg_size,
                                         max_obj_size=self.max_obj_size))
        limit = self.peer_max_msg_size
        overhead = len(codec.encode(m.SyncMLMessage(header, [], final=True)))
        body: list[m.Command] = list(self.statuses) + list(extra or [])
        self.statuses = []
        used = overhead + sum(command_size(c) for c in body)
        placed_command = False
        while self.queue:
            out = self.queue[0]
            size = command_size(out.cmd)
            if used + size <= limit:
                body.append(out.cmd)
                self._record(msg_id, out)
                self.queue.popleft()
                used += size
                placed_command = True
                continue
            if placed_command and overhead + size <= limit - STATUS_MARGIN:
                break  # fits a later message whole
            if not _splittable(out.cmd):
                if placed_command:
                    break
                # nothing else in this message: send it even if over (peer answers 413 if it cares)
                body.append(out.cmd)
                self._record(msg_id, out)
                self.queue.popleft()
                placed_command = True
                break
            room = limit - (used - overhead) - STATUS_MARGIN
            try:
                chunks = [c for msg in pack(header, [out.cmd], room) for c in msg.commands]
            except SyncMLError:
                if placed_command:
                    break
                raise
            self.queue.popleft()
            first, rest = chunks[0], chunks[1:]
            body.append(first)
            self._record(msg_id, Outgoing(first, out.tag))
            for chunk in reversed(rest):
                self.queue.appendleft(Outgoing(dataclasses.replace(chunk, cmd_id=self.new_cmd_id()), out.tag))
            break
        return m.SyncMLMessage(header, body, final=not self.queue)

    def _record(self, msg_id: int, out: Outgoing) -> None:
        self.sent[(msg_id, out.cmd.cmd_id)] = (out.cmd.name, out.tag)
        if isinstance(out.cmd, (m.Atomic, m.Sequence)):  # their commands' Statuses reach the same tag
            for child in out.cmd.commands:
                self.sent[(msg_id, child.cmd_id)] = (child.name, out.tag)


def next_message_alert(channel: Channel) -> m.Alert:
    """Alert 1222: 'send me the next message of your package'."""
    return m.Alert(cmd_id=channel.new_cmd_id(), data=ALERT_NEXT_MESSAGE,
                   items=[m.Item(target=m.Target(channel.remote.loc_uri),
                                 source=m.Source(channel.local.loc_uri))])


def item_format(item: m.Item, cmd_meta: m.Meta | None) -> str | None:
    if item.meta is not None and item.meta.format:
        return item.meta.format
    return cmd_meta.format if cmd_meta is not None else None


def item_type(item: m.Item, cmd_meta: m.Meta | None) -> str | None:
    if item.meta is not None and item.meta.type:
        return item.meta.type
    return cmd_meta.type if cmd_meta is not None else None


_KV_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KV_MUST_ESCAPE = re.compile(r"[%;=\x00-\x1f\x7f]")
_KV_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _kv_escape(value: str) -> str:
    """Percent-encode the bytes that would break the format: % ; = and control characters."""
    out = _KV_MUST_ESCAPE.sub(lambda mt: "".join(f"%{b:02X}" for b in mt.group().encode("utf-8")), value)
    stripped = out.strip()  # parse_kv strips edge whitespace: keep a value's own as %20
    if stripped != out:
        lead = len(out) - len(out.lstrip())
        out = "%20" * lead + stripped + "%20" * (len(out) - len(stripped) - lead)
    return out


def _kv_unescape(value: str, key: str) -> str:
    if "%" in _KV_ESCAPE.sub("", value):
        raise SyncMLError(f"value of {key[:40]} has a '%' that is not %XX: percent-encode % ; = in values")
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise SyncMLError(f"value of {key[:40]} is not UTF-8 once percent-decoded") from None


def parse_kv(data: str) -> dict[str, str]:
    """'a=1;b=x y;p=a%3Bb' -> {'a': '1', 'b': 'x y', 'p': 'a;b'} (Backup MO Exec Data and alert Data).

    Strict (docs/BACKUP_MO.md): keys [A-Za-z0-9_.-], each once; values percent-encoded
    (% ; = and control characters must be %XX, UTF-8); a raw '=' in a value is refused.
    """
    out: dict[str, str] = {}
    for part in (data or "").split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise SyncMLError(f"'{part[:40]}' is not key=value: write e.g. destination=card;scope=.")
        if not _KV_KEY.fullmatch(key):
            raise SyncMLError(f"key {key[:40]!r} is not a name ([A-Za-z0-9_.-]): fix the Data")
        if key in out:
            raise SyncMLError(f"key {key} appears twice: give each key once")
        if "=" in value:
            raise SyncMLError(f"value of {key} has a raw '=': percent-encode it as %3D")
        out[key] = _kv_unescape(value.strip(), key)
    return out


def format_kv(values: dict[str, object]) -> str:
    """The inverse of parse_kv: None values are left out, the others percent-encoded."""
    for k in values:
        if not _KV_KEY.fullmatch(k):
            raise SyncMLError(f"key {k[:40]!r} is not a name ([A-Za-z0-9_.-])")
    return ";".join(f"{k}={_kv_escape(str(v))}" for k, v in values.items() if v is not None)


MessageHandler = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]
