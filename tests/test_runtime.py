"""The ISO 7816-4 runtime (card/runtime.py) on a personalised card: APDU cases,
malformed lengths, CLA/INS checks, SELECT, GET RESPONSE, T=0 61xx/6Cxx,
command chaining, exceptions and volatile state."""
from __future__ import annotations

import logging

import pytest
from cards import (
    SELECT_APDU,
    VERIFY_APDU,
    build_test_card,
    emulator_client,
    make_backup,
    tx,
    upload,
)

from apdu_specs import commands as K
from apdu_specs.fci import FCI
from card.nvm import PowerLoss
from card.runtime import CardLimits, SwError, parse_command
from host.link.atr import parse_atr

AID = b"\xf0SIMVAULT\x01"



def _card(tmp_path, limits: CardLimits | None = None, name: str = "card.img"):
    card = build_test_card(tmp_path / name, limits=limits, capacity=256 * 1024)
    card.power_on()
    return card


@pytest.fixture
def card(tmp_path):
    c = _card(tmp_path)
    yield c
    c.close()


@pytest.fixture
def selected(card):
    assert tx(card, SELECT_APDU)[1] == 0x6122
    return card


# ---- ATR -----------------------------------------------------------------------------


@pytest.mark.parametrize("limits,protocols,extended", [
    (CardLimits(), (0, 1), True),
    (CardLimits.short(), (0, 1), False),
    (CardLimits(t0=True), (0,), True),
])
def test_atr_announces_protocols_and_capabilities(tmp_path, limits, protocols, extended):
    card = _card(tmp_path, limits)
    info = parse_atr(card.atr)
    assert info.protocols == protocols
    assert info.extended_length is extended
    assert info.chaining
    assert info.tck_ok in (True, None)
    assert card.power_on() == card.atr == card.reset()


# ---- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "", "00", "80", "8010", "801000",                 # shorter than a header
    "801000000000",                                   # 00 then one byte: neither short nor extended
    "8010000005010203",                               # short Lc 5, 3 bytes
    "80100000020102030405",                           # short Lc 2, 5 bytes
    "8010000000000000",                               # extended Lc 0
    "80100000000005010203",                           # extended Lc 5, 3 bytes
    "8010000000000301020304",                         # extended Lc 3 with 1 stray byte
])
def test_malformed_lengths_answer_6700(selected, raw):
    assert tx(selected, raw) == (b"", 0x6700)


def test_parse_all_cases():
    assert parse_command(bytes.fromhex("80100000"), True).le is None
    assert parse_command(bytes.fromhex("8010000000"), True).le == 256
    assert parse_command(bytes.fromhex("80100000000000"), True).le == 65536
    p = parse_command(bytes.fromhex("8010000002AABB"), True)
    assert (p.data, p.le, p.extended) == (b"\xaa\xbb", None, False)
    p = parse_command(bytes.fromhex("8010000002AABB10"), True)
    assert (p.data, p.le) == (b"\xaa\xbb", 16)
    p = parse_command(bytes.fromhex("80100000000002AABB"), True)
    assert (p.data, p.le, p.extended) == (b"\xaa\xbb", None, True)
    p = parse_command(bytes.fromhex("80100000000002AABB0100"), True)
    assert (p.data, p.le, p.extended) == (b"\xaa\xbb", 256, True)
    with pytest.raises(SwError) as err:
        parse_command(bytes.fromhex("80100000000002AABB"), False)
    assert err.value.sw == 0x6700


def test_four_cases_short_and_extended(selected):
    # case 2 short and extended
    data, sw = tx(selected, "8010000000")
    assert sw == 0x9000 and K.GET_STATUS_RESPONSE.decode(data)["pin_tries"] == 3
    assert tx(selected, "80100000000000")[1] == 0x9000
    # case 1: the answer waits for GET RESPONSE
    assert tx(selected, "80100000") == (b"", 0x6100 | len(data))
    assert tx(selected, f"00C00000{len(data):02X}") == (data, 0x9000)
    # case 3 short and extended
    assert tx(selected, VERIFY_APDU) == (b"", 0x9000)
    assert tx(selected, bytes.fromhex("00200081000008") + VERIFY_APDU[5:]) == (b"", 0x9000)
    # case 4 short and extended
    fci, sw = tx(selected, SELECT_APDU + b"\x00")
    assert sw == 0x9000 and FCI.decode(fci).aid == AID
    assert tx(selected, bytes.fromhex("00A4040000000A") + AID + b"\x00\x00") == (fci, 0x9000)


