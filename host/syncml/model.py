"""SyncML 1.2 message model (OMA DM 1.2 and OMA DS 1.2), as plain dataclasses.

The model mirrors the SyncML Representation Protocol 1.2 element names; the
codec (:mod:`host.syncml.codec`) writes the elements in DTD order, so building a
message never needs to care about element order.

Conventions:

* numbers that the protocol compares (CmdID, MsgID, MsgRef, CmdRef, status and
  alert codes, sizes) are ``int``; SessionID is a ``str`` (peers use hex ids).
* ``Item.data`` is ``str`` (text), ``bytes`` (travels base64 in XML: the item
  or command Meta Format must be ``b64``), or an ``xml.etree`` Element for a
  nested document (DevInf, TNDS MgmtTree) carried inside ``<Data>``.
* ``Meta`` is the syncml:metinf block; it is used in SyncHdr, commands, items,
  Cred and Chal.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

VER_DTD = "1.2"
PROTO_DM = "DM/1.2"
PROTO_DS = "SyncML/1.2"

ItemData = str | bytes | ET.Element


class B64Text(str):
    """Base64 text of an item with Format b64, left undecoded by the codec (decode option
    ``b64_chunks_as_text``): a large-object chunk may end mid-quantum (libsynthesis splits
    the text anywhere), so the chunks are joined first and decoded once whole."""


@dataclass
class Anchor:
    """DS sync anchors (Meta/Anchor): Last is absent on a first sync."""

    next: str
    last: str | None = None


@dataclass
class Meta:
    """syncml:metinf meta information. Unset fields are not encoded."""

    format: str | None = None  # "b64", "chr", "int", "bool", "node", "xml", "bin"...
    type: str | None = None  # MIME type, or an auth type in Cred/Chal
    mark: str | None = None
    size: int | None = None  # whole object size (first chunk of a large object)
    anchor: Anchor | None = None
    version: str | None = None
    next_nonce: str | None = None  # as on the wire (base64 text in DM)
    max_msg_size: int | None = None
    max_obj_size: int | None = None
    emi: list[str] = field(default_factory=list)  # vendor extensions (EMI)

    def is_empty(self) -> bool:
        return self == Meta()


@dataclass
class Location:
    """A LocURI with an optional LocName (Target or Source)."""

    loc_uri: str
    loc_name: str | None = None


class Target(Location):
    """<Target>: where a command or item goes."""


class Source(Location):
    """<Source>: where a command or item comes from."""


@dataclass
class Cred:
    """Credentials: Meta Type/Format say the scheme, Data the credential."""

    data: str
    meta: Meta = field(default_factory=Meta)


@dataclass
class Chal:
    """Authentication challenge carried in a Status (Meta Type/Format/NextNonce)."""

    meta: Meta


@dataclass
class Item:
    target: Location | None = None
    source: Location | None = None
    meta: Meta | None = None
    data: ItemData | None = None
    more_data: bool = False


@dataclass
class MapItem:
    target: Location
    source: Location


@dataclass(kw_only=True)
class Command:
    """Base of every SyncBody command. ``cmd_id`` is unique within a message."""

    cmd_id: int
    no_resp: bool = False

    @property
    def name(self) -> str:
        """The element name of the command (``Add``, ``Status``...)."""
        return type(self).__name__


@dataclass(kw_only=True)
class ItemCommand(Command):
    """Commands shaped (CmdID, NoResp?, Cred?, Meta?, Item+)."""

    cred: Cred | None = None
    meta: Meta | None = None
    items: list[Item] = field(default_factory=list)


@dataclass(kw_only=True)
class Add(ItemCommand):
    pass


@dataclass(kw_only=True)
class Replace(ItemCommand):
    pass


@dataclass(kw_only=True)
class Copy(ItemCommand):
    pass


@dataclass(kw_only=True)
class Move(ItemCommand):
    pass


@dataclass(kw_only=True)
class Delete(ItemCommand):
    archive: bool = False
    sft_del: bool = False


@dataclass(kw_only=True)
class Get(ItemCommand):
    lang: str | None = None


@dataclass(kw_only=True)
class Put(ItemCommand):
    lang: str | None = None


@dataclass(kw_only=True)
class Alert(Command):
    """Alert: ``data`` is the alert code (1201 client-initiated, 1226 generic...)."""

    data: int | None = None
    cred: Cred | None = None
    correlator: str | None = None
    items: list[Item] = field(default_factory=list)


@dataclass(kw_only=True)
class Exec(Command):
    """Exec has exactly one Item; Correlator ties a later 1226 Alert to it."""

    item: Item
    cred: Cred | None = None
    meta: Meta | None = None
    correlator: str | None = None


@dataclass(kw_only=True)
class Atomic(Command):
    meta: Meta | None = None
    commands: list[Command] = field(default_factory=list)


@dataclass(kw_only=True)
class Sequence(Command):
    meta: Meta | None = None
    commands: list[Command] = field(default_factory=list)


@dataclass(kw_only=True)
class Sync(Command):
    """DS Sync: a data store's changes (Add/Replace/Delete/... nested)."""

    cred: Cred | None = None
    target: Location | None = None
    source: Location | None = None
    meta: Meta | None = None
    number_of_changes: int | None = None
    commands: list[Command] = field(default_factory=list)


