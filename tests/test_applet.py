"""The backup applet (card/applet.py, applet_admin.py): every command and its
status words, driven through the host client and raw APDUs on a personalised
virtual card."""
from __future__ import annotations

import os

import pytest
from cards import (
    OTHER_SIGNER,
    SELECT_APDU,
    TEST_ADMIN_KEY,
    TEST_KEY_ID,
    TEST_PIN,
    TEST_PUK,
    VERIFY_APDU,
    build_test_card,
    emulator_client,
    make_backup,
    snapshot,
    tx,
    upload,
)
from cryptography.hazmat.primitives.asymmetric import ec

from apdu_specs import commands as K
from apdu_specs import constants as C
from apdu_specs.manifest import key_id, public_point
from apdu_specs.scp import INITIALIZE_UPDATE_RESPONSE_SCP03, KeySet, SecureChannel
from card.runtime import CardLimits
from host.client import (
    AdminAuthError,
    AlreadyOnCardError,
    BackupRejectedError,
    CardFullError,
    CardStateError,
    NotFoundOnCardError,
    PinBlockedError,
    PinRequiredError,
    WrongPinError,
)
from host.errors import CardError, TransportError


@pytest.fixture
def vcard(tmp_path):
    card = build_test_card(tmp_path / "card.img", capacity=512 * 1024)
    card.power_on()
    yield card
    card.close()


@pytest.fixture
def client(vcard):
    return emulator_client(vcard)


def _sw(exc_info) -> int:
    return exc_info.value.sw


# ---- PIN -----------------------------------------------------------------------------------


def test_pin_counter_puk_unblock(vcard):
    client = emulator_client(vcard, pin=False)
    for left in (2, 1):
        with pytest.raises(WrongPinError) as err:
            client.verify_pin("9999")
        assert err.value.tries_left == left and _sw(err) == 0x63C0 | left
    # the counter is persistent: a power cycle does not give a try back
    vcard.power_off()
    client = emulator_client(vcard, pin=False)
    assert client.pin_tries_left() == 1
    with pytest.raises(PinBlockedError) as err:
        client.verify_pin("9999")
    assert _sw(err) == 0x63C0
    with pytest.raises(PinBlockedError) as err:
        client.verify_pin(TEST_PIN)                       # even the right PIN
    assert _sw(err) == 0x6983
    assert client.pin_tries_left() == 0
    assert client.status().life_cycle == C.LifeCycle.PIN_BLOCKED
    with pytest.raises(WrongPinError) as err:
        client.unblock_pin("87654321", "4321")
    assert _sw(err) == 0x63C9
    client.unblock_pin(TEST_PUK, "4321")
    assert client.status().puk_tries == 10 and client.status().pin_tries == 3
    with pytest.raises(WrongPinError):
        client.verify_pin(TEST_PIN)
    client.verify_pin("4321")
    assert client.status().pin_verified


def test_puk_blocks_after_ten(vcard):
    client = emulator_client(vcard, pin=False)
    for left in range(9, -1, -1):
        with pytest.raises((WrongPinError, PinBlockedError)) as err:
            client.unblock_pin("00000000", "1111")
        assert _sw(err) == 0x63C0 | left
    with pytest.raises(PinBlockedError) as err:
        client.unblock_pin(TEST_PUK, "1111")
    assert _sw(err) == 0x6983


def test_change_pin(vcard):
    client = emulator_client(vcard, pin=False)
    with pytest.raises(WrongPinError) as err:
        client.change_pin("0000", "5678")
    assert err.value.tries_left == 2
    client.change_pin(TEST_PIN, "5678")
    assert client.status().pin_verified and client.status().pin_tries == 3
    client.select()
    with pytest.raises(WrongPinError):
        client.verify_pin(TEST_PIN)
    client.verify_pin("5678")


