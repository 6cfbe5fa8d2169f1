"""Apdu/Response encoding: ISO 7816-3 12.1.3 cases 1-4, short and extended."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.link import Apdu, Response, parse_apdu

AID = bytes.fromhex("A0000000041010")


@pytest.mark.parametrize(
    "apdu, wire",
    [
        # case 1: header only
        (Apdu(0x00, 0xA4, 0x04, 0x00), "00A40400"),
        # case 2S: Le 1..256, 256 coded 00
        (Apdu(0x00, 0xB0, 0x00, 0x00, le=16), "00B0000010"),
        (Apdu(0x00, 0xB0, 0x00, 0x00, le=256), "00B0000000"),
        (Apdu(0x00, 0xB0, 0x00, 0x00, le=0), "00B0000000"),
        # case 3S
        (Apdu(0x00, 0xA4, 0x04, 0x00, AID), "00A4040007" + AID.hex().upper()),
        # case 4S
        (Apdu(0x00, 0xA4, 0x04, 0x00, AID, le=256), "00A4040007" + AID.hex().upper() + "00"),
        # case 2E: 00 Le1 Le2, 65536 coded 0000
        (Apdu(0x00, 0xB0, 0x00, 0x00, le=257), "00B00000000101"),
        (Apdu(0x00, 0xB0, 0x00, 0x00, le=65536), "00B00000000000"),
        (Apdu(0x00, 0xB0, 0x00, 0x00, le=256, extended=True), "00B00000000100"),
        # case 3E: 00 Lc1 Lc2 data
        (Apdu(0x00, 0xD6, 0x00, 0x00, b"\x01", extended=True), "00D6000000000101"),
        # case 4E: 00 Lc1 Lc2 data Le1 Le2 (no second 00 before Le)
        (Apdu(0x80, 0x10, 0x00, 0x00, b"\xAA\xBB", le=0x1000, extended=True), "80100000000002AABB1000"),
        (Apdu(0x80, 0x10, 0x00, 0x00, b"\xAA", le=65536), "80100000000001AA0000"),
    ],
)
def test_encoding_vectors(apdu: Apdu, wire: str) -> None:
    assert apdu.to_bytes().hex().upper() == wire
    back = parse_apdu(bytes.fromhex(wire))
    assert back.header == apdu.header and back.data == apdu.data
    assert back.is_extended == apdu.is_extended
    if apdu.le is None:
        assert back.le is None
    else:  # Le 0 means "maximum": it comes back as 256 / 65536
        assert back.le == (apdu.le or (65536 if apdu.is_extended else 256))


def test_long_data_chooses_extended_form() -> None:
    data = bytes(range(256)) * 254  # 65,024 bytes
    raw = Apdu(0x80, 0x10, 0, 0, data, le=0, extended=False).to_bytes()
    assert raw[4:7] == b"\x00" + len(data).to_bytes(2, "big")
    assert raw[7:-2] == data and raw[-2:] == b"\x00\x00"
    assert len(raw) == 4 + 3 + len(data) + 2


def test_short_boundaries() -> None:
    assert len(Apdu(0, 0xD6, 0, 0, bytes(255)).to_bytes()) == 4 + 1 + 255
    assert Apdu(0, 0xD6, 0, 0, bytes(256)).to_bytes()[4:7] == b"\x00\x01\x00"
    assert Apdu(0, 0xD6, 0, 0, bytes(255)).case == 3
    assert Apdu(0, 0xB0, le=1).case == 2 and Apdu(0, 0xA4).case == 1
    assert Apdu(0, 0xA4, data=b"x", le=1).case == 4


@pytest.mark.parametrize(
    "kwargs",
    [dict(cla=256, ins=0), dict(cla=0, ins=-1), dict(cla=0, ins=0, le=65537), dict(cla=0, ins=0, data=bytes(65536))],
)
def test_invalid_fields_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Apdu(**kwargs)


def test_data_must_be_bytes_not_hex() -> None:
    with pytest.raises(TypeError):
        Apdu(0, 0xA4, data="A000")  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["00", "00A404", "00A4040005AABB", "00A40400000003AABB", "00A4040000000211"])
def test_parse_rejects_malformed(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_apdu(bytes.fromhex(raw))


@settings(max_examples=150, deadline=None)
@given(
    header=st.tuples(*[st.integers(0, 255)] * 4),
    data=st.binary(max_size=600),
    le=st.one_of(st.none(), st.integers(1, 65536)),
    extended=st.booleans(),
)
def test_roundtrip(header: tuple[int, int, int, int], data: bytes, le: int | None, extended: bool) -> None:
    apdu = Apdu(*header, data=data, le=le, extended=extended)
    back = parse_apdu(apdu.to_bytes())
    assert (back.cla, back.ins, back.p1, back.p2) == header
    assert back.data == data and back.le == le
    assert back.is_extended == apdu.is_extended or not (data or le is not None)


def test_response() -> None:
    r = Response.from_bytes(b"\x01\x02\x61\x10")
    assert (r.data, r.sw, r.sw1, r.sw2, r.ok) == (b"\x01\x02", 0x6110, 0x61, 0x10, False)
    assert Response(b"", 0x9000).ok and bytes(Response(b"A", 0x9000)) == b"A\x90\x00"
    with pytest.raises(ValueError):
        Response.from_bytes(b"\x90")


def test_secret_apdu_repr_hides_data() -> None:
    apdu = Apdu(0x00, 0x20, 0x00, 0x81, b"123456", secret=True)
    assert "123456" not in repr(apdu) and b"123456".hex() not in repr(apdu)
    assert "313233" not in repr(apdu)
