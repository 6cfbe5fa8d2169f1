"""Exhaustive tearing at the applet level: for a whole COMMIT BACKUP, a DELETE
BACKUP, VERIFY, RESET RETRY COUNTER and EXTERNAL AUTHENTICATE, power is cut
at every NVM write of the APDU (torn or not); after power-on the previous
backup is intact and verifiable, the new one is complete or absent, and no
retry counter (PIN, PUK, admin key) ever gains a try."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from cards import (
    SELECT_APDU,
    TEST_POINT,
    VERIFY_APDU,
    TestBackup,
    build_test_card,
    emulator_client,
    make_backup,
    snapshot,
    tx,
    upload,
)

from apdu_specs import commands as K
from apdu_specs.manifest import MANIFEST, verify_raw
from card.emulator import VirtualCard

CAPACITY = 192 * 1024


def _verifiable(card: VirtualCard, backup_id: bytes) -> bool:
    """The stored backup checks out as the card's COMMIT would check it."""
    store = card.store
    info = store.get_backup(backup_id)
    raw = store.read_manifest(backup_id, 0, info.manifest_length)
    manifest = MANIFEST.decode(raw)
    if not verify_raw(TEST_POINT, raw, info.signature) or manifest.backup_id != backup_id:
        return False
    return all(hashlib.sha256(store.read_chunk(ref.chunk_id)).digest() == ref.sha256
               and store.chunk_info(ref.chunk_id).length == ref.size for ref in manifest.chunks)


def _session(path) -> VirtualCard:
    card = VirtualCard.open(path)
    card.power_on()
    assert tx(card, SELECT_APDU)[1] == 0x6122
    assert tx(card, VERIFY_APDU)[1] == 0x9000
    return card


def _sweep(template, prepare, apdu: bytes, check) -> int:
    """Run ``apdu`` on copies of ``template`` with power cut at write 1..N+1 (torn
    and clean cuts); ``prepare(card)`` runs before arming, ``check(card, done)``
    after power-on. Returns N, the APDU's write count."""
    work = template.with_name("work.img")
    shutil.copyfile(template, work)
    card = _session(work)
    prepare(card)
    fault = card.arm_fault(None)
    out = card.transmit(apdu)
    assert out[-2:] == b"\x90\x00", out.hex()
    writes = fault.writes
    card.disarm_fault()
    card.store.check()
    check(card, True)
    card.close()
    assert writes > 0
    for cut in range(1, writes + 1):
        for tear in (True, False):
            shutil.copyfile(template, work)
            card = _session(work)
            prepare(card)
            card.arm_fault(cut, tear=tear)
            assert card.transmit(apdu) == b"", f"write {cut} did not cut power"
            assert not card.powered
            card.disarm_fault()
            card.power_on()                              # recovery
            card.store.check()
            check(card, False)
            card.close()
    return writes


def _commit_apdu(backup: TestBackup) -> bytes:
    return bytes.fromhex("8028000040") + K.COMMIT_BACKUP_DATA.encode({"signature": backup.signature}) + b"\x00"


def test_tear_commit_at_every_write(tmp_path):
    template = tmp_path / "template.img"
    card = build_test_card(template, capacity=CAPACITY)
    client = emulator_client(card)
    old = make_backup(1, [b"shared" * 300, b"old only" * 50])
    upload(client, old)
    new = make_backup(2, [b"shared" * 300, b"new one" * 700, b"new two" * 20])
    upload(client, new, commit=False)
    client.put_chunk(b"\x77" * 32, b"stray pending chunk")     # freed by the commit
    reference = snapshot(card)
    card.close()

    def prepare(c: VirtualCard) -> None:
        begin = K.BEGIN_BACKUP_DATA.encode({"backup_id": new.backup_id, "sequence": 2,
                                            "manifest_length": len(new.manifest)})
        data, sw = tx(c, bytes.fromhex("802000001C") + begin + b"\x00")
        assert sw == 0x9000 and K.BEGIN_BACKUP_RESPONSE.decode(data)["resumed"]

    def check(c: VirtualCard, done: bool) -> None:
        now = snapshot(c)
        assert now[old.backup_id] == reference[old.backup_id]
        assert _verifiable(c, old.backup_id)
        assert (new.backup_id in now) or not done
        if new.backup_id in now:                          # complete, or absent
            assert _verifiable(c, new.backup_id)
            assert c.store.high_water_mark == 2
        else:
            assert c.store.high_water_mark == 1
            assert set(now) == {old.backup_id}

    writes = _sweep(template, prepare, _commit_apdu(new), check)
    assert writes >= 5


def test_tear_delete_at_every_write(tmp_path):
    template = tmp_path / "template.img"
    card = build_test_card(template, capacity=CAPACITY)
    client = emulator_client(card)
    first = make_backup(1, [b"shared" * 300, b"first only" * 40])
    second = make_backup(2, [b"shared" * 300, b"second only" * 40])
    upload(client, first)
    upload(client, second)
    reference = snapshot(card)
    card.close()

    def check(c: VirtualCard, done: bool) -> None:
        now = snapshot(c)
        assert now[second.backup_id] == reference[second.backup_id] and _verifiable(c, second.backup_id)
        assert (first.backup_id not in now) or not done
        if first.backup_id in now:
            assert now[first.backup_id] == reference[first.backup_id] and _verifiable(c, first.backup_id)

    apdu = bytes.fromhex("8036000010") + first.backup_id
    assert _sweep(template, lambda c: None, apdu, check) >= 3


