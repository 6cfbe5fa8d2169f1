"""Tearing of the admin attempt counter at every SCP03 level: power is cut at each
NVM write (torn and clean) of an EXTERNAL AUTHENTICATE with the right key, a
wrong cryptogram and a wrong C-MAC; after power-on no attempt is ever given back
(the count is written before the compare, cleared only after a match)."""
from __future__ import annotations

import shutil

import pytest
from cards import SELECT_APDU, TEST_ADMIN_KEY, build_test_card, tx

from apdu_specs import scp as S
from card.emulator import VirtualCard

RIGHT = S.KeySet.from_bytes(TEST_ADMIN_KEY)
WRONG = S.KeySet.from_bytes(bytes(16))


def _ext_auth(card: VirtualCard, keys: S.KeySet, level: int, spoil_mac: bool = False) -> bytes:
    challenge = bytes(range(8))
    data, sw = tx(card, bytes.fromhex("8050000008") + challenge + b"\x00")
    assert sw == 0x9000
    channel = S.SecureChannel(keys, challenge, S.INITIALIZE_UPDATE_RESPONSE_SCP03.decode(data)["card_challenge"])
    body = bytearray(channel.external_authenticate(level))
    if spoil_mac:
        body[-1] ^= 1
    return bytes([0x84, 0x82, level, 0, len(body)]) + bytes(body)


@pytest.mark.parametrize("level", [0x01, 0x33], ids=["SL01", "SL33"])
@pytest.mark.parametrize("case,done_sw", [("right", 0x9000), ("cryptogram", 0x6300), ("mac", 0x6988)])
def test_tear_never_gives_an_attempt_back(tmp_path, level, case, done_sw):
    template = tmp_path / "template.img"
    card = build_test_card(template, capacity=128 * 1024)
    card.power_on()
    tx(card, SELECT_APDU)
    assert tx(card, _ext_auth(card, WRONG, level))[1] == 0x6300           # one failure already counted
    card.close()
    work = tmp_path / "work.img"
    keys = WRONG if case == "cryptogram" else RIGHT
    cut, cuts = 1, 0
    while True:
        for tear in (True, False):
            shutil.copyfile(template, work)
            card = VirtualCard.open(work)
            card.power_on()
            tx(card, SELECT_APDU)
            apdu = _ext_auth(card, keys, level, spoil_mac=case == "mac")
            fault = card.arm_fault(cut, tear=tear)
            out = card.transmit(apdu)
            if not fault.fired:
                assert int.from_bytes(out[-2:], "big") == done_sw
                assert card.store.admin_tries_left() == (10 if case == "right" else 8)
                assert cuts >= 2                      # at least the counter write was cut, torn and clean
                card.close()
                return
            cuts += 1
            assert out == b""
            card.disarm_fault()
            card.power_on()
            left = card.store.admin_tries_left()
            allowed = (8, 9, 10) if case == "right" else (8, 9)
            assert left in allowed, f"cut {cut} (torn={tear}): {left} tries left"
            assert not card.applet.session.admin                 # power loss closed any channel
            card.store.check()
            card.close()
        cut += 1