def test_verify_syntax(vcard):
    tx(vcard, SELECT_APDU)
    assert tx(vcard, bytes.fromhex("0020008208") + VERIFY_APDU[5:])[1] == 0x6A86
    assert tx(vcard, bytes.fromhex("0020018108") + VERIFY_APDU[5:])[1] == 0x6A86
    assert tx(vcard, bytes.fromhex("002000810831323334FF3536FF"))[1] == 0x6A80   # digit after padding
    assert tx(vcard, bytes.fromhex("002000810531323334FF"))[1] == 0x6A80
    assert tx(vcard, "0020008100")[1] == 0x63C3                                       # counter, no try used
    assert tx(vcard, VERIFY_APDU)[1] == 0x9000
    assert tx(vcard, "0020008100")[1] == 0x9000
    assert tx(vcard, bytes.fromhex("002C008110") + b"1234\xff\xff\xff\xff" + b"5555\xff\xff\xff\xff")[1] == 0x6A80


def test_access_rules(vcard):
    client = emulator_client(vcard, pin=False)
    backup = make_backup(1, [b"a" * 10])
    for call in (lambda: client.begin_backup(backup.backup_id, 1, len(backup.manifest)),
                 lambda: client.query_chunks([b"\0" * 32]), client.list_backups, client.abort,
                 lambda: client.read_manifest(backup.backup_id), lambda: client.read_chunk(b"\0" * 32, 1),
                 lambda: client.delete_backup(backup.backup_id)):
        with pytest.raises(PinRequiredError) as err:
            call()
        assert _sw(err) == 0x6982
    assert client.status().anchors == 1                   # always allowed
    assert client.list_anchors() == [TEST_KEY_ID]
    client.verify_pin(TEST_PIN)
    client.select()                                       # SELECT forgets the PIN
    with pytest.raises(PinRequiredError):
        client.list_backups()


# ---- upload, read, delete --------------------------------------------------------------------


def test_upload_list_read_delete(client):
    backup = make_backup(7, [os.urandom(3000), os.urandom(16384), b""])
    begin = client.begin_backup(backup.backup_id, 7, len(backup.manifest))
    assert not begin.resumed
    assert client.query_chunks(list(backup.chunks)) == [False] * 3
    for cid, data in backup.chunks.items():
        client.put_chunk(cid, data)
    with pytest.raises(AlreadyOnCardError) as err:
        client.put_chunk(cid, data)
    assert _sw(err) == 0x6A89
    assert client.query_chunks(list(backup.chunks)) == [True] * 3
    client.put_manifest(backup.manifest[:100])
    with pytest.raises(CardStateError) as err:
        client.commit(backup.signature)                   # manifest incomplete
    assert _sw(err) == 0x6985
    client.put_manifest(backup.manifest[100:], offset=100)
    entry = client.commit(backup.signature)
    assert (entry.backup_id, entry.sequence, entry.chunk_count, entry.stored_bytes) == \
        (backup.backup_id, 7, 3, 3000 + 16384)
    assert entry.manifest_length == len(backup.manifest) and entry.created == 1_700_000_000
    assert client.list_backups() == [entry]
    assert client.read_manifest(backup.backup_id) == backup.manifest
    assert client.read_signature(backup.backup_id) == backup.signature
    for cid, data in backup.chunks.items():
        assert client.read_chunk(cid, len(data)) == data
    status = client.status()
    assert (status.backups, status.chunks, status.highest_sequence, status.session_active) == (1, 3, 7, False)
    # a second backup shares a chunk: only the new one is sent
    shared = list(backup.chunks.values())[0]
    second = make_backup(8, [shared, b"new bytes"])
    client.begin_backup(second.backup_id, 8, len(second.manifest))
    assert client.query_chunks(list(second.chunks)) == [True, False]
    upload(client, second)
    client.delete_backup(backup.backup_id)
    assert [e.backup_id for e in client.list_backups()] == [second.backup_id]
    assert client.read_chunk(list(second.chunks)[0], len(shared)) == shared
    with pytest.raises(NotFoundOnCardError) as err:
        client.delete_backup(backup.backup_id)
    assert _sw(err) == 0x6A88
    with pytest.raises(NotFoundOnCardError):
        client.read_manifest(backup.backup_id)
    with pytest.raises(NotFoundOnCardError):
        client.read_chunk(list(backup.chunks)[1], 16384)
    assert client.status().highest_sequence == 8


