"""OPAQUE Data in WBXML: what is a nested document and what is data; charsets.

(c) binary data that happens to start with 01-03 (a WBXML version byte) stays data: only a
Meta Type in the +wbxml form declares a nested document, or, with no Type at all, a whole
parse as DevInf 1.2 / DM DDF 1.2 WBXML. (d) strings in US-ASCII or ISO-8859-1 are read; any
other charset is a SyncMLStatusError 415 for a message, and bytes (415 for the item) for a
nested document.
"""
from __future__ import annotations

import pytest
from test_syncml_codec import devinf, header, tnds

from host.errors import SyncMLError
from host.syncml import model as m
from host.syncml.devinf import DEVINF_TYPE, devinf_to_element
from host.syncml.status import SyncMLStatusError
from host.syncml.wbxml import _encode_doc, _mb_u_int32, decode_wbxml, encode_wbxml
from host.syncml.wbxml_tables import PUBLIC_ID_DEVINF12, PUBLIC_ID_DMDDF12

MARK = "@@PAYLOAD@@"
TNDS_WBXML = "application/vnd.syncml.dmtnds+wbxml"


def with_opaque(raw: bytes, ctype: str | None = None, item_type: str | None = None) -> bytes:
    """A DM Replace whose one Item's Data is OPAQUE ``raw`` (built from our own encoding)."""
    item = m.Item(target=m.Target("./x"), meta=m.Meta(type=item_type) if item_type else None, data=MARK)
    msg = m.SyncMLMessage(header(), [m.Replace(cmd_id=1, meta=m.Meta(type=ctype) if ctype else None, items=[item])])
    wire = encode_wbxml(msg)
    inline = b"\x03" + MARK.encode() + b"\x00"
    assert wire.count(inline) == 1
    return wire.replace(inline, b"\xc3" + _mb_u_int32(len(raw)) + raw)


def data_of(wire: bytes):
    return decode_wbxml(wire).commands[0].items[0].data


DEVINF_DOC = _encode_doc(devinf_to_element(devinf()), PUBLIC_ID_DEVINF12)
TNDS_DOC = _encode_doc(tnds(), PUBLIC_ID_DMDDF12)


@pytest.mark.parametrize("raw", [
    b"\x03\x01\x6a\x00\x45\x01",  # a WBXML-looking header, SyncML-ish body
    b"\x01\x02\x03\x04\xff\xfe",
    b"\x02" + bytes(range(256)),
    b"\x03\x00\x00\x6a\x1b-//OMA//DTD-DM-DDF 1.2//EN\x00\x00\x02\x60",  # a DDF header, cut off
    DEVINF_DOC[:-1],  # a DevInf document missing its last END
], ids=["syncml-header", "binary", "all-bytes", "ddf-cut", "devinf-cut"])
def test_binary_starting_with_a_wbxml_version_is_data(raw: bytes) -> None:
    assert data_of(with_opaque(raw)) == raw


@pytest.mark.parametrize("ctype", ["application/octet-stream", "text/plain", "application/vnd.simvault.backup"])
def test_a_typed_item_is_never_taken_for_a_document(ctype: str) -> None:
    """Even bytes that ARE a whole DevInf / TNDS WBXML document stay data under another Type."""
    for doc in (DEVINF_DOC, TNDS_DOC):
        assert data_of(with_opaque(doc, ctype)) == doc
        assert data_of(with_opaque(doc, item_type=ctype)) == doc


def test_declared_and_undeclared_documents_decode() -> None:
    from host.syncml import codec
    for doc, ctype, root in ((TNDS_DOC, TNDS_WBXML, tnds()),
                             (DEVINF_DOC, "application/vnd.syncml-devinf+wbxml", devinf_to_element(devinf()))):
        for wire in (with_opaque(doc, ctype), with_opaque(doc, item_type=ctype), with_opaque(doc)):
            got = data_of(wire)
            assert codec.serialize_element(got) == codec.serialize_element(root)
    typed = decode_wbxml(with_opaque(TNDS_DOC, TNDS_WBXML)).commands[0]
    assert typed.meta.type == "application/vnd.syncml.dmtnds+xml"  # back to the XML form


def test_text_opaque_stays_text_and_unsafe_text_is_bytes() -> None:
    assert data_of(with_opaque("BEGIN:VCARD\r\nFN:Zoë\r\nEND:VCARD\r\n".encode())) == \
        "BEGIN:VCARD\r\nFN:Zoë\r\nEND:VCARD\r\n"
    assert data_of(with_opaque(b"\x02hello")) == b"\x02hello"  # UTF-8, but XML cannot carry U+0002
    assert data_of(with_opaque(b"<3 not xml")) == "<3 not xml"  # looks like markup, is text


def test_a_declared_document_that_is_broken_is_a_clear_error() -> None:
    with pytest.raises(SyncMLError, match="WBXML"):
        decode_wbxml(with_opaque(TNDS_DOC[:-1], TNDS_WBXML))


def _charset(wire: bytes, mib: bytes) -> bytes:
    assert wire[3] == 0x6A
    return wire[:3] + mib + wire[4:]


def test_iso_8859_1_and_ascii_messages_are_read() -> None:
    msg = m.SyncMLMessage(header(), [m.Replace(cmd_id=1, items=[m.Item(target=m.Target("./x"), data="caf\u00e9")])])
    wire = encode_wbxml(msg).replace("caf\u00e9".encode(), "caf\u00e9".encode("latin-1"))
    assert data_of(_charset(wire, b"\x04")) == "caf\u00e9"
    ascii_wire = encode_wbxml(m.SyncMLMessage(header(), [m.Alert(cmd_id=1, data=1201)]))
    assert decode_wbxml(_charset(ascii_wire, b"\x03")).commands[0].data == 1201
    with pytest.raises(SyncMLError, match="not ascii"):
        data_of(_charset(wire, b"\x03"))


@pytest.mark.parametrize("mib", [b"\x87\x77", b"\x81\x00", b"\x11"], ids=["utf16", "unknown-128", "shift-jis"])
def test_other_charsets_are_415_with_a_clear_message(mib: bytes) -> None:
    wire = encode_wbxml(m.SyncMLMessage(header(), [m.Alert(cmd_id=1, data=1201)]))
    with pytest.raises(SyncMLStatusError, match="is not supported: send UTF-8") as err:
        decode_wbxml(_charset(wire, mib))
    assert err.value.status == 415


def test_a_nested_document_in_an_unreadable_charset_comes_out_as_bytes() -> None:
    doc = TNDS_DOC[:3] + b"\x87\x77" + TNDS_DOC[4:]  # the TNDS says UTF-16
    assert data_of(with_opaque(doc, TNDS_WBXML)) == doc
    latin = TNDS_DOC[:3] + b"\x04" + TNDS_DOC[4:]  # ISO-8859-1 (its strings are ASCII): read
    assert data_of(with_opaque(latin, TNDS_WBXML)).tag == "{syncml:dmddf1.2}MgmtTree"


def test_devinf_put_still_nests() -> None:
    msg = m.SyncMLMessage(header(m.PROTO_DS), [m.Put(cmd_id=1, meta=m.Meta(type=DEVINF_TYPE), items=[
        m.Item(source=m.Source("./devinf12"), data=devinf_to_element(devinf()))])])
    wire = encode_wbxml(msg)
    assert DEVINF_DOC in wire and b"application/vnd.syncml-devinf+wbxml" in wire
    assert decode_wbxml(wire).commands[0].meta.type == DEVINF_TYPE
