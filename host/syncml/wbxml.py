"""WBXML (application/vnd.syncml+wbxml, application/vnd.syncml.dm+wbxml) for SyncML 1.2.

Code pages (host.syncml.wbxml_tables): SyncML 1.2 (page 0), MetInf 1.2 (page 1). Nested
documents travel inside ``<Data>`` as OPAQUE, as libwbxml2 and real peers do: DevInf 1.2
(public id 0x1203) and TNDS (OMA DM DDF 1.2, page 2, the literal public id in the string
table, exactly as xml2wbxml writes it), their Meta Type switched to the +wbxml form
(application/vnd.syncml.dmtnds+wbxml) on the wire. Other nested XML travels as UTF-8 text.

Encoding writes WBXML 1.3, UTF-8, inline strings. Decoding accepts string tables (STR_T),
ENTITY and OPAQUE data, charsets UTF-8, US-ASCII and ISO-8859-1 (others: SyncMLStatusError
415); attributes, literal tags, PIs and extension tokens are refused (SyncML uses none).

OPAQUE in Data is a nested document only when the Meta Type says so (+wbxml), or, with no
Type at all, when it parses whole as DevInf/TNDS WBXML; anything else is data: text when
it is UTF-8 XML can carry, else bytes. A declared document in a charset we cannot read
comes out as bytes, so the item gets 415 and the rest of the message goes on.

    wire = encode_wbxml(msg)           # bytes
    msg = decode_wbxml(wire)           # SyncMLMessage, or SyncMLError
"""
from __future__ import annotations

import base64
import logging
import re
import xml.etree.ElementTree as ET

from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml._xmlparse import MAX_DEPTH, MAX_MESSAGE_BYTES, parse_xml
from host.syncml.namespaces import OPAQUE_BYTES_ATTR
from host.syncml.status import StatusCode, SyncMLStatusError
from host.syncml.wbxml_tables import (
    CHARSET_NAMES,
    CHARSETS,
    LITERAL_IDS,
    LITERAL_OF,
    PAGES,
    PUBLIC_ID_DEVINF12,
    PUBLIC_ID_DMDDF12,
    PUBLIC_ID_SYNCML12,
    ROOTS,
    TOKENS,
    TYPE_TO_WBXML,
    TYPE_TO_XML,
)

log = logging.getLogger(__name__)
CONTENT_TYPE_DS_WBXML = "application/vnd.syncml+wbxml"
CONTENT_TYPE_DM_WBXML = "application/vnd.syncml.dm+wbxml"
__all__ = ["CONTENT_TYPE_DM_WBXML", "CONTENT_TYPE_DS_WBXML", "PUBLIC_ID_DEVINF12", "PUBLIC_ID_DMDDF12",
           "PUBLIC_ID_SYNCML12", "decode_wbxml", "encode_wbxml"]

_TYPE_TAG = f"{{{codec.NS_METINF}}}Type"
_META_TAG = f"{{{codec.NS_SYNCML}}}Meta"
_DATA_TAG = f"{{{codec.NS_SYNCML}}}Data"
_TNDS_XML = "application/vnd.syncml.dmtnds+xml"
_NESTED_LANGUAGES = (PUBLIC_ID_DEVINF12, PUBLIC_ID_DMDDF12)
_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

SWITCH_PAGE, END, ENTITY, STR_I, LITERAL, STR_T, OPAQUE = 0x00, 0x01, 0x02, 0x03, 0x04, 0x83, 0xC3
_CONTENT, _ATTRS = 0x40, 0x80