def test_session_rules(client, vcard):
    backup = make_backup(2, [b"x" * 50])
    cid = next(iter(backup.chunks))
    with pytest.raises(CardStateError):
        client.put_chunk(cid, b"x" * 50)                  # no BEGIN
    with pytest.raises(CardStateError):
        client.commit(backup.signature)
    client.begin_backup(backup.backup_id, 2, len(backup.manifest))
    with pytest.raises(CardError) as err:                 # beyond the announced manifest length
        client.put_manifest(backup.manifest + b"extra")
    assert _sw(err) == 0x6A80
    client.put_chunk(cid, b"x" * 50)
    client.abort()
    assert client.status().session_active is False
    assert client.query_chunks([cid]) == [False]          # pending chunks freed
    # the chunk size limit of the FCI is enforced by the card too
    tx(vcard, bytes.fromhex("80200000") + b"\x1c" + backup.backup_id + (2).to_bytes(8, "big") + (9).to_bytes(4, "big"))
    big = bytes(16385)
    assert tx(vcard, bytes.fromhex("80240000") + b"\x00" + (32 + len(big)).to_bytes(2, "big") + cid + big)[1] == 0x6A80


def test_begin_refusals(client):
    first = make_backup(5, [b"one"])
    upload(client, first)
    with pytest.raises(BackupRejectedError) as err:
        client.begin_backup(os.urandom(16), 5, 100)       # not above the high-water mark
    assert _sw(err) == 0x668A
    with pytest.raises(AlreadyOnCardError):
        client.begin_backup(first.backup_id, 6, 100)      # that id is committed
    with pytest.raises(CardError) as err:
        client.begin_backup(os.urandom(16), 6, 0)
    assert _sw(err) == 0x6A80


# ---- COMMIT refusals ---------------------------------------------------------------------------


def _prepare(client, backup, skip: bytes | None = None, replace: dict[bytes, bytes] | None = None):
    client.begin_backup(backup.backup_id, backup.sequence, len(backup.manifest))
    for cid, data in backup.chunks.items():
        if cid != skip:
            client.put_chunk(cid, (replace or {}).get(cid, data))
    client.put_manifest(backup.manifest)


def _refused(client, backup, sw: int, **kw) -> None:
    before = client.list_backups()
    _prepare(client, backup, **kw)
    with pytest.raises(CardError) as err:
        client.commit(backup.signature)
    assert _sw(err) == sw
    assert client.list_backups() == before


def test_commit_refusals(client, vcard):
    good = make_backup(10, [b"good chunk"])
    upload(client, good)
    reference = snapshot(vcard)
    chunks = [b"alpha" * 100, b"beta" * 200]
    # signature over other bytes
    bad_sig = make_backup(11, chunks)
    bad_sig.signature = make_backup(11, chunks, device_id="other").signature
    _refused(client, bad_sig, 0x6688)
    # signer not a trust anchor
    _refused(client, make_backup(12, chunks, signer=OTHER_SIGNER), 0x6984)
    # rollback: BEGIN announces 13, the signed manifest says 9
    rollback = make_backup(9, chunks, backup_id=os.urandom(16))
    client.begin_backup(rollback.backup_id, 13, len(rollback.manifest))
    client.put_manifest(rollback.manifest)
    with pytest.raises(BackupRejectedError) as err:
        client.commit(rollback.signature)
    assert _sw(err) == 0x668A
    # a chunk never uploaded
    missing = make_backup(14, chunks)
    _refused(client, missing, 0x6A88, skip=list(missing.chunks)[1])
    # a chunk whose bytes differ from the table's hash (same size), and one of another size
    tampered = make_backup(15, chunks)
    cid = list(tampered.chunks)[0]
    _refused(client, tampered, 0x6689, replace={cid: b"ALPHA" * 100})
    resized = make_backup(16, chunks)
    cid = list(resized.chunks)[1]
    _refused(client, resized, 0x6689, replace={cid: b"beta" * 199})
    # malformed manifest, and a manifest of another backup id
    broken = make_backup(17, chunks)
    broken.manifest = b"\xe2" + broken.manifest[1:]
    _refused(client, broken, 0x6A80)
    other_id = make_backup(18, chunks)
    client.begin_backup(os.urandom(16), 18, len(other_id.manifest))
    client.put_manifest(other_id.manifest)
    with pytest.raises(CardError) as err:
        client.commit(other_id.signature)
    assert _sw(err) == 0x6A80
    # the first backup never changed, and a good one still commits
    assert snapshot(vcard) == reference
    client.abort()
    upload(client, make_backup(19, chunks))
    assert [e.sequence for e in client.list_backups()] == [10, 19]


