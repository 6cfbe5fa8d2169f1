"""SyncML 1.2 XML decoding (host.syncml.codec.decode): only what the model can represent.

An unknown element is an error, except inside Meta (EMI, Mem and FieldLevel are
tolerated extensions) and inside nested Data documents. Every failure is a one-line
SyncMLError.
"""
from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from contextvars import ContextVar

from host.errors import SyncMLError
from host.syncml import model as m
from host.syncml._xmlparse import parse_xml

from host.syncml.namespaces import NS_METINF, NS_SYNCML, OPAQUE_BYTES_ATTR, _local


# --------------------------------------------------------------------- reading
class _Reader:
    """Walks an element's children in order, checking names and cardinality."""

    def __init__(self, el: ET.Element, ctx: str) -> None:
        self.ctx = ctx
        self.kids: list[tuple[str, ET.Element]] = []
        for child in el:
            if not isinstance(child.tag, str):  # comments / processing instructions
                continue
            ns, local = _local(child.tag)
            if ns is not None and ns.lower() not in (NS_SYNCML.lower(), NS_METINF):
                raise SyncMLError(f"{ctx}: element {local} in unexpected namespace {ns}")
            self.kids.append((local, child))
        if (el.text or "").strip() and self.kids:
            raise SyncMLError(f"{ctx}: unexpected text content")
        self.pos = 0

    def take(self, name: str) -> ET.Element | None:
        if self.pos < len(self.kids) and self.kids[self.pos][0] == name:
            self.pos += 1
            return self.kids[self.pos - 1][1]
        return None

    def need(self, name: str) -> ET.Element:
        el = self.take(name)
        if el is None:
            found = self.kids[self.pos][0] if self.pos < len(self.kids) else "end"
            raise SyncMLError(f"{self.ctx}: missing {name} (found {found})")
        return el

    def many(self, name: str) -> list[ET.Element]:
        out = []
        while (el := self.take(name)) is not None:
            out.append(el)
        return out

    def peek(self) -> str | None:
        return self.kids[self.pos][0] if self.pos < len(self.kids) else None

    def done(self) -> None:
        if self.pos < len(self.kids):
            raise SyncMLError(f"{self.ctx}: unexpected element {self.kids[self.pos][0]}")


def _text(el: ET.Element | None, ctx: str) -> str:
    if el is None:
        raise SyncMLError(f"{ctx}: missing")
    if len(el):
        raise SyncMLError(f"{ctx}: expected text, found child elements")
    return el.text or ""


def _int(el: ET.Element | None, ctx: str) -> int:
    raw = _text(el, ctx).strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > 10:
        raise SyncMLError(f"{ctx}: {raw[:20]!r} is not a non-negative integer")
    return int(raw)


def _opt_text(el: ET.Element | None, ctx: str) -> str | None:
    return None if el is None else _text(el, ctx)


def _opt_int(el: ET.Element | None, ctx: str) -> int | None:
    return None if el is None else _int(el, ctx)


def _flag_of(el: ET.Element | None, ctx: str) -> bool:
    if el is None:
        return False
    if len(el) or (el.text or "").strip():
        raise SyncMLError(f"{ctx}: must be empty")
    return True


_META_TOLERATED = {"FieldLevel", "Mem", "SharedMem", "FreeMem", "FreeID"}
# MetInf element -> (Meta field, reader) for the single-valued ones
_META_FIELDS = {"Format": ("format", _text), "Type": ("type", _text), "Mark": ("mark", _text),
                "Size": ("size", _int), "Version": ("version", _text), "NextNonce": ("next_nonce", _text),
                "MaxMsgSize": ("max_msg_size", _int), "MaxObjSize": ("max_obj_size", _int)}


def _read_meta(el: ET.Element | None, ctx: str) -> m.Meta | None:
    if el is None:
        return None
    meta = m.Meta()
    ctx = f"{ctx}/Meta"
    for child in el:
        if not isinstance(child.tag, str):
            continue
        _, local = _local(child.tag)
        c = f"{ctx}/{local}"
        field = _META_FIELDS.get(local)
        if field is not None:
            setattr(meta, field[0], field[1](child, c))
        elif local == "EMI":
            meta.emi.append(_text(child, c))
        elif local == "Anchor":
            r = _Reader(child, c)
            last = _opt_text(r.take("Last"), f"{c}/Last")
            meta.anchor = m.Anchor(next=_text(r.need("Next"), f"{c}/Next"), last=last)
            r.done()
        elif local not in _META_TOLERATED:
            raise SyncMLError(f"{ctx}: unknown element {local}")
    return meta