def _primed_template(tmp_path, make_apdu, sw: int):
    """A test card image whose first APDU after SELECT (``make_apdu(card)``) answered ``sw``."""
    template = tmp_path / "template.img"
    card = build_test_card(template, capacity=CAPACITY)
    card.power_on()
    tx(card, SELECT_APDU)
    assert tx(card, make_apdu(card))[1] == sw
    card.close()
    return template


def _tear_each_write(template, make_apdu, done_sw: bytes, check) -> int:
    """Cut power at write 1, 2, ... (torn and clean) of the APDU ``make_apdu(card)``
    sent after SELECT on a copy of ``template``, until the cut comes after its last
    write (that run must answer ``done_sw``); ``check(card, cut)`` runs after
    power-on. Returns the APDU's write count."""
    work = template.with_name("work.img")
    cut = 1
    while True:
        for tear in (True, False):
            shutil.copyfile(template, work)
            card = VirtualCard.open(work)
            card.power_on()
            tx(card, SELECT_APDU)
            apdu = make_apdu(card)
            fault = card.arm_fault(cut, tear=tear)
            out = card.transmit(apdu)
            if not fault.fired:
                assert out[-2:] == done_sw, out.hex()
                card.close()
                return fault.writes
            assert out == b"", f"write {cut} did not cut power"
            card.disarm_fault()
            card.power_on()
            check(card, cut)
            card.close()
        cut += 1


@pytest.mark.parametrize("pin,ok", [(b"1234", True), (b"9999", False)])
def test_tear_verify_never_gains_a_try(tmp_path, pin, ok):
    template = _primed_template(tmp_path, lambda c: bytes.fromhex("0020008108") + b"0000\xff\xff\xff\xff",
                                0x63C2)   # 2 tries left
    apdu = bytes.fromhex("0020008108") + pin + b"\xff" * 4

    def check(card: VirtualCard, cut: int) -> None:
        left = card.store.pin_tries_left()
        assert left <= 2, f"cut at write {cut} gave a try back"
        tx(card, SELECT_APDU)
        status = K.GET_STATUS_RESPONSE.decode(tx(card, "8010000000")[0])
        assert not status["pin_verified"] and status["pin_tries"] == left

    writes = _tear_each_write(template, lambda c: apdu, b"\x90\x00" if ok else b"\x63\xc1", check)
    assert writes == (2 if ok else 1)


@pytest.mark.parametrize("puk,ok", [(b"12345678", True), (b"87654321", False)])
def test_tear_unblock_never_gains_a_puk_try(tmp_path, puk, ok):
    """RESET RETRY COUNTER cut at every write (one PUK try already spent):
    a wrong PUK never gets its try back, and the PIN is the old one or the new one."""
    template = _primed_template(tmp_path, lambda c: bytes.fromhex("002C008110") + b"00000000" + b"4321\xff\xff\xff\xff",
                                0x63C9)
    apdu = bytes.fromhex("002C008110") + puk + b"4321\xff\xff\xff\xff"

    def check(card: VirtualCard, cut: int) -> None:
        store = card.store
        assert ok or store.puk_tries_left() <= 9, f"cut {cut} gave a PUK try back"
        old, new = store.verify_pin(b"1234")[0], store.verify_pin(b"4321")[0]
        assert old != new and (ok or old), f"cut {cut}: PIN neither old nor new"
        store.check()

    writes = _tear_each_write(template, lambda c: apdu, b"\x90\x00" if ok else b"\x63\xc8", check)
    assert writes > 2 if ok else writes == 1


def _admin_attempt(card: VirtualCard, key: bytes) -> bytes:
    """INITIALIZE UPDATE with ``key``'s view; the EXTERNAL AUTHENTICATE APDU."""
    from apdu_specs.scp import INITIALIZE_UPDATE_RESPONSE_SCP03, KeySet, SecureChannel
    challenge = bytes(range(8))
    data, sw = tx(card, bytes.fromhex("8050000008") + challenge + b"\x00")
    assert sw == 0x9000
    channel = SecureChannel(KeySet.from_bytes(key), challenge,
                            INITIALIZE_UPDATE_RESPONSE_SCP03.decode(data)["card_challenge"])
    body = channel.external_authenticate(0x01)
    return bytes.fromhex("84820100") + bytes([len(body)]) + body


@pytest.mark.parametrize("right_key", [True, False])
def test_tear_admin_authentication_never_gains_a_try(tmp_path, right_key):
    """EXTERNAL AUTHENTICATE counts a failure in NVM before comparing (one
    failure already counted): a cut at any write never clears the count of a
    wrong key."""
    from cards import TEST_ADMIN_KEY
    template = _primed_template(tmp_path, lambda c: _admin_attempt(c, bytes(16)), 0x6300)

    def check(card: VirtualCard, cut: int) -> None:
        left = card.store.admin_tries_left()
        assert left in ((8, 9, 10) if right_key else (8, 9)), f"cut {cut}: {left} admin tries left"
        card.store.check()

    writes = _tear_each_write(template, lambda c: _admin_attempt(c, TEST_ADMIN_KEY if right_key else bytes(16)),
                              b"\x90\x00" if right_key else b"\x63\x00", check)
    assert writes == (2 if right_key else 1)