def test_commit_refusal_order_signature_before_chunks(client):
    # untrusted signer AND a missing chunk: the signer check comes first
    backup = make_backup(3, [b"a" * 10, b"b" * 10], signer=OTHER_SIGNER)
    _refused(client, backup, 0x6984, skip=list(backup.chunks)[0])


def test_full_card_keeps_earlier_backups(tmp_path):
    card = build_test_card(tmp_path / "small.img", capacity=96 * 1024)
    client = emulator_client(card)
    first = make_backup(1, [os.urandom(16000)])
    upload(client, first)
    reference = snapshot(card)
    big = make_backup(2, [os.urandom(16000) for _ in range(6)])
    client.begin_backup(big.backup_id, 2, len(big.manifest))
    with pytest.raises(CardFullError) as err:
        for cid, data in big.chunks.items():
            client.put_chunk(cid, data)
    assert _sw(err) == 0x6A84
    assert snapshot(card) == reference
    client.abort()
    assert client.read_chunk(next(iter(first.chunks)), 16000) == next(iter(first.chunks.values()))
    upload(client, make_backup(3, [os.urandom(10000)]))   # the space came back
    card.store.check(deep=True)


def test_resumed_upload_after_power_loss(vcard):
    client = emulator_client(vcard)
    backup = make_backup(4, [os.urandom(5000), os.urandom(6000), os.urandom(7000)])
    client.begin_backup(backup.backup_id, 4, len(backup.manifest))
    ids = list(backup.chunks)
    client.put_chunk(ids[0], backup.chunks[ids[0]])
    client.put_chunk(ids[1], backup.chunks[ids[1]])
    vcard.arm_fault(3)                                  # power dies inside the third PUT CHUNK
    with pytest.raises(TransportError):                 # a mute card: no status word
        client.put_chunk(ids[2], backup.chunks[ids[2]])
    assert not vcard.powered
    vcard.disarm_fault()
    client = emulator_client(vcard)                     # power on: recovery, select, PIN
    begin = client.begin_backup(backup.backup_id, 4, len(backup.manifest))
    assert begin.resumed and begin.chunks_received == 2
    assert client.query_chunks(ids) == [True, True, False]
    client.put_chunk(ids[2], backup.chunks[ids[2]])
    client.put_manifest(backup.manifest)
    assert client.commit(backup.signature).chunk_count == 3
    vcard.store.check(deep=True)


def test_list_pages(tmp_path):
    card = build_test_card(tmp_path / "s.img", limits=CardLimits.short(), capacity=256 * 1024)
    client = emulator_client(card)
    entries = [upload(client, make_backup(seq, [bytes([seq]) * 30])) for seq in range(1, 13)]
    assert client.list_backups() == entries                # 12 * 44 bytes: three pages of 256
    fci = client.fci
    assert (fci.max_command_data, fci.max_response_data, fci.extended_length, fci.chaining) == (255, 256, False, True)
    data, sw = tx(card, "8030050000")
    page = K.LIST_BACKUPS_RESPONSE.decode(data)
    assert sw == 0x9000 and page["total"] == 12 and page["entries"][0]["sequence"] == 6
    assert K.LIST_BACKUPS_RESPONSE.decode(tx(card, "80300C0000")[0]) == {"total": 12, "entries": []}
    assert tx(card, "8030000100")[1] == 0x6A86