def _read_loc(el: ET.Element | None, cls: type[m.Location], ctx: str) -> m.Location | None:
    if el is None:
        return None
    r = _Reader(el, ctx)
    uri = _text(r.need("LocURI"), f"{ctx}/LocURI")
    name = _opt_text(r.take("LocName"), f"{ctx}/LocName")
    r.take("Filter")  # DS filter: tolerated, not modelled
    r.done()
    return cls(uri, name)


def _read_cred(el: ET.Element | None, ctx: str) -> m.Cred | None:
    if el is None:
        return None
    r = _Reader(el, f"{ctx}/Cred")
    meta = _read_meta(r.take("Meta"), f"{ctx}/Cred") or m.Meta()
    data = _text(r.need("Data"), f"{ctx}/Cred/Data")
    r.done()
    return m.Cred(data=data, meta=meta)


def _read_data(el: ET.Element | None, fmt: str | None, ctx: str) -> m.ItemData | None:
    if el is None:
        return None
    kids = [k for k in el if isinstance(k.tag, str)]
    if kids:
        if len(kids) != 1 or (el.text or "").strip() or (kids[0].tail or "").strip():
            raise SyncMLError(f"{ctx}/Data: expected one nested document")
        return kids[0]
    text = el.text or ""
    if el.get(OPAQUE_BYTES_ATTR) is not None:  # binary OPAQUE from WBXML, whatever the Format says
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SyncMLError(f"{ctx}/Data: opaque bytes marker on data that is not base64") from None
    if fmt == "b64":
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise SyncMLError(f"{ctx}/Data: Format is b64 but the data is not base64") from None
    return text


def _read_item(el: ET.Element, cmd_meta: m.Meta | None, ctx: str) -> m.Item:
    ctx = f"{ctx}/Item"
    r = _Reader(el, ctx)
    target = _read_loc(r.take("Target"), m.Target, f"{ctx}/Target")
    source = _read_loc(r.take("Source"), m.Source, f"{ctx}/Source")
    r.take("SourceParent"), r.take("TargetParent")  # DS hierarchical sync: tolerated
    meta = _read_meta(r.take("Meta"), ctx)
    fmt = meta.format if meta and meta.format else cmd_meta.format if cmd_meta else None
    data_el = r.take("Data")
    more = _flag_of(r.take("MoreData"), f"{ctx}/MoreData")
    if fmt == "b64" and _B64_CHUNKS_AS_TEXT.get() and data_el is not None and not len(data_el) \
            and data_el.get(OPAQUE_BYTES_ATTR) is None:
        text = "".join((data_el.text or "").split())
        if not _B64_ALPHABET.fullmatch(text):
            raise SyncMLError(f"{ctx}/Data: Format is b64 but the data is not base64")
        # a chunk (MoreData) or a last chunk that does not decode alone: the assembler decodes the whole
        data = m.B64Text(text) if more or not _decodes_alone(text) else _read_data(data_el, fmt, ctx)
    else:
        data = _read_data(data_el, fmt, ctx)
    r.done()
    return m.Item(target=target, source=source, meta=meta, data=data, more_data=more)


