"""WBXML (application/vnd.syncml+wbxml, application/vnd.syncml.dm+wbxml) for SyncML 1.2.

Code pages: SyncML 1.2 (page 0, ``SYNCML:SYNCML1.2``), MetInf 1.2 (page 1,
``syncml:metinf``); DevInf 1.2 is a separate document (public id 0x1203) that
travels inside ``<Data>`` as OPAQUE, as libwbxml and real DS peers do.

Encoding writes WBXML 1.3, UTF-8, inline strings (no string table). Decoding
accepts string tables (STR_T), ENTITY and OPAQUE data; attributes, literal
tags, PIs and extension tokens are refused (SyncML uses none of them). Other
nested XML documents (TNDS) are carried as OPAQUE UTF-8 XML text.

    wire = encode_wbxml(msg)           # bytes
    msg = decode_wbxml(wire)           # SyncMLMessage, or SyncMLError
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml._xmlparse import MAX_DEPTH, MAX_MESSAGE_BYTES, parse_xml

CONTENT_TYPE_DS_WBXML = "application/vnd.syncml+wbxml"
CONTENT_TYPE_DM_WBXML = "application/vnd.syncml.dm+wbxml"
PUBLIC_ID_SYNCML12 = 0x1201
PUBLIC_ID_DEVINF12 = 0x1203
_LITERAL_IDS = {"-//SYNCML//DTD SyncML 1.2//EN": PUBLIC_ID_SYNCML12,
                "-//SYNCML//DTD DevInf 1.2//EN": PUBLIC_ID_DEVINF12}

# DevInf inside WBXML is itself WBXML, and its Meta Type says so (libwbxml relies on it)
_DEVINF_XML, _DEVINF_WBXML = "application/vnd.syncml-devinf+xml", "application/vnd.syncml-devinf+wbxml"
_TYPE_TAG = f"{{{codec.NS_METINF}}}Type"

SWITCH_PAGE, END, ENTITY, STR_I, LITERAL, STR_T, OPAQUE = 0x00, 0x01, 0x02, 0x03, 0x04, 0x83, 0xC3
_CONTENT, _ATTRS = 0x40, 0x80

_SYNCML_TAGS = ["Add", "Alert", "Archive", "Atomic", "Chal", "Cmd", "CmdID", "CmdRef", "Copy", "Cred", "Data", "Delete", "Exec", "Final", "Get", "Item", "Lang", "LocName", "LocURI", "Map", "MapItem", "Meta", "MsgID", "MsgRef", "NoResp", "NoResults", "Put", "Replace", "RespURI", "Results", "Search", "Sequence", "SessionID", "SftDel", "Source", "SourceRef", "Status", "Sync", "SyncBody", "SyncHdr", "SyncML", "Target", "TargetRef", "-", "VerDTD", "VerProto", "NumberOfChanges", "MoreData", "Field", "Filter", "Record", "FilterType", "SourceParent", "TargetParent", "Move", "Correlator"]
_METINF_TAGS = ["Anchor", "EMI", "Format", "FreeID", "FreeMem", "Last", "Mark", "MaxMsgSize", "Mem", "MetInf", "Next", "NextNonce", "SharedMem", "Size", "Type", "Version", "MaxObjSize", "FieldLevel"]
_DEVINF_TAGS = ["CTCap", "CTType", "DataStore", "DataType", "DevID", "DevInf", "DevTyp", "DisplayName", "DSMem", "Ext", "FwV", "HwV", "Man", "MaxGUIDSize", "MaxID", "MaxMem", "Mod", "OEM", "ParamName", "PropName", "Rx", "Rx-Pref", "SharedMem", "MaxSize", "SourceRef", "SwV", "SyncCap", "SyncType", "Tx", "Tx-Pref", "ValEnum", "VerCT", "VerDTD", "XNam", "XVal", "UTC", "SupportNumberOfChanges", "SupportLargeObjs", "Property", "PropParam", "MaxOccur", "NoTruncate", "-", "Filter-Rx", "FilterCap", "FilterKeyword", "FieldLevel", "SupportHierarchicalSync"]

# language -> {page: (namespace, tags from token 0x05)}
_PAGES: dict[int, dict[int, tuple[str, list[str]]]] = {
    PUBLIC_ID_SYNCML12: {0: (codec.NS_SYNCML, _SYNCML_TAGS), 1: (codec.NS_METINF, _METINF_TAGS)},
    PUBLIC_ID_DEVINF12: {0: (codec.NS_DEVINF, _DEVINF_TAGS)},
}
_TOKENS: dict[int, dict[str, tuple[int, int]]] = {
    pid: {f"{{{ns}}}{tag}": (page, 5 + i) for page, (ns, tags) in pages.items()
          for i, tag in enumerate(tags) if tag != "-"}
    for pid, pages in _PAGES.items()}


def _mb_u_int32(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


# --------------------------------------------------------------------- encoder
def _encode_doc(root: ET.Element, public_id: int) -> bytes:
    out = bytearray(b"\x03" + _mb_u_int32(public_id) + b"\x6a\x00")  # WBXML 1.3, UTF-8, no strtbl
    page = [0]
    tokens = _TOKENS[public_id]

    def text(value: str) -> None:
        raw = value.encode("utf-8")
        if b"\x00" in raw:
            raise SyncMLError("WBXML inline strings cannot carry NUL")
        out.extend(bytes([STR_I]) + raw + b"\x00")

    def element(el: ET.Element) -> None:
        if el.attrib:
            raise SyncMLError(f"WBXML encoding of attributes is not supported ({el.tag})")
        if el.tag not in tokens:
            raise SyncMLError(f"element {el.tag} has no WBXML token")
        pg, tok = tokens[el.tag]
        if pg != page[0]:
            out.extend(bytes([SWITCH_PAGE, pg]))
            page[0] = pg
        kids = list(el)
        if el.tag == f"{{{codec.NS_SYNCML}}}Data" and kids:
            out.append(tok | _CONTENT)
            out.extend(bytes([OPAQUE]))
            nested = _nested_to_bytes(kids[0])
            out.extend(_mb_u_int32(len(nested)) + nested)
            out.append(END)
            return
        if not kids and not el.text:
            out.append(tok)
            return
        out.append(tok | _CONTENT)
        if el.text:
            text(_DEVINF_WBXML if el.tag == _TYPE_TAG and el.text == _DEVINF_XML else el.text)
        for kid in kids:
            element(kid)
            if kid.tail and kid.tail.strip():
                text(kid.tail)
        out.append(END)

    element(root)
    return bytes(out)


def _nested_to_bytes(el: ET.Element) -> bytes:
    if el.tag == f"{{{codec.NS_DEVINF}}}DevInf":
        return _encode_doc(el, PUBLIC_ID_DEVINF12)
    return codec.serialize_element(el).encode("utf-8")  # TNDS and others: XML text in OPAQUE


def encode_wbxml(msg: m.SyncMLMessage) -> bytes:
    """Encode a message as SyncML 1.2 WBXML (via its canonical XML form)."""
    return _encode_doc(parse_xml(codec.encode(msg)), PUBLIC_ID_SYNCML12)


# --------------------------------------------------------------------- decoder
class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise SyncMLError("WBXML truncated")
        self.pos += 1
        return self.data[self.pos - 1]

    def mb(self) -> int:
        value = 0
        for _ in range(5):
            b = self.byte()
            value = (value << 7) | (b & 0x7F)
            if not b & 0x80:
                return value
        raise SyncMLError("WBXML multi-byte integer longer than 32 bits")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise SyncMLError("WBXML length runs past the end of the data")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def cstring(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise SyncMLError("WBXML string without terminator")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        return raw


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SyncMLError("WBXML string is not UTF-8") from None


def _decode_doc(data: bytes, nesting: int = 0) -> ET.Element:
    if len(data) > MAX_MESSAGE_BYTES:
        raise SyncMLError(f"WBXML document of {len(data)} bytes exceeds the limit")
    r = _Reader(data)
    if r.byte() not in (0x01, 0x02, 0x03):
        raise SyncMLError("not a WBXML 1.1-1.3 document")
    pid = r.mb()
    strtbl_needed = pid == 0
    str_index = r.mb() if strtbl_needed else None
    charset = r.mb()
    if charset not in (0x6A, 0):  # UTF-8 (0 = unknown, assumed UTF-8)
        raise SyncMLError(f"WBXML charset {charset} is not supported (only UTF-8)")
    table = r.take(r.mb())

    def table_string(offset: int) -> bytes:
        end = table.find(b"\x00", offset)
        if offset >= len(table) or end < 0:
            raise SyncMLError("WBXML string table reference out of range")
        return table[offset:end]

    if str_index is not None:
        pid = _LITERAL_IDS.get(_utf8(table_string(str_index)), 0)
    if pid not in _PAGES:
        raise SyncMLError(f"WBXML public id {pid:#x} is not SyncML 1.2 or DevInf 1.2")
    pages = _PAGES[pid]
    page = 0
    root: ET.Element | None = None
    stack: list[ET.Element] = []
    parts: list[list[str]] = []

    def flush_text() -> None:
        if stack and parts[-1]:
            el = stack[-1]
            joined = "".join(parts[-1])
            if len(el):
                el[-1].tail = (el[-1].tail or "") + joined
            else:
                el.text = (el.text or "") + joined
            parts[-1] = []

    while True:
        if root is not None and not stack:
            break
        tok = r.byte()
        if tok == SWITCH_PAGE:
            page = r.byte()
            if page not in pages:
                raise SyncMLError(f"WBXML code page {page} is not defined for this document")
        elif tok == END:
            if not stack:
                raise SyncMLError("WBXML END without an open element")
            flush_text()
            stack.pop()
            parts.pop()
        elif tok == STR_I:
            if not stack:
                raise SyncMLError("WBXML text outside the root element")
            parts[-1].append(_utf8(r.cstring()))
        elif tok == STR_T:
            if not stack:
                raise SyncMLError("WBXML text outside the root element")
            parts[-1].append(_utf8(table_string(r.mb())))
        elif tok == ENTITY:
            code = r.mb()
            if not stack or not (0 < code < 0x110000):
                raise SyncMLError("WBXML entity out of place or out of range")
            parts[-1].append(chr(code))
        elif tok == OPAQUE:
            if not stack:
                raise SyncMLError("WBXML opaque data outside the root element")
            raw = r.take(r.mb())
            if stack[-1].tag == f"{{{codec.NS_SYNCML}}}Data" and raw[:1] in (b"\x01", b"\x02", b"\x03") \
                    and nesting == 0:
                flush_text()
                stack[-1].append(_decode_doc(raw, nesting + 1))  # embedded DevInf document
            elif stack[-1].tag == f"{{{codec.NS_SYNCML}}}Data" and raw.lstrip()[:1] == b"<":
                flush_text()
                stack[-1].append(parse_xml(raw, "nested XML document"))
            else:
                parts[-1].append(_utf8(raw))
        elif tok & 0x3F >= 5 and not tok & _ATTRS:
            ns, tags = pages[page]
            index = (tok & 0x3F) - 5
            if index >= len(tags) or tags[index] == "-":
                raise SyncMLError(f"WBXML tag token {tok:#04x} is undefined on page {page}")
            if root is not None and not stack:
                raise SyncMLError("WBXML has more than one root element")
            if len(stack) >= MAX_DEPTH:
                raise SyncMLError(f"WBXML nested deeper than {MAX_DEPTH} levels: refused")
            tag = f"{{{ns}}}{tags[index]}"
            if stack:
                flush_text()
                el = ET.SubElement(stack[-1], tag)
            else:
                el = root = ET.Element(tag)
            if tok & _CONTENT:
                stack.append(el)
                parts.append([])
        else:
            raise SyncMLError(f"WBXML token {tok:#04x} (attributes, literals, PI, extensions) is not supported")
        if root is None and not stack and tok not in (SWITCH_PAGE,):
            raise SyncMLError("WBXML body does not start with an element")
    if r.pos != len(data):
        raise SyncMLError("WBXML has trailing bytes after the root element")
    assert root is not None
    for el in root.iter(_TYPE_TAG):
        if el.text == _DEVINF_WBXML:
            el.text = _DEVINF_XML
    return root


def decode_wbxml(data: bytes, *, b64_chunks_as_text: bool = False) -> m.SyncMLMessage:
    """Decode SyncML 1.2 WBXML bytes; any malformation raises SyncMLError."""
    if not isinstance(data, (bytes, bytearray)):
        raise SyncMLError(f"WBXML message: expected bytes, got {type(data).__name__}")
    try:
        root = _decode_doc(bytes(data))
    except SyncMLError:
        raise
    except (ValueError, IndexError, RecursionError) as exc:
        raise SyncMLError(f"malformed WBXML: {type(exc).__name__}") from None
    return codec.decode_element(root, b64_chunks_as_text=b64_chunks_as_text)