def test_read_manifest_offsets(client, vcard):
    backup = make_backup(1, [b"z" * 10])
    upload(client, backup)
    body = K.READ_MANIFEST_DATA.encode({"backup_id": backup.backup_id, "offset": 10})
    data, sw = tx(vcard, bytes.fromhex("8032000014") + body + b"\x05")
    assert (data, sw) == (backup.manifest[10:15], 0x9000)
    data, sw = tx(vcard, bytes.fromhex("8032010014") + body + b"\x00")
    assert (data, sw) == (backup.signature[10:], 0x9000)
    assert tx(vcard, bytes.fromhex("8032020014") + body + b"\x00")[1] == 0x6A86
    past = K.READ_MANIFEST_DATA.encode({"backup_id": backup.backup_id, "offset": 65})
    assert tx(vcard, bytes.fromhex("8032010014") + past + b"\x00")[1] == 0x6A80
    assert tx(vcard, bytes.fromhex("8032000013") + body[:-1] + b"\x00")[1] == 0x6A80


# ---- secure channel and administration ----------------------------------------------------------


def _init_update(vcard, key: bytes) -> SecureChannel:
    host_challenge = bytes(range(8))
    data, sw = tx(vcard, bytes.fromhex("8050000008") + host_challenge + b"\x00")
    assert sw == 0x9000
    resp = INITIALIZE_UPDATE_RESPONSE_SCP03.decode(data)
    assert (resp["key_version"], resp["scp_id"]) == (1, 3)
    return SecureChannel(KeySet.from_bytes(key), host_challenge, resp["card_challenge"])


def _ext_auth(vcard, channel: SecureChannel) -> int:
    data = channel.external_authenticate(0x01)
    return tx(vcard, bytes.fromhex("84820100") + bytes([len(data)]) + data)[1]


def test_admin_channel(client, vcard):
    other = public_point(OTHER_SIGNER.public_key())
    with pytest.raises(PinRequiredError):                  # admin without the channel: 6982
        client._scp = SecureChannel(KeySet.from_bytes(TEST_ADMIN_KEY), bytes(8), bytes(8))
        client._scp.external_authenticate(0x01)
        client.put_trust_anchor(other)
    client.open_admin(TEST_ADMIN_KEY)
    assert client.status().admin_authenticated
    assert client.put_trust_anchor(other) == key_id(other)
    assert set(client.list_anchors()) == {TEST_KEY_ID, key_id(other)}
    client.delete_trust_anchor(key_id(other))
    with pytest.raises(NotFoundOnCardError):
        client.delete_trust_anchor(key_id(other))
    with pytest.raises(CardError) as err:                  # key id that is not the point's
        client._admin("PUT TRUST ANCHOR", 0xE2, K.PUT_TRUST_ANCHOR_DATA.encode(
            {"key_id": bytes(8), "public_key": other}))
    assert _sw(err) == 0x6A80
    with pytest.raises(CardError) as err:                  # not a curve point
        client._admin("PUT TRUST ANCHOR", 0xE2, K.PUT_TRUST_ANCHOR_DATA.encode(
            {"key_id": key_id(b"\x04" + bytes(64)), "public_key": b"\x04" + bytes(64)}))
    assert _sw(err) == 0x6A80
    for n in range(7):                                    # 8 anchors fit, the 9th does not
        point = public_point(ec.derive_private_key(1000 + n, ec.SECP256R1()).public_key())
        client.put_trust_anchor(point)
    with pytest.raises(CardFullError):
        client.put_trust_anchor(other)
    client.select()                                       # SELECT closes the channel
    assert not client.status().admin_authenticated


def test_admin_wrong_mac_and_wrong_key(vcard):
    tx(vcard, SELECT_APDU)
    assert tx(vcard, "84EE000008" + "00" * 8)[1] == 0x6982          # no channel
    assert tx(vcard, "848201001000" + "00" * 15)[1] == 0x6985       # EXTERNAL AUTHENTICATE first
    # wrong key: the host cryptogram is wrong -> 6300
    channel = _init_update(vcard, bytes(16))
    assert _ext_auth(vcard, channel) == 0x6300
    # right key but a wrong C-MAC on EXTERNAL AUTHENTICATE -> 6988
    channel = _init_update(vcard, TEST_ADMIN_KEY)
    data = channel.host_cryptogram + bytes(8)
    assert tx(vcard, bytes.fromhex("8482010010") + data)[1] == 0x6988
    # open, then an admin command with a wrong MAC: 6988 and the channel closes
    channel = _init_update(vcard, TEST_ADMIN_KEY)
    assert _ext_auth(vcard, channel) == 0x9000
    assert tx(vcard, "84EE000008" + "11" * 8)[1] == 0x6988
    good = channel.wrap_command(0x84, 0xEE, 0, 0, b"")
    assert tx(vcard, bytes.fromhex("84EE000008") + good)[1] == 0x6982
    # the client refuses a card whose cryptogram does not match its key
    client = emulator_client(vcard, pin=False)
    with pytest.raises(AdminAuthError):
        client.open_admin(bytes(16))


