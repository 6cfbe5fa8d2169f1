"""SyncML 1.2 XML codec: :func:`encode` and :func:`decode`.

Both OMA DM 1.2 and OMA DS 1.2 use the namespace ``SYNCML:SYNCML1.2``; Meta
children are written in ``syncml:metinf``. Elements are written in the order the
SyncML 1.2 DTD requires (strict peers and WBXML tokenisers depend on it). The
output has no whitespace between elements, so the encoded size of a message is
the sum of its parts (``host.syncml.packing`` relies on that).

Decoding accepts only what the model can represent: an unknown element is an
error, except inside Meta (EMI, Mem and FieldLevel are tolerated extensions)
and inside nested Data documents. Every failure is a one-line SyncMLError.
"""
from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

from host.errors import SimvaultError, SyncMLError
from host.syncml import model as m
from host.tree import safexml

from host.syncml.namespaces import (  # noqa: F401 - importable from here as before
    NS_SYNCML,
    NS_METINF,
    NS_DEVINF,
    DOCTYPE_SYNCML12,
    CONTENT_TYPE_DM_XML,
    CONTENT_TYPE_DS_XML,
    _local,
)

# --------------------------------------------------------------------- writing
# the same rules as safexml.escape_text, at C speed (pack() escapes megabytes while sizing chunks)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def _esc(text: str) -> str:
    bad = _NOT_XML_CHAR.search(text)
    if bad:
        raise SyncMLError(f"XML cannot carry character U+{ord(bad.group()):04X}: send such data as bytes (b64)")
    return text.translate(_TEXT_ESCAPES)


def _el(name: str, text: str | int, ns: str | None = None) -> str:
    attr = f' xmlns="{ns}"' if ns else ""
    return f"<{name}{attr}>{_esc(str(text))}</{name}>"


def _opt(name: str, value: str | int | None, ns: str | None = None) -> str:
    return "" if value is None else _el(name, value, ns)


def _flag(name: str, on: bool) -> str:
    return f"<{name}/>" if on else ""


def serialize_element(el: ET.Element, parent_ns: str | None = None) -> str:
    """Serialise a nested document (DevInf, TNDS) with default-namespace declarations."""
    ns, local = _local(el.tag)
    attrs = ""
    if ns != parent_ns:
        attrs += f' xmlns="{ns or ""}"'
    for key, value in sorted(el.attrib.items()):
        if key.startswith("{"):
            raise SyncMLError(f"namespaced attribute {key} in nested XML is not supported")
        try:
            attrs += f' {key}="{safexml.escape_attr(value)}"'
        except SimvaultError as exc:
            raise SyncMLError(f"{exc}") from None
    inner = _esc(el.text) if el.text else ""
    for child in el:
        inner += serialize_element(child, ns)
        if child.tail:
            inner += _esc(child.tail)
    return f"<{local}{attrs}>{inner}</{local}>" if inner else f"<{local}{attrs}/>"


def _meta(meta: m.Meta | None) -> str:
    if meta is None or meta.is_empty():
        return ""
    n = NS_METINF
    anchor = ""
    if meta.anchor is not None:
        anchor = f'<Anchor xmlns="{n}">{_opt("Last", meta.anchor.last)}{_el("Next", meta.anchor.next)}</Anchor>'
    body = (_opt("Format", meta.format, n) + _opt("Type", meta.type, n) + _opt("Mark", meta.mark, n)
            + _opt("Size", meta.size, n) + anchor + _opt("Version", meta.version, n)
            + _opt("NextNonce", meta.next_nonce, n) + _opt("MaxMsgSize", meta.max_msg_size, n)
            + _opt("MaxObjSize", meta.max_obj_size, n) + "".join(_el("EMI", e, n) for e in meta.emi))
    return f"<Meta>{body}</Meta>"


def _loc(name: str, loc: m.Location | None) -> str:
    if loc is None:
        return ""
    return f"<{name}>{_el('LocURI', loc.loc_uri)}{_opt('LocName', loc.loc_name)}</{name}>"


def _cred(cred: m.Cred | None) -> str:
    return "" if cred is None else f"<Cred>{_meta(cred.meta)}{_el('Data', cred.data)}</Cred>"


