"""Our SyncML XML through the reference codec (libwbxml2: xml2wbxml / wbxml2xml) and back."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_syncml_codec import every_command, header

from host.syncml import codec
from host.syncml import model as m

XML2WBXML = shutil.which("xml2wbxml") or "/usr/bin/xml2wbxml"
WBXML2XML = shutil.which("wbxml2xml") or "/usr/bin/wbxml2xml"
SYNCML12_PUBLIC_ID = b"\x03\xa4\x01\x6a"  # WBXML 1.3, public id 0x1201 (SyncML 1.2), charset UTF-8


def run(*args: str) -> None:
    proc = subprocess.run(args, check=False, capture_output=True, timeout=20)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def through_libwbxml(xml: bytes, tmp: Path) -> tuple[bytes, bytes]:
    (tmp / "in.xml").write_bytes(xml)
    run(XML2WBXML, "-o", str(tmp / "msg.wbxml"), str(tmp / "in.xml"))
    run(WBXML2XML, "-m", "0", "-o", str(tmp / "back.xml"), str(tmp / "msg.wbxml"))
    return (tmp / "msg.wbxml").read_bytes(), (tmp / "back.xml").read_bytes()


@pytest.mark.parametrize("proto", [m.PROTO_DM, m.PROTO_DS])
@pytest.mark.parametrize("doctype", [False, True])
def test_every_command_survives_libwbxml(proto: str, doctype: bool, tmp_path: Path) -> None:
    msg = m.SyncMLMessage(header(proto), every_command(), final=True)
    xml = codec.encode(msg, doctype=doctype)
    wbxml, back = through_libwbxml(xml, tmp_path)
    # libwbxml recognised the document as SyncML 1.2 (it would fall back to a literal public id otherwise)
    assert wbxml.startswith(SYNCML12_PUBLIC_ID)
    assert len(wbxml) < len(xml)
    assert codec.encode(codec.decode(back)) == codec.encode(msg)


def test_libwbxml_indented_output_decodes(tmp_path: Path) -> None:
    msg = m.SyncMLMessage(header(), every_command()[:6])
    (tmp_path / "in.xml").write_bytes(codec.encode(msg))
    run(XML2WBXML, "-o", str(tmp_path / "m.wbxml"), str(tmp_path / "in.xml"))
    run(WBXML2XML, "-o", str(tmp_path / "pretty.xml"), str(tmp_path / "m.wbxml"))  # indent mode
    back = codec.decode((tmp_path / "pretty.xml").read_bytes())
    assert [c.name for c in back.commands] == [c.name for c in msg.commands]
    assert back.header == msg.header


def test_standalone_devinf_needs_its_doctype_for_libwbxml(tmp_path: Path) -> None:
    from test_syncml_codec import devinf

    from host.syncml.devinf import decode_devinf, encode_devinf

    (tmp_path / "d.xml").write_bytes(encode_devinf(devinf(), doctype=True))
    run(XML2WBXML, "-o", str(tmp_path / "d.wbxml"), str(tmp_path / "d.xml"))
    assert (tmp_path / "d.wbxml").read_bytes()[:3] == b"\x03\xa4\x03"  # public id 0x1203: DevInf 1.2
    run(WBXML2XML, "-m", "0", "-o", str(tmp_path / "back.xml"), str(tmp_path / "d.wbxml"))
    assert decode_devinf((tmp_path / "back.xml").read_bytes()) == devinf()


# ------------------------------------------------------------------ TNDS nested in Data, both ways
DDF12_LITERAL = b"-//OMA//DTD-DM-DDF 1.2//EN"


def _mb(data: bytes, i: int) -> tuple[int, int]:
    n = 0
    for _ in range(5):
        n = (n << 7) | (data[i] & 0x7F)
        i += 1
        if not data[i - 1] & 0x80:
            return n, i
    raise ValueError("mb_u_int32 too long")


def nested_documents(wire: bytes) -> list[bytes]:
    """OPAQUE payloads that are DM DDF 1.2 (TNDS) WBXML documents: header walked by hand
    (version, public id 0 = literal, string table index, charset, string table)."""
    found = []
    for i in range(len(wire)):
        if wire[i] != 0xC3:
            continue
        try:
            n, j = _mb(wire, i + 1)
            doc = wire[j:j + n]
            if len(doc) != n or doc[:2] != b"\x03\x00":
                continue
            index, k = _mb(doc, 2)
            _charset, k = _mb(doc, k)
            size, k = _mb(doc, k)
            table = doc[k:k + size]
            if table[index:index + len(DDF12_LITERAL) + 1] == DDF12_LITERAL + b"\x00":
                found.append(doc)
        except (ValueError, IndexError):
            continue
    return found


def tnds_results(data: object, ctype: str = "application/vnd.syncml.dmtnds+xml") -> m.SyncMLMessage:
    return m.SyncMLMessage(header(m.PROTO_DM), [m.Results(
        cmd_id=1, msg_ref=1, cmd_ref=3, meta=m.Meta(format="xml", type=ctype),
        items=[m.Item(source=m.Source("./Vendor/simvault"), data=data)])], final=True)


def phone_tnds() -> bytes:
    from host.tree.generate import generate_tree
    from host.tree.tnds import write_tnds
    return write_tnds(generate_tree(8000, seed=3), indent="")


def test_tnds_written_by_xml2wbxml_decodes(tmp_path: Path) -> None:
    """(a) xml2wbxml nests TNDS as a DM DDF 1.2 WBXML document (literal public id at the end of
    its own string table) in OPAQUE, Type switched to +wbxml: we decode it to the same MgmtTree."""
    from host.syncml._xmlparse import parse_xml
    from host.syncml.wbxml import decode_wbxml
    from host.tree.tnds import read_tnds

    text = phone_tnds()
    (tmp_path / "in.xml").write_bytes(codec.encode(tnds_results(parse_xml(text))))
    run(XML2WBXML, "-o", str(tmp_path / "theirs.wbxml"), str(tmp_path / "in.xml"))
    theirs = (tmp_path / "theirs.wbxml").read_bytes()
    (doc,) = nested_documents(theirs)
    assert _mb(doc, 2)[0] > 0  # the literal is not the only string: a real string table
    assert b"application/vnd.syncml.dmtnds+wbxml" in theirs
    msg = decode_wbxml(theirs)
    (item,) = msg.commands[0].items
    assert msg.commands[0].meta.type == "application/vnd.syncml.dmtnds+xml"
    assert read_tnds(codec.serialize_element(item.data)) == read_tnds(text)


@pytest.mark.parametrize("as_text", [False, True], ids=["element", "agent-text"])
def test_tnds_we_send_decodes_with_wbxml2xml(as_text: bool, tmp_path: Path) -> None:
    """(b) our WBXML nests TNDS the way libwbxml2 does: the whole message, and the nested document
    on its own, decode with wbxml2xml to the same tree. The DM agent hands TNDS over as XML text
    (Format xml, Type dmtnds+xml): that is nested too."""
    from host.syncml._xmlparse import parse_xml
    from host.syncml.wbxml import encode_wbxml
    from host.tree.tnds import read_tnds

    text = phone_tnds()
    wire = encode_wbxml(tnds_results(text.decode() if as_text else parse_xml(text)))
    (doc,) = nested_documents(wire)
    (tmp_path / "tnds.wbxml").write_bytes(doc)
    run(WBXML2XML, "-m", "0", "-o", str(tmp_path / "tnds.xml"), str(tmp_path / "tnds.wbxml"))
    assert read_tnds((tmp_path / "tnds.xml").read_bytes()) == read_tnds(text)
    (tmp_path / "msg.wbxml").write_bytes(wire)
    run(WBXML2XML, "-m", "0", "-o", str(tmp_path / "msg.xml"), str(tmp_path / "msg.wbxml"))
    back = codec.decode((tmp_path / "msg.xml").read_bytes())
    assert back.commands[0].meta.type == "application/vnd.syncml.dmtnds+xml"
    assert read_tnds(codec.serialize_element(back.commands[0].items[0].data)) == read_tnds(text)
    assert len(wire) < len(codec.encode(tnds_results(text.decode()))) * 0.7


def test_every_command_both_ways_with_tnds(tmp_path: Path) -> None:
    """The whole command set, TNDS Add included, through libwbxml2 in both directions."""
    from host.syncml.wbxml import decode_wbxml, encode_wbxml

    msg = m.SyncMLMessage(header(m.PROTO_DM), every_command())
    (tmp_path / "ours.wbxml").write_bytes(encode_wbxml(msg))
    run(WBXML2XML, "-m", "0", "-o", str(tmp_path / "ours.xml"), str(tmp_path / "ours.wbxml"))
    assert codec.encode(codec.decode((tmp_path / "ours.xml").read_bytes())) == codec.encode(msg)
    (tmp_path / "in.xml").write_bytes(codec.encode(msg))
    run(XML2WBXML, "-o", str(tmp_path / "theirs.wbxml"), str(tmp_path / "in.xml"))
    assert codec.encode(decode_wbxml((tmp_path / "theirs.wbxml").read_bytes())) == codec.encode(msg)