def test_erase_backups_keeps_sequence(client, vcard):
    upload(client, make_backup(30, [b"q" * 100]))
    client.open_admin(TEST_ADMIN_KEY)
    client.erase_backups()
    status = client.status()
    assert (status.backups, status.chunks, status.highest_sequence, status.anchors) == (0, 0, 30, 1)
    with pytest.raises(BackupRejectedError):
        client.begin_backup(os.urandom(16), 30, 10)
    upload(client, make_backup(31, [b"q" * 100]))
    vcard.store.check(deep=True)


def test_not_personalised_card(tmp_path):
    from card.emulator import VirtualCard
    from card.nvm import PersistentMemory
    from card.store import BackupStore
    nvm = PersistentMemory.create(tmp_path / "blank.img", 128 * 1024)
    BackupStore.format(nvm)
    card = VirtualCard(nvm)
    card.power_on()
    tx(card, SELECT_APDU)
    status = K.GET_STATUS_RESPONSE.decode(tx(card, "8010000000")[0])
    assert status["life_cycle"] == C.LifeCycle.BLANK
    assert tx(card, VERIFY_APDU)[1] == 0x6985
    assert tx(card, "8050000008" + "00" * 8)[1] == 0x6985


def test_admin_key_locks_after_ten_failures(vcard, tmp_path):
    """GlobalPlatform-style: failed EXTERNAL AUTHENTICATEs are counted in NVM
    (a restart does not reset them); a match clears the count; the tenth
    failure locks the admin key for good (6983), the PIN side keeps working."""
    tx(vcard, SELECT_APDU)
    for _ in range(9):
        assert _ext_auth(vcard, _init_update(vcard, bytes(16))) == 0x6300
    assert vcard.store.admin_tries_left() == 1
    assert _ext_auth(vcard, _init_update(vcard, TEST_ADMIN_KEY)) == 0x9000     # a match clears the count
    assert vcard.store.admin_tries_left() == 10
    tx(vcard, SELECT_APDU)
    for _ in range(5):
        assert _ext_auth(vcard, _init_update(vcard, bytes(16))) == 0x6300
    vcard.power_off()                                                         # the count survives power
    vcard.power_on()
    tx(vcard, SELECT_APDU)
    for _ in range(5):
        assert _ext_auth(vcard, _init_update(vcard, bytes(16))) == 0x6300
    assert vcard.store.admin_tries_left() == 0
    assert tx(vcard, "8050000008" + "00" * 8 + "00")[1] == 0x6983              # INITIALIZE UPDATE refused
    client = emulator_client(vcard, pin=True)
    with pytest.raises(AdminAuthError, match="admin key is locked"):
        client.open_admin(TEST_ADMIN_KEY)
    assert client.status().pin_verified                                       # the PIN side is unaffected
    vcard.store.check()


def test_legacy_personalised_byte_is_read(vcard):
    """Images from before the life-cycle merge stored 0x0F for PERSONALISED."""
    from card.store_layout import CFG_LIFECYCLE, LEGACY_PERSONALISED
    store = vcard.store
    assert store.nvm.read(store.off_config + CFG_LIFECYCLE, 1) == bytes([C.LifeCycle.PERSONALISED])
    store.nvm.write_nonatomic(store.off_config + CFG_LIFECYCLE, bytes([LEGACY_PERSONALISED]))
    store._load()
    assert store.lifecycle == C.LifeCycle.PERSONALISED
    store.check()