def _data(data: m.ItemData | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return _el("Data", base64.b64encode(data).decode("ascii"))
    if isinstance(data, str):
        return _el("Data", data)
    return f"<Data>{serialize_element(data, NS_SYNCML)}</Data>"


def _item(item: m.Item, cmd_meta: m.Meta | None) -> str:
    if isinstance(item.data, bytes):
        fmt = (item.meta.format if item.meta and item.meta.format else
               cmd_meta.format if cmd_meta else None)
        if fmt != "b64":
            raise SyncMLError("an Item with bytes data needs Meta Format b64 (item or command Meta)")
    return ("<Item>" + _loc("Target", item.target) + _loc("Source", item.source) + _meta(item.meta)
            + _data(item.data) + _flag("MoreData", item.more_data) + "</Item>")


def _items(items: list[m.Item], cmd_meta: m.Meta | None, name: str, required: bool) -> str:
    if required and not items:
        raise SyncMLError(f"{name} needs at least one Item")
    return "".join(_item(i, cmd_meta) for i in items)


def encode_command(cmd: m.Command) -> str:
    """The XML of one command (no whitespace); exposed for size accounting."""
    name = cmd.name
    head = _el("CmdID", cmd.cmd_id)
    if isinstance(cmd, m.Status):
        body = (head + _el("MsgRef", cmd.msg_ref) + _el("CmdRef", cmd.cmd_ref) + _el("Cmd", cmd.cmd)
                + "".join(_el("TargetRef", t) for t in cmd.target_refs)
                + "".join(_el("SourceRef", s) for s in cmd.source_refs) + _cred(cmd.cred)
                + (f"<Chal>{_meta(cmd.chal.meta)}</Chal>" if cmd.chal else "") + _el("Data", cmd.data)
                + _items(cmd.items, None, name, False))
    elif isinstance(cmd, m.Results):
        body = (head + _opt("MsgRef", cmd.msg_ref) + _el("CmdRef", cmd.cmd_ref) + _meta(cmd.meta)
                + "".join(_el("TargetRef", t) for t in cmd.target_refs)
                + "".join(_el("SourceRef", s) for s in cmd.source_refs)
                + _items(cmd.items, cmd.meta, name, True))
    elif isinstance(cmd, m.Alert):
        body = (head + _flag("NoResp", cmd.no_resp) + _cred(cmd.cred) + _opt("Data", cmd.data)
                + _opt("Correlator", cmd.correlator) + _items(cmd.items, None, name, False))
    elif isinstance(cmd, m.Exec):
        body = (head + _flag("NoResp", cmd.no_resp) + _cred(cmd.cred) + _meta(cmd.meta)
                + _opt("Correlator", cmd.correlator) + _item(cmd.item, cmd.meta))
    elif isinstance(cmd, (m.Atomic, m.Sequence)):
        body = head + _flag("NoResp", cmd.no_resp) + _meta(cmd.meta) + _children(cmd, cmd.commands)
        if not cmd.commands:
            raise SyncMLError(f"{name} needs at least one command")
    elif isinstance(cmd, m.Sync):
        body = (head + _flag("NoResp", cmd.no_resp) + _cred(cmd.cred) + _loc("Target", cmd.target)
                + _loc("Source", cmd.source) + _meta(cmd.meta)
                + _opt("NumberOfChanges", cmd.number_of_changes) + _children(cmd, cmd.commands))
    elif isinstance(cmd, m.Map):
        if not cmd.map_items:
            raise SyncMLError("Map needs at least one MapItem")
        body = (head + _loc("Target", cmd.target) + _loc("Source", cmd.source) + _cred(cmd.cred)
                + _meta(cmd.meta) + "".join(f"<MapItem>{_loc('Target', mi.target)}"
                                            f"{_loc('Source', mi.source)}</MapItem>" for mi in cmd.map_items))
    elif isinstance(cmd, m.ItemCommand):
        body = head + _flag("NoResp", cmd.no_resp)
        if isinstance(cmd, m.Delete):
            body += _flag("Archive", cmd.archive) + _flag("SftDel", cmd.sft_del)
        if isinstance(cmd, (m.Get, m.Put)):
            body += _opt("Lang", cmd.lang)
        body += _cred(cmd.cred) + _meta(cmd.meta) + _items(cmd.items, cmd.meta, name, True)
    else:
        raise SyncMLError(f"cannot encode command type {name}")
    return f"<{name}>{body}</{name}>"


def _children(parent: m.Command, cmds: list[m.Command]) -> str:
    allowed = m.CONTAINER_CHILDREN[parent.name]
    for c in cmds:
        if c.name not in allowed:
            raise SyncMLError(f"{c.name} is not allowed inside {parent.name}")
    return "".join(encode_command(c) for c in cmds)


def encode_header(hdr: m.SyncHdr) -> str:
    return ("<SyncHdr>" + _el("VerDTD", hdr.ver_dtd) + _el("VerProto", hdr.ver_proto)
            + _el("SessionID", hdr.session_id) + _el("MsgID", hdr.msg_id) + _loc("Target", hdr.target)
            + _loc("Source", hdr.source) + _opt("RespURI", hdr.resp_uri) + _flag("NoResp", hdr.no_resp)
            + _cred(hdr.cred) + _meta(hdr.meta) + "</SyncHdr>")


def envelope_prefix(doctype: bool = False) -> str:
    """The bytes before SyncHdr (XML declaration, optional DOCTYPE, root start tag)."""
    return ('<?xml version="1.0" encoding="UTF-8"?>' + (DOCTYPE_SYNCML12 if doctype else "")
            + f'<SyncML xmlns="{NS_SYNCML}">')


def encode(msg: m.SyncMLMessage, *, doctype: bool = False) -> bytes:
    """Encode a message as UTF-8 SyncML 1.2 XML; ``doctype`` adds the 1.2 public id."""
    if not msg.commands and not msg.final:
        raise SyncMLError("a SyncBody needs at least one command or Final")
    ids = [c.cmd_id for c in msg.iter_commands()]
    if len(ids) != len(set(ids)):
        raise SyncMLError("CmdID values must be unique within a message")
    body = "".join(encode_command(c) for c in msg.commands) + _flag("Final", msg.final)
    text = envelope_prefix(doctype) + encode_header(msg.header) + f"<SyncBody>{body}</SyncBody></SyncML>"
    return text.encode("utf-8")


# reading: host.syncml.codec_read (these names stay importable from here)
from host.syncml.codec_read import decode, decode_element  # noqa: E402,F401