@dataclass(kw_only=True)
class Map(Command):
    """DS Map: client LUID <-> server GUID pairs."""

    target: Location
    source: Location
    cred: Cred | None = None
    meta: Meta | None = None
    map_items: list[MapItem] = field(default_factory=list)


@dataclass(kw_only=True)
class Status(Command):
    """Status for a command (``cmd_ref``) or the SyncHdr (``cmd="SyncHdr"``, ``cmd_ref=0``)."""

    msg_ref: int
    cmd_ref: int
    cmd: str
    data: int  # status code, see host.syncml.status
    target_refs: list[str] = field(default_factory=list)
    source_refs: list[str] = field(default_factory=list)
    cred: Cred | None = None
    chal: Chal | None = None
    items: list[Item] = field(default_factory=list)


@dataclass(kw_only=True)
class Results(Command):
    """Results of a Get (DM) or of a DevInf Get (DS)."""

    cmd_ref: int
    msg_ref: int | None = None
    meta: Meta | None = None
    target_refs: list[str] = field(default_factory=list)
    source_refs: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


#: commands that may appear inside Atomic / Sequence / Sync
CONTAINER_CHILDREN: dict[str, frozenset[str]] = {
    "Atomic": frozenset({"Add", "Delete", "Copy", "Atomic", "Map", "Move", "Replace",
                         "Sequence", "Sync", "Get", "Exec", "Alert"}),
    "Sequence": frozenset({"Add", "Replace", "Delete", "Copy", "Atomic", "Map", "Move",
                           "Sync", "Get", "Alert", "Exec"}),
    "Sync": frozenset({"Add", "Atomic", "Delete", "Copy", "Move", "Replace", "Sequence"}),
}


@dataclass
class SyncHdr:
    session_id: str
    msg_id: int
    target: Location
    source: Location
    ver_proto: str = PROTO_DM
    ver_dtd: str = VER_DTD
    resp_uri: str | None = None
    no_resp: bool = False
    cred: Cred | None = None
    meta: Meta | None = None


@dataclass
class SyncMLMessage:
    """One SyncML message: header, body commands, and the Final flag."""

    header: SyncHdr
    commands: list[Command] = field(default_factory=list)
    final: bool = True

    def iter_commands(self) -> list[Command]:
        """All commands, depth first, including those nested in Atomic/Sequence/Sync."""
        out: list[Command] = []

        def walk(cmds: list[Command]) -> None:
            for c in cmds:
                out.append(c)
                if isinstance(c, (Atomic, Sequence, Sync)):
                    walk(c.commands)

        walk(self.commands)
        return out