def test_extended_refused_in_short_mode(tmp_path):
    card = _card(tmp_path, CardLimits.short())
    assert tx(card, bytes.fromhex("00A4040000000A") + AID)[1] == 0x6700
    assert tx(card, SELECT_APDU + b"\x00")[1] == 0x9000
    assert tx(card, "80100000000000")[1] == 0x6700


def test_lc_above_maximum_is_6700(selected):
    big = 16384 + 64 + 1
    assert tx(selected, bytes.fromhex("80240000") + b"\x00" + big.to_bytes(2, "big") + bytes(big))[1] == 0x6700


# ---- CLA / INS / selection -------------------------------------------------------------


@pytest.mark.parametrize("cla,sw", [
    (0xA0, 0x6E00), (0xFF, 0x6E00), (0x20, 0x6E00), (0xC0, 0x6E00),
    (0x01, 0x6881), (0x03, 0x6881), (0x81, 0x6881), (0x41, 0x6881), (0x6F, 0x6881),
    (0x0C, 0x6882), (0x08, 0x6882), (0x04, 0x6882),
])
def test_cla_checks(selected, cla, sw):
    assert tx(selected, bytes([cla]) + bytes.fromhex("10000000"))[1] == sw


def test_ins_dispatch(selected):
    assert tx(selected, "80FE000000")[1] == 0x6D00
    assert tx(selected, "00FE000000")[1] == 0x6D00
    assert tx(selected, "8410000000")[1] == 0x6E00     # GET STATUS exists, not in class 84
    assert tx(selected, "0010000000")[1] == 0x6E00


def test_manage_channel_is_6881(card):
    """Only the basic channel: MANAGE CHANNEL open/close answers 6881, selected or not."""
    assert tx(card, "0070000001")[1] == 0x6881
    assert tx(card, SELECT_APDU)[1] >> 8 == 0x61
    assert tx(card, "0070000001")[1] == 0x6881
    assert tx(card, "0070800100")[1] == 0x6881


def test_commands_need_selection(card):
    assert tx(card, "8010000000")[1] == 0x6986
    assert tx(card, VERIFY_APDU)[1] == 0x6986


def test_select_rules(card):
    assert tx(card, bytes.fromhex("00A4040009") + AID[:9])[1] == 0x6A82          # partial AID
    assert tx(card, bytes.fromhex("00A404000A") + b"\xf0SIMVAULT\x02")[1] == 0x6A82
    assert tx(card, bytes.fromhex("00A404020A") + AID)[1] == 0x6A86               # next occurrence
    assert tx(card, bytes.fromhex("00A400000A") + AID)[1] == 0x6A86               # not by DF name
    assert tx(card, bytes.fromhex("00A4040011") + AID + bytes(7))[1] == 0x6700    # 17-byte AID
    assert tx(card, "8010000000")[1] == 0x6986
    assert tx(card, bytes.fromhex("00A4040C0A") + AID) == (b"", 0x9000)          # no FCI asked
    assert tx(card, "8010000000")[1] == 0x9000
    # a failed SELECT keeps the applet selected
    assert tx(card, bytes.fromhex("00A4040009") + AID[:9])[1] == 0x6A82
    assert tx(card, "8010000000")[1] == 0x9000


# ---- GET RESPONSE and long answers ----------------------------------------------------


def test_get_response_rules(selected):
    assert tx(selected, "00C0000022")[1] == 0x9000                  # the FCI of SELECT without Le
    assert tx(selected, "00C0000000")[1] == 0x6985                  # nothing pending
    assert tx(selected, "80100000")[1] == 0x6129             # GET STATUS: 41 bytes
    assert tx(selected, "00C0010000")[1] == 0x6A86                  # kept pending
    assert tx(selected, "00C0000029")[1] == 0x9000
    assert tx(selected, "00C0000029")[1] == 0x6985                  # consumed
    assert tx(selected, "80100000")[1] == 0x6129
    assert tx(selected, "8040000000")[1] == 0x9000                  # another command drops it
    assert tx(selected, "00C0000029")[1] == 0x6985


