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