def _read_command(name: str, el: ET.Element, ctx: str) -> m.Command:
    ctx = f"{ctx}/{name}"
    r = _Reader(el, ctx)
    cmd_id = _int(r.need("CmdID"), f"{ctx}/CmdID")
    if cmd_id == 0:
        raise SyncMLError(f"{ctx}/CmdID: 0 is reserved (it refers to the SyncHdr)")
    ctx = f"{ctx}[{cmd_id}]"
    if name == "Status":
        msg_ref = _int(r.need("MsgRef"), f"{ctx}/MsgRef")
        cmd_ref = _int(r.need("CmdRef"), f"{ctx}/CmdRef")
        cmd = _text(r.need("Cmd"), f"{ctx}/Cmd")
        trefs = [_text(e, f"{ctx}/TargetRef") for e in r.many("TargetRef")]
        srefs = [_text(e, f"{ctx}/SourceRef") for e in r.many("SourceRef")]
        cred = _read_cred(r.take("Cred"), ctx)
        chal_el = r.take("Chal")
        chal = None
        if chal_el is not None:
            cr = _Reader(chal_el, f"{ctx}/Chal")
            chal = m.Chal(meta=_read_meta(cr.need("Meta"), f"{ctx}/Chal") or m.Meta())
            cr.done()
        code = _int(r.need("Data"), f"{ctx}/Data")
        items = [_read_item(e, None, ctx) for e in r.many("Item")]
        r.done()
        return m.Status(cmd_id=cmd_id, msg_ref=msg_ref, cmd_ref=cmd_ref, cmd=cmd, data=code,
                        target_refs=trefs, source_refs=srefs, cred=cred, chal=chal, items=items)
    if name == "Results":
        msg_ref = _opt_int(r.take("MsgRef"), f"{ctx}/MsgRef")
        cmd_ref = _int(r.need("CmdRef"), f"{ctx}/CmdRef")
        meta = _read_meta(r.take("Meta"), ctx)
        trefs = [_text(e, f"{ctx}/TargetRef") for e in r.many("TargetRef")]
        srefs = [_text(e, f"{ctx}/SourceRef") for e in r.many("SourceRef")]
        items = [_read_item(e, meta, ctx) for e in r.many("Item")]
        r.done()
        return m.Results(cmd_id=cmd_id, msg_ref=msg_ref, cmd_ref=cmd_ref, meta=meta,
                         target_refs=trefs, source_refs=srefs, items=items)
    if name == "Map":
        target = _read_loc(r.need("Target"), m.Target, f"{ctx}/Target")
        source = _read_loc(r.need("Source"), m.Source, f"{ctx}/Source")
        cred = _read_cred(r.take("Cred"), ctx)
        meta = _read_meta(r.take("Meta"), ctx)
        mitems = []
        for e in r.many("MapItem"):
            mr = _Reader(e, f"{ctx}/MapItem")
            t = _read_loc(mr.need("Target"), m.Target, f"{ctx}/MapItem/Target")
            s = _read_loc(mr.need("Source"), m.Source, f"{ctx}/MapItem/Source")
            mr.done()
            assert t is not None and s is not None
            mitems.append(m.MapItem(t, s))
        r.done()
        if not mitems:
            raise SyncMLError(f"{ctx}: needs at least one MapItem")
        assert target is not None and source is not None
        return m.Map(cmd_id=cmd_id, target=target, source=source, cred=cred, meta=meta, map_items=mitems)
    no_resp = _flag_of(r.take("NoResp"), f"{ctx}/NoResp")
    if name == "Alert":
        cred = _read_cred(r.take("Cred"), ctx)
        code = _opt_int(r.take("Data"), f"{ctx}/Data")
        corr = _opt_text(r.take("Correlator"), f"{ctx}/Correlator")
        items = [_read_item(e, None, ctx) for e in r.many("Item")]
        r.done()
        return m.Alert(cmd_id=cmd_id, no_resp=no_resp, data=code, cred=cred, correlator=corr, items=items)
    if name == "Exec":
        cred = _read_cred(r.take("Cred"), ctx)
        meta = _read_meta(r.take("Meta"), ctx)
        corr = _opt_text(r.take("Correlator"), f"{ctx}/Correlator")
        item = _read_item(r.need("Item"), meta, ctx)
        r.done()
        return m.Exec(cmd_id=cmd_id, no_resp=no_resp, cred=cred, meta=meta, correlator=corr, item=item)
    if name in ("Atomic", "Sequence"):
        meta = _read_meta(r.take("Meta"), ctx)
        cmds = _read_children(name, r, ctx)
        if not cmds:
            raise SyncMLError(f"{ctx}: needs at least one command")
        cls = m.Atomic if name == "Atomic" else m.Sequence
        return cls(cmd_id=cmd_id, no_resp=no_resp, meta=meta, commands=cmds)
    if name == "Sync":
        cred = _read_cred(r.take("Cred"), ctx)
        target = _read_loc(r.take("Target"), m.Target, f"{ctx}/Target")
        source = _read_loc(r.take("Source"), m.Source, f"{ctx}/Source")
        meta = _read_meta(r.take("Meta"), ctx)
        noc = _opt_int(r.take("NumberOfChanges"), f"{ctx}/NumberOfChanges")
        cmds = _read_children(name, r, ctx)
        return m.Sync(cmd_id=cmd_id, no_resp=no_resp, cred=cred, target=target, source=source,
                      meta=meta, number_of_changes=noc, commands=cmds)
    cls_by_name: dict[str, type[m.ItemCommand]] = {
        "Add": m.Add, "Replace": m.Replace, "Copy": m.Copy, "Move": m.Move, "Delete": m.Delete,
        "Get": m.Get, "Put": m.Put}
    icls = cls_by_name[name]
    extra: dict[str, object] = {}
    if icls is m.Delete:
        extra["archive"] = _flag_of(r.take("Archive"), f"{ctx}/Archive")
        extra["sft_del"] = _flag_of(r.take("SftDel"), f"{ctx}/SftDel")
    if icls in (m.Get, m.Put):
        extra["lang"] = _opt_text(r.take("Lang"), f"{ctx}/Lang")
    cred = _read_cred(r.take("Cred"), ctx)
    meta = _read_meta(r.take("Meta"), ctx)
    items = [_read_item(e, meta, ctx) for e in r.many("Item")]
    r.done()
    if not items:
        raise SyncMLError(f"{ctx}: needs at least one Item")
    return icls(cmd_id=cmd_id, no_resp=no_resp, cred=cred, meta=meta, items=items, **extra)