def _long_card(tmp_path, limits: CardLimits | None = None):
    """A card with 6 backups: LIST BACKUPS answers 1 + 6 * 44 = 265 bytes."""
    card = build_test_card(tmp_path / "long.img", limits=limits, capacity=256 * 1024)
    client = emulator_client(card)
    for seq in range(1, 7):
        upload(client, make_backup(seq, [bytes([seq]) * 100]))
    listing = K.LIST_BACKUPS_RESPONSE.encode({"total": 6, "entries": [e.__dict__ for e in client.list_backups()]})
    card.power_off()
    card.power_on()
    assert tx(card, SELECT_APDU)[1] == 0x6122
    assert tx(card, VERIFY_APDU)[1] == 0x9000
    assert len(listing) == 265
    return card, listing


def _fetch(card, data: bytes, sw: int) -> tuple[bytes, int]:
    out = bytearray(data)
    while sw >> 8 == 0x61:
        data, sw = tx(card, bytes.fromhex("00C00000") + bytes([sw & 0xFF]))
        out += data
    return bytes(out), sw


def test_t1_answer_what_fits_then_61xx(tmp_path):
    card, listing = _long_card(tmp_path)
    data, sw = tx(card, "80300000")                        # no Le: everything waits
    assert (data, sw) == (b"", 0x6100)
    assert _fetch(card, data, sw) == (listing, 0x9000)
    data, sw = tx(card, "8030000010")                      # Le 16: one entry does not fit
    assert (len(data), sw) == (16, 0x611D)
    assert _fetch(card, data, sw)[0] == listing[:1 + 44]
    data, sw = tx(card, "8030000000")                      # Le 256: as many entries as fit
    assert sw == 0x9000 and data == listing[:1 + 5 * 44]
    data, sw = tx(card, "80300500")
    assert _fetch(card, data, sw)[0] == bytes([6]) + listing[1 + 5 * 44:]
    data, sw = tx(card, "80300000000000")                  # extended Le: all at once
    assert (data, sw) == (listing, 0x9000)
    data, sw = tx(card, "8030000010")                      # extended GET RESPONSE for the rest
    rest, sw = tx(card, "00C00000000000")
    assert sw == 0x9000 and data + rest == listing[:45]


def test_t0_mode_long_answers(tmp_path):
    card, listing = _long_card(tmp_path, CardLimits(t0=True))
    assert tx(card, "8030000000") == (b"", 0x6CDD)            # case 2: 5 entries fit Le 256, wrong Le
    assert tx(card, "80300000DD") == (listing[:221], 0x9000)
    data, sw = tx(card, "80300000")                           # case 1: 265 bytes, 256 at a time
    assert (data, sw) == (b"", 0x6100)
    part, sw = tx(card, "00C0000010")                         # GET RESPONSE below what waits: 61xx
    assert (part, sw) == (listing[:16], 0x6100 | (len(listing) - 16))
    assert _fetch(card, part, sw) == (listing, 0x9000)
    assert tx(card, "8010000001")[1] >> 8 == 0x61             # case 2, Le below the answer: Le bytes, 61xx
    _, sw = tx(card, "00C0000040")                             # GET RESPONSE above what waits: 6Cxx,
    assert sw >> 8 == 0x6C                                     # the answer still waits
    rest, sw2 = tx(card, bytes([0, 0xC0, 0, 0, sw & 0xFF]))
    assert sw2 == 0x9000 and len(rest) == sw & 0xFF
    data, sw = tx(card, bytes.fromhex("8034000024") + bytes(36) + b"\x00")   # case 4: 61xx or error
    assert data == b"" and sw == 0x6A88


# ---- chaining ---------------------------------------------------------------------------


def test_chaining_assembles_the_data(selected):
    first = bytes.fromhex("1020008104") + b"1234"
    last = bytes.fromhex("0020008104") + b"\xff" * 4
    assert tx(selected, first) == (b"", 0x9000)
    assert tx(selected, last) == (b"", 0x9000)
    assert K.GET_STATUS_RESPONSE.decode(tx(selected, "8010000000")[0])["pin_verified"]


