"""Our WBXML codec, checked against libwbxml2 both ways; hostile WBXML -> SyncMLError."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_syncml_codec import every_command, header
from test_syncml_libwbxml import WBXML2XML, XML2WBXML, run

from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.wbxml import decode_wbxml, encode_wbxml

# every command, the TNDS Add included (nested as a DM DDF 1.2 document both by libwbxml2 and by us)
PORTABLE = every_command()


@pytest.mark.parametrize("proto", [m.PROTO_DM, m.PROTO_DS])
def test_our_wbxml_round_trips_every_command(proto: str) -> None:
    msg = m.SyncMLMessage(header(proto), every_command(), final=False)
    wire = encode_wbxml(msg)
    assert wire[:5] == b"\x03\xa4\x01\x6a\x00"  # WBXML 1.3, SyncML 1.2, UTF-8, empty string table
    assert codec.encode(decode_wbxml(wire)) == codec.encode(msg)
    assert len(wire) < len(codec.encode(msg)) * 0.5


def test_libwbxml_reads_our_wbxml(tmp_path: Path) -> None:
    msg = m.SyncMLMessage(header(m.PROTO_DS), PORTABLE)
    (tmp_path / "ours.wbxml").write_bytes(encode_wbxml(msg))
    run(WBXML2XML, "-m", "0", "-o", str(tmp_path / "ours.xml"), str(tmp_path / "ours.wbxml"))
    assert codec.encode(codec.decode((tmp_path / "ours.xml").read_bytes())) == codec.encode(msg)


def test_we_read_libwbxml_wbxml_with_string_tables(tmp_path: Path) -> None:
    msg = m.SyncMLMessage(header(m.PROTO_DM), PORTABLE)
    (tmp_path / "in.xml").write_bytes(codec.encode(msg))
    run(XML2WBXML, "-o", str(tmp_path / "theirs.wbxml"), str(tmp_path / "in.xml"))
    theirs = (tmp_path / "theirs.wbxml").read_bytes()
    assert theirs[4] > 0  # libwbxml used a string table (STR_T references)
    assert codec.encode(decode_wbxml(theirs)) == codec.encode(msg)
    run(XML2WBXML, "-n", "-o", str(tmp_path / "inline.wbxml"), str(tmp_path / "in.xml"))
    assert codec.encode(decode_wbxml((tmp_path / "inline.wbxml").read_bytes())) == codec.encode(msg)


GOOD = encode_wbxml(m.SyncMLMessage(header(), [m.Alert(cmd_id=1, data=1201)]))

HOSTILE = {
    "empty": b"",
    "truncated": GOOD[:-3],
    "trailing": GOOD + b"\x01",
    "bad_version": b"\x09" + GOOD[1:],
    "unknown_public_id": b"\x03\x01" + GOOD[3:],
    "utf16_charset": GOOD[:3] + b"\x87\x77" + GOOD[4:],  # MIBenum 1015: strings would hold NULs
    "unknown_charset": GOOD[:3] + b"\x81\x00" + GOOD[4:],  # MIBenum 128
    "undefined_token": GOOD[:5] + b"\x6d\x70\x01\x01",
    "attributes": GOOD[:5] + b"\xad\x01\x01",
    "literal": GOOD[:5] + b"\x04\x00\x01",
    "bad_page": GOOD[:5] + b"\x00\x07\x6d\x01",
    "opaque_overflow": GOOD[:5] + b"\x6d\x6c\x4f\xc3\x8f\xff\xff\xff\x7f",
    "mb_int_too_long": GOOD[:1] + b"\xff\xff\xff\xff\xff\xff\x01",
    "str_t_out_of_range": GOOD[:5] + b"\x6d\x83\x10\x01",
    "deep": GOOD[:5] + b"\x6d" + b"\x54" * 100 + b"\x01" * 101,
    "not_utf8": GOOD[:5] + b"\x6d\x6c\x71\x03\xff\xfe\x00\x01\x01\x01",
    "string_outside_root": GOOD[:5] + b"\x03abc\x00",
    "missing_synchdr": GOOD[:5] + b"\x6d\x6b\x12\x01\x01",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_wbxml_raises_syncml_error(name: str) -> None:
    with pytest.raises(SyncMLError):
        decode_wbxml(HOSTILE[name])


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, len(GOOD) - 1), value=st.integers(0, 255), cut=st.booleans())
def test_mutated_wbxml_never_escapes_syncml_error(pos: int, value: int, cut: bool) -> None:
    data = GOOD[:pos] if cut else GOOD[:pos] + bytes([value]) + GOOD[pos + 1:]
    try:
        decode_wbxml(data)
    except SyncMLError:
        pass


XML_GOOD = codec.encode(m.SyncMLMessage(header(), every_command()[:8]))


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, len(XML_GOOD) - 1), value=st.integers(0, 255), cut=st.booleans())
def test_mutated_xml_never_escapes_syncml_error(pos: int, value: int, cut: bool) -> None:
    data = XML_GOOD[:pos] if cut else XML_GOOD[:pos] + bytes([value]) + XML_GOOD[pos + 1:]
    try:
        codec.decode(data)
    except SyncMLError:
        pass


def test_packed_messages_fit_as_wbxml_too() -> None:
    """pack() counts XML bytes; our WBXML is never larger, so the bound holds for WBXML peers."""
    from host.syncml.packing import pack

    for limit in (2500, 5000):
        for part in pack(header(), every_command(), limit):
            assert len(encode_wbxml(part)) <= len(codec.encode(part)) <= limit