_COMMANDS = frozenset({"Add", "Alert", "Atomic", "Copy", "Delete", "Exec", "Get", "Map", "Move",
                       "Put", "Replace", "Results", "Sequence", "Status", "Sync"})


def _read_children(parent: str, r: _Reader, ctx: str) -> list[m.Command]:
    allowed = m.CONTAINER_CHILDREN[parent]
    out = []
    while (name := r.peek()) is not None:
        if name not in allowed:
            raise SyncMLError(f"{ctx}: {name} is not allowed inside {parent}")
        out.append(_read_command(name, r.need(name), ctx))
    return out


def _read_header(el: ET.Element) -> m.SyncHdr:
    ctx = "SyncHdr"
    r = _Reader(el, ctx)
    ver_dtd = _text(r.need("VerDTD"), "SyncHdr/VerDTD").strip()
    if ver_dtd != m.VER_DTD:
        raise SyncMLError(f"SyncHdr/VerDTD {ver_dtd[:10]!r} is not supported (only 1.2)")
    ver_proto = _text(r.need("VerProto"), "SyncHdr/VerProto").strip()
    if ver_proto not in (m.PROTO_DM, m.PROTO_DS):
        raise SyncMLError(f"SyncHdr/VerProto {ver_proto[:16]!r} is not DM/1.2 or SyncML/1.2")
    session_id = _text(r.need("SessionID"), "SyncHdr/SessionID").strip()
    msg_id = _int(r.need("MsgID"), "SyncHdr/MsgID")
    target = _read_loc(r.need("Target"), m.Target, "SyncHdr/Target")
    source = _read_loc(r.need("Source"), m.Source, "SyncHdr/Source")
    resp_uri = _opt_text(r.take("RespURI"), "SyncHdr/RespURI")
    no_resp = _flag_of(r.take("NoResp"), "SyncHdr/NoResp")
    cred = _read_cred(r.take("Cred"), ctx)
    meta = _read_meta(r.take("Meta"), ctx)
    r.done()
    assert target is not None and source is not None
    return m.SyncHdr(session_id=session_id, msg_id=msg_id, target=target, source=source,
                     ver_proto=ver_proto, ver_dtd=ver_dtd, resp_uri=resp_uri, no_resp=no_resp,
                     cred=cred, meta=meta)


_B64_CHUNKS_AS_TEXT: ContextVar[bool] = ContextVar("b64_chunks_as_text", default=False)
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _decodes_alone(text: str) -> bool:
    if len(text) % 4:  # binascii accepts some unaligned text with padding: whole quanta only
        return False
    try:
        base64.b64decode(text, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def decode(data: bytes, *, b64_chunks_as_text: bool = False) -> m.SyncMLMessage:
    """Decode SyncML 1.2 XML bytes; any malformation raises SyncMLError.

    ``b64_chunks_as_text``: b64 Data of a large-object chunk (MoreData, or a last chunk
    that does not decode alone) comes back as :class:`model.B64Text`, to be joined and
    decoded by the caller's assembler (chunks may split base64 mid-quantum)."""
    return decode_element(parse_xml(data), b64_chunks_as_text=b64_chunks_as_text)


def decode_element(root: ET.Element, *, b64_chunks_as_text: bool = False) -> m.SyncMLMessage:
    """Decode an already parsed SyncML Element (the WBXML codec uses this)."""
    token = _B64_CHUNKS_AS_TEXT.set(b64_chunks_as_text)
    try:
        return _decode_element(root)
    finally:
        _B64_CHUNKS_AS_TEXT.reset(token)


def _decode_element(root: ET.Element) -> m.SyncMLMessage:
    ns, local = _local(root.tag)
    if local != "SyncML" or (ns or "").lower() != NS_SYNCML.lower():
        raise SyncMLError(f"root element is {{{ns}}}{local}, expected SyncML in {NS_SYNCML}")
    r = _Reader(root, "SyncML")
    header = _read_header(r.need("SyncHdr"))
    body_el = r.need("SyncBody")
    r.done()
    br = _Reader(body_el, "SyncBody")
    commands: list[m.Command] = []
    while (name := br.peek()) is not None and name != "Final":
        if name not in _COMMANDS:
            raise SyncMLError(f"SyncBody: unknown or unsupported command {name}")
        commands.append(_read_command(name, br.need(name), "SyncBody"))
    final = _flag_of(br.take("Final"), "SyncBody/Final")
    br.done()
    if not commands and not final:
        raise SyncMLError("SyncBody is empty (no command and no Final)")
    msg = m.SyncMLMessage(header=header, commands=commands, final=final)
    ids = [c.cmd_id for c in msg.iter_commands()]
    if len(ids) != len(set(ids)):
        raise SyncMLError("duplicate CmdID in message")
    return msg