def test_chain_broken_by_another_command(selected):
    assert tx(selected, bytes.fromhex("1020008104") + b"1234")[1] == 0x9000
    assert tx(selected, "8010000000")[1] == 0x6883
    # the chain is gone: the last segment alone is a malformed PIN block
    assert tx(selected, bytes.fromhex("0020008104") + b"\xff" * 4)[1] == 0x6A80
    assert tx(selected, bytes.fromhex("1020008104") + b"1234")[1] == 0x9000
    assert tx(selected, bytes.fromhex("0020008204") + b"\xff" * 4)[1] == 0x6883   # other P2
    assert tx(selected, bytes.fromhex("10C0000000"))[1] == 0x6884                  # GET RESPONSE chained


def test_chain_bounded(tmp_path):
    card = _card(tmp_path, CardLimits.short(max_chunk_size=1024))
    assert tx(card, SELECT_APDU)[1] == 0x6122
    segment = bytes.fromhex("90240000FF") + bytes(255)
    answers = [tx(card, segment)[1] for _ in range(5)]
    assert answers == [0x9000] * 4 + [0x6A84]               # 1020 bytes fit, 1275 do not
    assert tx(card, "8010000000")[1] == 0x9000        # the chain was dropped


def test_chained_chunk_in_short_mode(tmp_path):
    card = build_test_card(tmp_path / "s.img", limits=CardLimits.short(), capacity=256 * 1024)
    client = emulator_client(card)
    backup = make_backup(3, [bytes(range(256)) * 30])
    entry = upload(client, backup)
    assert entry.stored_bytes == 7680
    cid = next(iter(backup.chunks))
    assert client.read_chunk(cid, 7680) == backup.chunks[cid]
    assert client.link.stats.apdus > 60      # chained segments and GET RESPONSEs


# ---- exceptions, power, volatile state ---------------------------------------------------


def test_unexpected_exception_is_6f00_and_logs_no_data(selected, monkeypatch, caplog):
    def broken(pin: bytes):
        raise ZeroDivisionError("bug")
    monkeypatch.setattr(selected.store, "verify_pin", broken)
    with caplog.at_level(logging.ERROR):
        assert tx(selected, VERIFY_APDU) == (b"", 0x6F00)
    assert "0020" in caplog.text and "31323334" not in caplog.text and "1234" not in caplog.text


def test_power_loss_goes_to_the_emulator(selected):
    assert tx(selected, VERIFY_APDU)[1] == 0x9000
    selected.arm_fault(1)
    assert selected.transmit(bytes.fromhex("0020008108") + b"9999\xff\xff\xff\xff") == b""
    assert not selected.powered and selected.power_losses == 1
    assert selected.transmit(bytes.fromhex("8010000000")) == b""           # mute until powered
    selected.disarm_fault()
    selected.power_on()
    with pytest.raises(PowerLoss):        # the runtime itself lets PowerLoss through
        selected.arm_fault(1)
        tx(selected, SELECT_APDU)
        selected.runtime.transmit(bytes.fromhex("0020008108") + b"9999\xff\xff\xff\xff")
    selected.disarm_fault()


def test_power_cycle_and_reset_clear_volatile_state(selected):
    assert tx(selected, VERIFY_APDU)[1] == 0x9000
    assert tx(selected, "80100000")[1] == 0x6129                       # a pending answer
    selected.reset()
    assert tx(selected, "00C0000029")[1] == 0x6986 or tx(selected, "00C000001F")[1] == 0x6985
    assert tx(selected, "8010000000")[1] == 0x6986                      # not selected
    assert tx(selected, SELECT_APDU)[1] == 0x6122
    status = K.GET_STATUS_RESPONSE.decode(tx(selected, "8010000000")[0])
    assert not status["pin_verified"]
    assert tx(selected, bytes.fromhex("1020008104") + b"1234")[1] == 0x9000
    selected.power_off()
    selected.power_on()
    assert tx(selected, SELECT_APDU)[1] == 0x6122
    assert tx(selected, bytes.fromhex("0020008104") + b"\xff" * 4)[1] == 0x6A80   # no chain survived
