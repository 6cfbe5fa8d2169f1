"""ATR parsing: protocols, historical bytes, card capabilities."""
from __future__ import annotations

import pytest

from host.link import AtrError, build_atr, parse_atr


def test_t1_card_with_capabilities() -> None:
    # 3B 8A 01 | 80 73 80 21 C0 54 'echo' | TCK
    info = parse_atr(bytes.fromhex("3b8a0180738021c0546563686f4c"))
    assert info.protocols == (1,) and info.tck_ok is True
    assert info.historical == bytes.fromhex("80738021c0546563686f")
    assert info.card_capabilities == bytes.fromhex("8021c0")
    assert info.extended_length and info.chaining
    assert info.compact_tlv[0x5] == b"echo"


def test_javacard_like_atr_t0_t1_with_ta1() -> None:
    # 3B F8 13 00 00 81 31 FE 45 'JCOP41V2' TCK: TA1..TC1, TD1=81 (T=1), TA2? no: TD1 high nibble 8 -> TD2=31
    atr = bytes.fromhex("3bf81300008131fe454a434f5076323431b7")
    info = parse_atr(atr)
    assert info.interface_bytes["TA1"] == 0x13 and info.interface_bytes["TD1"] == 0x81
    assert info.protocols == (1,)
    assert info.historical == b"JCOPv241"
    assert info.card_capabilities is None and not info.extended_length
    assert info.category == ord("J")


def test_category_00_with_status_indicator_and_no_extended() -> None:
    # T=0 only, no TCK; historical 00 | 73 80 21 80 (chaining, no extended) | status 00 90 00
    hist = bytes.fromhex("0073802180009000")
    atr = bytes((0x3B, len(hist))) + hist
    info = parse_atr(atr)
    assert info.protocols == (0,) and info.tck_ok is None
    assert info.status_indicator == bytes.fromhex("009000")
    assert info.chaining and not info.extended_length


def test_build_atr_roundtrip_t0_and_t1() -> None:
    hist = bytes.fromhex("807380214065")
    for protocols in ((0,), (1,), (0, 1)):
        info = parse_atr(build_atr(hist, protocols))
        assert info.protocols == protocols and info.historical == hist
        assert info.extended_length and not info.chaining


def test_bad_tck_is_reported_not_fatal() -> None:
    atr = bytearray(build_atr(bytes.fromhex("8073802140")))
    atr[-1] ^= 0xFF
    assert parse_atr(bytes(atr)).tck_ok is False


@pytest.mark.parametrize("hexatr", ["", "3b", "2b00", "3b8a01807380", "3b81"])
def test_malformed(hexatr: str) -> None:
    with pytest.raises(AtrError):
        parse_atr(bytes.fromhex(hexatr))