def _mb_u_int32(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _meta_type(holder: ET.Element) -> str | None:
    """The Meta Type an Item or a command states for its data (None when it states none)."""
    meta = holder.find(_META_TAG)
    el = meta.find(_TYPE_TAG) if meta is not None else None
    return (el.text or "").strip() or None if el is not None else None


# --------------------------------------------------------------------- encoder
def _encode_doc(root: ET.Element, public_id: int) -> bytes:
    literal = LITERAL_OF.get(public_id)
    if literal is None:
        out = bytearray(b"\x03" + _mb_u_int32(public_id) + b"\x6a\x00")  # WBXML 1.3, UTF-8, no strtbl
    else:  # public id 0: the literal at string table offset 0 (xml2wbxml's form)
        table = literal.encode("ascii") + b"\x00"
        out = bytearray(b"\x03\x00\x00\x6a" + _mb_u_int32(len(table)) + table)
    page = [0]
    tokens = TOKENS[public_id]

    def text(value: str) -> None:
        raw = value.encode("utf-8")
        if b"\x00" in raw:
            raise SyncMLError("WBXML inline strings cannot carry NUL")
        out.extend(bytes([STR_I]) + raw + b"\x00")

    def element(el: ET.Element, ctype: str | None) -> None:
        if el.attrib:
            raise SyncMLError(f"WBXML encoding of attributes is not supported ({el.tag})")
        if el.tag not in tokens:
            raise SyncMLError(f"element {el.tag} has no WBXML token")
        pg, tok = tokens[el.tag]
        if pg != page[0]:
            out.extend(bytes([SWITCH_PAGE, pg]))
            page[0] = pg
        ctype = _meta_type(el) or ctype if public_id == PUBLIC_ID_SYNCML12 else None
        kids = list(el)
        if el.tag == _DATA_TAG:
            nested = _nested_to_bytes(el, ctype)
            if nested is not None:
                out.append(tok | _CONTENT)
                out.extend(bytes([OPAQUE]))
                out.extend(_mb_u_int32(len(nested)) + nested)
                out.append(END)
                return
        if not kids and not el.text:
            out.append(tok)
            return
        out.append(tok | _CONTENT)
        if el.text:
            text(TYPE_TO_WBXML.get(el.text, el.text) if el.tag == _TYPE_TAG else el.text)
        for kid in kids:
            element(kid, ctype)
            if kid.tail and kid.tail.strip():
                text(kid.tail)
        out.append(END)

    element(root, None)
    return bytes(out)


def _nested_to_bytes(data: ET.Element, ctype: str | None) -> bytes | None:
    """The OPAQUE bytes for a Data holding a nested document, or None (Data stays text)."""
    kids = list(data)
    if kids:
        doc = kids[0]
    elif ctype == _TNDS_XML and data.text and data.text.lstrip().startswith("<"):
        try:  # TNDS given as XML text (what the DM agent returns): nest it as libwbxml2 does
            doc = parse_xml(data.text.encode("utf-8"), "TNDS document")
        except SyncMLError:
            return None
    else:
        return None
    language = ROOTS.get(doc.tag)
    if language is not None:
        try:
            return _encode_doc(doc, language)
        except SyncMLError:
            if not kids:  # a TNDS text with foreign elements: send the text as it is
                return None
    return codec.serialize_element(doc).encode("utf-8")  # other nested XML: XML text in OPAQUE


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


def _charset_codec(mib: int) -> str:
    if mib in CHARSETS:
        return CHARSETS[mib]
    name = CHARSET_NAMES.get(mib, "unknown MIBenum")
    raise SyncMLStatusError(f"WBXML charset {mib} ({name}) is not supported: send UTF-8 (106), "
                            "US-ASCII or ISO-8859-1", StatusCode.UNSUPPORTED_MEDIA_TYPE)


def _opaque_data(raw: bytes) -> str | bytes:
    """OPAQUE that is not a document: text when it is UTF-8 that XML can carry, else bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return raw if _XML_UNSAFE.search(text) else text


def _decode_doc(data: bytes, nesting: int = 0, languages: tuple[int, ...] = (PUBLIC_ID_SYNCML12,)) -> ET.Element:
    if len(data) > MAX_MESSAGE_BYTES:
        raise SyncMLError(f"WBXML document of {len(data)} bytes exceeds the limit")
    r = _Reader(data)
    if r.byte() not in (0x01, 0x02, 0x03):
        raise SyncMLError("not a WBXML 1.1-1.3 document")
    pid = r.mb()
    str_index = r.mb() if pid == 0 else None
    charset = _charset_codec(r.mb())
    table = r.take(r.mb())

    def string(raw: bytes) -> str:
        try:
            return raw.decode(charset)
        except UnicodeDecodeError:
            raise SyncMLError(f"WBXML string is not {charset}") from None

    def table_string(offset: int) -> bytes:
        end = table.find(b"\x00", offset)
        if offset >= len(table) or end < 0:
            raise SyncMLError("WBXML string table reference out of range")
        return table[offset:end]

    if str_index is not None:
        pid = LITERAL_IDS.get(string(table_string(str_index)), 0)
    if pid not in languages:
        raise SyncMLError(f"WBXML public id {pid:#x} is not " + (
            "SyncML 1.2" if nesting == 0 else "DevInf 1.2 or DM DDF 1.2 (TNDS)"))
    pages = PAGES[pid]
    page = min(pages)
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

    def opaque_in_data(raw: bytes) -> ET.Element | str | bytes:
        # the Type the Item (or else its command) states; Meta precedes Data, so it is read already
        ctype = _meta_type(stack[-2]) if len(stack) > 1 else None
        if ctype is None and len(stack) > 2:
            ctype = _meta_type(stack[-3])
        is_xml = raw.lstrip()[:1] == b"<"
        if ctype in TYPE_TO_XML and not is_xml:  # declared a WBXML document: it must be one
            try:
                return _decode_doc(raw, nesting + 1, _NESTED_LANGUAGES)
            except SyncMLStatusError as exc:  # a charset we cannot read: the item gets 415
                log.info("nested %s document not decoded (%s): kept as bytes", ctype, exc)
                return raw
        if ctype is None and raw[:1] in (b"\x01", b"\x02", b"\x03"):
            try:  # undeclared: a document only if it parses whole as DevInf or TNDS
                return _decode_doc(raw, nesting + 1, _NESTED_LANGUAGES)
            except SyncMLError:
                return _opaque_data(raw)
        if is_xml and (ctype in TYPE_TO_WBXML or ctype in TYPE_TO_XML):
            return parse_xml(raw, "nested XML document")
        if is_xml and ctype is None:
            try:
                return parse_xml(raw, "nested XML document")
            except SyncMLError:
                pass
        return _opaque_data(raw)

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
            parts[-1].append(string(r.cstring()))
        elif tok == STR_T:
            if not stack:
                raise SyncMLError("WBXML text outside the root element")
            parts[-1].append(string(table_string(r.mb())))
        elif tok == ENTITY:
            code = r.mb()
            if not stack or not (0 < code < 0x110000):
                raise SyncMLError("WBXML entity out of place or out of range")
            parts[-1].append(chr(code))
        elif tok == OPAQUE:
            if not stack:
                raise SyncMLError("WBXML opaque data outside the root element")
            raw = r.take(r.mb())
            got = opaque_in_data(raw) if stack[-1].tag == _DATA_TAG and nesting == 0 else _opaque_data(raw)
            if isinstance(got, ET.Element):
                flush_text()
                stack[-1].append(got)
            elif isinstance(got, bytes):
                flush_text()
                el = stack[-1]
                if el.tag != _DATA_TAG or el.text or len(el) or el.get(OPAQUE_BYTES_ATTR) is not None:
                    raise SyncMLError("WBXML binary opaque data is only accepted as the whole of a Data")
                el.set(OPAQUE_BYTES_ATTR, "1")
                el.text = base64.b64encode(got).decode("ascii")
            else:
                if stack[-1].get(OPAQUE_BYTES_ATTR) is not None:
                    raise SyncMLError("WBXML Data mixes binary opaque data and text")
                parts[-1].append(got)
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
                if stack[-1].get(OPAQUE_BYTES_ATTR) is not None:
                    raise SyncMLError("WBXML Data mixes binary opaque data and elements")
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
    if nesting == 0:
        for el in root.iter(_TYPE_TAG):
            if el.text in TYPE_TO_XML:
                el.text = TYPE_TO_XML[el.text]
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
